"""EDLM-AR: a frozen autoregressive LM as the residual energy (SPEC 2.3)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AREnergy", "check_same_tokenizer", "same_tokenizer"]


def _vocab_without_mask(tok_a, tok_b) -> tuple[dict, dict]:
    va, vb = dict(tok_a.get_vocab()), dict(tok_b.get_vocab())
    for tok in (tok_a, tok_b):
        if getattr(tok, "mask_token", None) is not None:
            va.pop(tok.mask_token, None)
            vb.pop(tok.mask_token, None)
    return va, vb


def same_tokenizer(tok_a, tok_b) -> bool:
    """Do two tokenizers map the same strings to the same ids (``[MASK]`` aside)?"""
    va, vb = _vocab_without_mask(tok_a, tok_b)
    return va == vb


def check_same_tokenizer(tok_a, tok_b, names: tuple[str, str] = ("denoiser", "energy")) -> None:
    """Fail clearly unless two tokenizers map the same strings to the same ids (``[MASK]`` aside)."""
    va, vb = _vocab_without_mask(tok_a, tok_b)
    if va != vb:
        only_a = len(set(va.items()) - set(vb.items()))
        raise ValueError(f"tokenizer mismatch between the {names[0]} and the {names[1]}: {only_a} of "
                         f"{len(va)} entries differ; both must use the same tokenizer.")


class AREnergy:
    """E(x_0, x_t) = −log p_AR(x_0) + Σ_i log x_θⁱ(x_0ⁱ | x_t) (SPEC 2.3).

    With this energy, Π_i x_θⁱ · exp(−E) ∝ p_AR restricted to sequences consistent with x_t.

    Args:
        ar_model: anything with ``token_log_probs(x (N, L)) -> (N, L)`` giving log p(xⁱ | x^{<i})
            (the toolkit's ``ARTransformer``, ``HFCausalLM`` for any Hugging Face causal LM, or the
            toy's exact model).
        mask_id: the ``[MASK]`` id.
        carry_over: the paper's default. Positions already unmasked in x_t are identical in all
            proposals, so their terms are dropped from both sums. This is exact for the x_θ sum and
            an approximation for the AR sum (an AR term at an unmasked position still depends on
            earlier masked tokens); use ``carry_over=False`` for the exact energy.
        vocab_size: ids the AR model knows (for the tokenizer check in ``generate``).
    """

    # generate() passes a lazy SubsLogProbs view: only .gather(-1, x_0) is read, so no (N, L, V+1) copy
    uses_log_p_x0 = "gather"

    def __init__(self, ar_model, mask_id: int, carry_over: bool = True, vocab_size: int | None = None):
        if not hasattr(ar_model, "token_log_probs"):
            raise TypeError("the AR energy needs a model with `token_log_probs(x) -> (N, L)`; wrap a "
                            "Hugging Face model with edlm.models.hf.HFCausalLM.")
        self.ar_model = ar_model
        self.mask_id = mask_id
        self.carry_over = carry_over
        self.vocab_size = vocab_size if vocab_size is not None else getattr(ar_model, "vocab_size", None)

    @torch.no_grad()
    def token_log_likelihoods(self, x_0: Tensor) -> Tensor:
        """log p_AR(x_0ⁱ | x_0^{<i}) at every position, (N, L) float64: the per-token split of the energy's AR term
        (what the remasking sampler reads, ``edlm.samplers.remask``)."""
        return self.ar_model.token_log_probs(x_0).double()

    @torch.no_grad()
    def __call__(self, x_0: Tensor, x_t: Tensor, t: Tensor, log_p_x0: Tensor) -> Tensor:
        """Energies (N,) in float64; lower = more likely."""
        # the check waits for the device, which a CUDA graph capture cannot (generate(graph=True): its proposals
        # carry no [MASK] by construction)
        capturing = torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
        if not capturing and (x_0 == self.mask_id).any():
            raise ValueError("the AR energy got a proposal x_0 that still contains [MASK].")
        log_ar = self.ar_model.token_log_probs(x_0).double()  # (N, L) log p(xⁱ | x^{<i})
        log_x = log_p_x0.gather(-1, x_0[..., None]).squeeze(-1).double()  # (N, L) log x_θⁱ(x_0ⁱ)
        masked = x_t == self.mask_id  # (N, L)
        zero = torch.zeros_like(log_ar)
        ar_sum = torch.where(masked, log_ar, zero).sum(-1) if self.carry_over else log_ar.sum(-1)
        x_sum = torch.where(masked, log_x, zero).sum(-1)  # unmasked terms are log 1 = 0 (SUBS)
        return -ar_sum + x_sum  # SPEC 2.3
