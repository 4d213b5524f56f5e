"""``MDLMModule``: trains a masked-diffusion denoiser with the continuous-time NELBO (SPEC 1.5)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edlm.config import OptimConfig
from edlm.diffusion.forward import q_sample
from edlm.diffusion.loss import NELBOOutput, antithetic_times, continuous_nelbo
from edlm.diffusion.schedules import NoiseSchedule
from edlm.diffusion.subs import log_likelihood_of
from edlm.models.dit import Denoiser
from edlm.training.base import LanguageModelModule

__all__ = ["MDLMModule"]


class MDLMModule(LanguageModelModule):
    """Composes a DiT backbone and a schedule into a ``Denoiser`` and trains it (SPEC 1.5).

    Logs ``train/loss`` (the NELBO per token of the batch) and, over the whole validation split,
    ``val/nll`` (the bound on the NLL per token, nats) and ``val/ppl_bound`` = exp of it. Validation
    draws its times and masks from a generator seeded with ``val_seed``, so the number is reproducible.

    Args:
        backbone: e.g. ``edlm.models.DiT``; wrapped as ``Denoiser(backbone, schedule, mask_id)``, which
            feeds it σ(t) (or zeros, if it is not time-conditioned). ``self.model`` is that Denoiser;
            it is what is averaged and saved.
        schedule: the noise schedule α_t.
        mask_id: the ``[MASK]`` id.
        optim, ema_decay, ema_warmup, val_seed: see ``LanguageModelModule``.
        t_min: antithetic times are mapped to [t_min, 1] (SPEC 1.5).
        antithetic: stratify t across the batch (SPEC 1.5); else i.i.d. uniform.
    """

    kind = "mdlm"
    ppl_name = "ppl_bound"

    def __init__(
        self,
        backbone: nn.Module,
        schedule: NoiseSchedule,
        mask_id: int,
        optim: OptimConfig | None = None,
        ema_decay: float = 0.9999,
        ema_warmup: bool = True,
        val_seed: int = 0,
        t_min: float = 1e-3,
        antithetic: bool = True,
    ):
        super().__init__(Denoiser(backbone, schedule, mask_id), optim, ema_decay, ema_warmup, val_seed)
        self.schedule = schedule
        self.mask_id = mask_id
        self.t_min = t_min
        self.antithetic = antithetic

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Raw logits (B, L, V+1) of the denoiser at noisy tokens ``x_t`` (B, L) and times ``t`` (B,)."""
        return self.model(x_t, t)

    def nelbo(self, x_0: Tensor, attention_mask: Tensor | None, generator: torch.Generator | None) -> NELBOOutput:
        """One-sample NELBO of a batch (SPEC 1.5): draw t and x_t ~ q(x_t | x_0), score x_0 at the masks."""
        batch_size = x_0.shape[0]
        if self.antithetic:
            t = antithetic_times(batch_size, self.t_min, generator=generator, device=x_0.device)  # (B,)
        else:
            u = torch.rand(batch_size, generator=generator, device=x_0.device)
            t = self.t_min + (1.0 - self.t_min) * u
        x_t = q_sample(x_0, self.schedule.alpha(t), self.mask_id, attention_mask, generator=generator)
        log_lik = log_likelihood_of(self(x_t, t), x_0, self.mask_id)  # (B, L) log x_θ(x_0ⁱ | x_t)
        return continuous_nelbo(log_lik, x_0, x_t, t, self.schedule, self.mask_id, attention_mask)

    # ------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.nelbo(batch["input_ids"], batch.get("attention_mask"), generator=None)
        loss = out.loss
        self.log("train/loss", loss, prog_bar=True)
        return loss

    # ------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self.nelbo(batch["input_ids"], batch.get("attention_mask"), generator=self._val_generator)
        self._accumulate_val(out.nll_sum, out.num_tokens)
