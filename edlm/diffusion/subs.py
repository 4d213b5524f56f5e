"""SUBS parameterisation of the denoiser (SPEC 1.3)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["subs_log_probs", "log_likelihood_of"]


def _check(logits: Tensor, x_t: Tensor, mask_id: int) -> None:
    if logits.shape[:-1] != x_t.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(x_t.shape)}.")
    if not 0 <= mask_id < logits.shape[-1]:
        raise ValueError(f"mask_id {mask_id} is out of range for {logits.shape[-1]} classes.")


def subs_log_probs(logits: Tensor, x_t: Tensor, mask_id: int) -> Tensor:
    """log x_θ(· | x_t) under SUBS (SPEC 1.3).

    (a) zero-masking: the ``[MASK]`` logit is −∞; (b) carry-over: where x_tⁱ ≠ m the distribution
    is one-hot(x_tⁱ). Never writes into ``logits``.

    Args:
        logits: raw network output, (B, L, V+1), any float dtype.
        x_t: noisy tokens, LongTensor (B, L).
        mask_id: the ``[MASK]`` id.

    Returns:
        float32 log-probabilities, (B, L, V+1); −∞ off the support.
    """
    _check(logits, x_t, mask_id)
    work = logits.float()  # a new tensor when the input is bf16/fp16; the same one when fp32
    if work is logits or work.requires_grad:
        mask_col = torch.tensor([mask_id], device=logits.device)
        work = work.index_fill(-1, mask_col, float("-inf"))  # SPEC 1.3(a), out of place
    else:
        work[..., mask_id] = float("-inf")  # SPEC 1.3(a), in our own copy: no extra full pass
    log_p = torch.log_softmax(work, dim=-1)  # (B, L, V+1)
    unmasked = x_t != mask_id  # (B, L)
    if log_p.requires_grad:  # out-of-place, for autograd
        carry = torch.full_like(log_p, float("-inf")).scatter_(-1, x_t[..., None], 0.0)  # log one-hot
        return torch.where(unmasked[..., None], carry, log_p)  # SPEC 1.3(b)
    b, i = unmasked.nonzero(as_tuple=True)  # only the unmasked rows are rewritten, in place
    log_p[b, i] = float("-inf")
    log_p[b, i, x_t[b, i]] = 0.0  # SPEC 1.3(b): one-hot(x_tⁱ) in log space
    return log_p


def log_likelihood_of(logits: Tensor, x_0: Tensor, mask_id: int) -> Tensor:
    """log x_θⁱ(x_0ⁱ | x_t) at every position, from raw logits, without building (B, L, V+1) log-probs.

    Equal to ``subs_log_probs(logits, x_t, mask_id).gather(-1, x_0)`` at masked positions (the only
    ones the NELBO uses). Returns float32 (B, L).
    """
    _check(logits, x_0, mask_id)
    logits = logits.float()
    mask_col = torch.tensor([mask_id], device=logits.device)
    lse = torch.logsumexp(logits.index_fill(-1, mask_col, float("-inf")), dim=-1)  # (B, L)
    return logits.gather(-1, x_0[..., None]).squeeze(-1) - lse
