"""EDLM-AR across tokenizers: a pretrained causal LM scores the decoded text of each proposal (SPEC 2.3).

    energy = TextLMEnergy(lm, lm_tokenizer, bundle.tokenizer, bundle.mask_id)   # any transformers causal LM
    energy = load_energy("hf:smollm2", bundle)                                  # the same, from a spec

A proposal x_0 of diffusion tokens is decoded to text with the diffusion model's tokenizer (special tokens
dropped, as ``edlm sample`` writes its texts), the text is tokenised with the LM's own tokenizer behind the LM's
document separator (``text_bos_id``), and

    E(x_0, x_t) = −log p_LM(decode(x_0)) + Σ_{i: x_tⁱ = m} log x_θⁱ(x_0ⁱ | x_t)

with log p_LM(s) = Σ_j log p_LM(s_j | BOS, s_{<j}) summed over the LM tokens s_1 … s_n of the text (with no
BOS the first LM token is context, not scored). The self-normalised weights of SPEC 2.5 then target, among
the proposals consistent with x_t, the distribution ∝ p_LM(decode(x_0)): docs/hf_energy.md derives it.

The LM term belongs to the whole text: LM tokens do not line up with diffusion positions, so no term can be
dropped per position and this energy is always the exact one (carry-over and exact coincide; the x_θ sum is
zero at unmasked positions either way). A decoded proposal longer than the LM's context is refused.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edlm.errors import EdlmError
from edlm.models.hf_sources import text_bos_id

__all__ = ["TextLMEnergy", "AUTO"]

AUTO = "auto"  # bos_id: the LM's document separator (text_bos_id), where it has one
# logits elements per LM forward, which bounds the (b, n, V) block: 128 MiB of float32 on a CPU, 2 GiB on a GPU
# (SmolLM2's 49k vocabulary at ~140 tokens: 4 texts per forward on a CPU, 78 on a GPU)
_LOGITS_BUDGET = {"cpu": 2**25, "cuda": 2**29}


def _context_length(model) -> int | None:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class TextLMEnergy:
    """A causal LM with its own tokenizer as the residual energy of a diffusion model with another tokenizer.

    Args:
        lm: a ``transformers`` causal LM (``lm(input_ids=..., attention_mask=...).logits`` of shape (B, n, V)),
            or an ``HFCausalLM`` (its ``.model`` is used). It runs on its own device and in its own dtype.
        lm_tokenizer: the LM's tokenizer (``lm_tokenizer(texts, add_special_tokens=False)["input_ids"]``).
        tokenizer: the diffusion model's tokenizer; needs ``batch_decode`` (or ``decode``).
        mask_id: the diffusion model's ``[MASK]`` id.
        bos_id: the LM id put before every text, conditioning the first token; "auto" picks the LM's document
            separator (``text_bos_id``: ``<|endoftext|>``, else its BOS, else its EOS); None scores without one.
        context_length: the LM's longest input in its tokens; None reads it from the LM's config.
        name: how messages name the LM.

    Raises:
        EdlmError: a tokenizer that cannot decode, or an LM tokenizer that cannot encode.
    """

    # generate() passes a lazy SubsLogProbs view: only .gather(-1, x_0) is read
    uses_log_p_x0 = "gather"
    carry_over = False  # the LM term is always the whole text: the energy is the exact one

    def __init__(self, lm, lm_tokenizer, tokenizer, mask_id: int, *, bos_id: int | str | None = AUTO,
                 context_length: int | None = None, name: str = "the energy LM"):
        model = getattr(lm, "model", lm) if hasattr(lm, "token_log_probs") else lm  # HFCausalLM -> its model
        if not callable(getattr(tokenizer, "batch_decode", None)) and not callable(getattr(tokenizer, "decode", None)):
            raise EdlmError(f"the diffusion tokenizer ({type(tokenizer).__name__}) has no decode(); {name} scores "
                            "proposals as text, so the denoiser's tokenizer must turn ids back into text.")
        if not callable(lm_tokenizer):
            raise EdlmError(f"the tokenizer of {name} ({type(lm_tokenizer).__name__}) cannot encode text; pass the "
                            "LM's own transformers tokenizer.")
        self.lm = model.eval().requires_grad_(False)
        self.lm_tokenizer = lm_tokenizer
        self.tokenizer = tokenizer
        self.mask_id = mask_id
        self.bos_id = text_bos_id(lm_tokenizer) if bos_id == AUTO else bos_id
        self.context_length = context_length or _context_length(model)
        self.name = name

    # ------------------------------------------------------------------------- text
    def decode(self, x_0: Tensor) -> list[str]:
        """Diffusion tokens (N, L) -> N texts, special tokens dropped (as ``edlm sample`` decodes)."""
        rows = x_0.tolist()
        if callable(getattr(self.tokenizer, "batch_decode", None)):
            return list(self.tokenizer.batch_decode(rows, skip_special_tokens=True))
        return [self.tokenizer.decode(r, skip_special_tokens=True) for r in rows]

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Texts -> LM ids, the BOS first where there is one; the text after it carries no special tokens."""
        nonempty = [t for t in texts if t]
        found = iter(self.lm_tokenizer(nonempty, add_special_tokens=False)["input_ids"] if nonempty else [])
        head = [] if self.bos_id is None else [int(self.bos_id)]
        return [head + (list(next(found)) if t else []) for t in texts]

    # ------------------------------------------------------------------------- scoring
    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    @torch.no_grad()
    def log_prob_ids(self, ids: list[list[int]]) -> Tensor:
        """Σ_{j≥1} log p_LM(idsⱼ | ids_{<j}) per sequence (N,) float64 on the CPU; the first id is context.

        Sequences are sorted by length, right-padded and batched with an attention mask, so padding never
        reaches a real position: each value equals the sequence scored on its own (to float rounding).
        """
        longest = max((len(s) for s in ids), default=0)
        if self.context_length is not None and longest > self.context_length:
            raise ValueError(f"a decoded proposal is {longest} tokens long for {self.name}, whose context is "
                             f"{self.context_length}; the energy refuses to truncate it: sample shorter sequences "
                             "(--length) or use an LM with a longer context.")
        out = torch.zeros(len(ids), dtype=torch.float64)
        order = sorted((i for i, s in enumerate(ids) if len(s) > 1), key=lambda i: -len(ids[i]))
        vocab = self._vocab_size()
        device = self.device
        start = 0
        while start < len(order):
            width = len(ids[order[start]])  # the longest of this batch (sorted)
            rows = max(1, _LOGITS_BUDGET.get(device.type, 2**25) // (width * vocab))
            batch = order[start:start + rows]
            start += len(batch)
            x = torch.zeros(len(batch), width, dtype=torch.long)  # (b, n) right-padded; pad ids are never read
            attn = torch.zeros(len(batch), width, dtype=torch.long)  # (b, n) 1 = real token
            for r, i in enumerate(batch):
                x[r, :len(ids[i])] = torch.tensor(ids[i])
                attn[r, :len(ids[i])] = 1
            x, attn = x.to(device), attn.to(device)
            logits = self.lm(input_ids=x, attention_mask=attn, use_cache=False).logits[:, :-1]  # (b, n-1, V)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            lp = logits.log_softmax(-1).gather(-1, x[:, 1:, None]).squeeze(-1)  # (b, n-1) log p(xⱼ | x_{<j})
            lp = torch.where(attn[:, 1:].bool(), lp, torch.zeros_like(lp))
            out[torch.tensor(batch)] = lp.double().sum(-1).cpu()
        return out

    def log_prob_texts(self, texts: list[str]) -> Tensor:
        """log p_LM(text) per text (N,) float64: the LM's tokens of each text, the first conditioned on the BOS."""
        return self.log_prob_ids(self.encode(texts))

    def _vocab_size(self) -> int:
        head = self.lm.get_output_embeddings() if hasattr(self.lm, "get_output_embeddings") else None
        if head is not None and getattr(head, "weight", None) is not None:
            return int(head.weight.shape[0])
        return int(self.lm.config.vocab_size)

    @torch.no_grad()
    def __call__(self, x_0: Tensor, x_t: Tensor, t: Tensor, log_p_x0) -> Tensor:
        """Energies (N,) float64 on x_0's device; lower = more likely (SPEC 2.3 with the LM of the decoded text)."""
        masked = x_t == self.mask_id  # (N, L)
        if (x_0 == self.mask_id).any():
            raise ValueError("the text energy got a proposal x_0 that still contains [MASK].")
        log_lm = self.log_prob_texts(self.decode(x_0)).to(x_0.device)  # (N,)
        log_x = log_p_x0.gather(-1, x_0[..., None]).squeeze(-1).double()  # (N, L) log x_θⁱ(x_0ⁱ)
        x_sum = torch.where(masked, log_x, torch.zeros_like(log_x)).sum(-1)  # unmasked terms are log 1 = 0 (SUBS)
        return -log_lm + x_sum  # SPEC 2.3, p_AR := p_LM ∘ decode
