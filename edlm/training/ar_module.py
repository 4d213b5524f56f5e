"""``ARModule``: trains a causal transformer with the next-token loss."""

from __future__ import annotations

import torch
from torch import Tensor

from edlm.models.ar import next_token_log_probs
from edlm.training.base import LanguageModelModule

__all__ = ["ARModule"]


class ARModule(LanguageModelModule):
    """Trains a causal ``model(x) -> logits (B, L, V+1)``, where position i predicts token i+1.

    Logs ``train/loss`` (mean next-token NLL of the batch) and, over the whole validation split,
    ``val/nll`` and ``val/ppl`` (token-weighted). The first token of each row has no context and
    is not scored; padding is never scored.

    Takes the arguments of ``LanguageModelModule``; ``model`` is e.g. ``edlm.models.ARTransformer``.
    """

    kind = "ar"
    ppl_name = "ppl"

    def forward(self, x: Tensor) -> Tensor:
        """Next-token logits (B, L, V+1) of tokens ``x`` (B, L)."""
        return self.model(x)

    def nll(self, x: Tensor, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """(Σ next-token NLL per sequence (B,), number of scored tokens per sequence (B,))."""
        log_p = next_token_log_probs(self(x), x)  # (B, L), column 0 = 0 (the first token is given)
        scored = torch.ones_like(log_p) if attention_mask is None else attention_mask.to(log_p.dtype, copy=True)
        scored[:, 0] = 0.0
        return -(log_p * scored).sum(-1), scored.sum(-1)

    # ------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        nll_sum, num_tokens = self.nll(batch["input_ids"], batch.get("attention_mask"))
        loss = nll_sum.sum() / num_tokens.sum().clamp_min(1)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    # ------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        nll_sum, num_tokens = self.nll(batch["input_ids"], batch.get("attention_mask"))
        self._accumulate_val(nll_sum, num_tokens)
