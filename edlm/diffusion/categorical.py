"""Exact categorical sampling (SPEC 1.6).

Gumbel-max with float32 noise over a 50k vocabulary truncates the tail: −log(−log u) with u in
float32 cannot exceed ≈ 16.6, so tokens whose log-probability is more than ~20 below the mode are
never drawn, and sample entropy (and gen-PPL) drop. We sample by inversion in float64 instead:
one float64 uniform per draw, a float64 cumulative sum, and a binary search. Every class with
p > 0 is reachable; probabilities are honoured to float64 rounding (~1e-16).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sample_categorical", "top_p_filter", "uniform64"]


def uniform64(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """Float64 uniforms in [0, 1) drawn from ``generator`` (53 random bits each)."""
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float64)


def sample_categorical(log_probs: Tensor, u: Tensor) -> Tensor:
    """Draw one class per row of ``log_probs`` by float64 inversion, using the uniforms ``u``.

    Args:
        log_probs: (..., C) log-probabilities (normalised or not; −∞ allowed), any float dtype.
        u: float64 uniforms in [0, 1): shape (...) for one draw per row, or (..., K) for K
            independent draws per row that share one cumulative sum. Passing ``u`` explicitly lets
            callers fix the random stream (so k = 1 importance sampling reproduces MDLM bit for bit).

    Returns:
        LongTensor of class ids with the shape of ``u``, each with p > 0.
    """
    rows = log_probs.shape[:-1]
    single = u.shape == rows
    if not single and u.shape[:-1] != rows:
        raise ValueError(f"u {tuple(u.shape)} must be {tuple(rows)} or {tuple(rows)} + (K,).")
    lp = log_probs.double()  # (..., C)
    lp = lp - lp.amax(dim=-1, keepdim=True)
    if torch.isnan(lp).any():
        raise FloatingPointError("NaN in the probabilities to sample from.")
    cdf = torch.cumsum(torch.exp(lp), dim=-1)  # (..., C), float64
    total = cdf[..., -1:]  # (..., 1)
    r = (u[..., None] if single else u).double() * total  # (..., K), in [0, total)
    r = torch.minimum(r, torch.nextafter(total, torch.zeros_like(total)))  # guard rounding at the top
    idx = torch.searchsorted(cdf, r.contiguous(), right=True)  # first class with cdf > r: p(class) > 0
    idx = idx.clamp_max(log_probs.shape[-1] - 1)
    return idx.squeeze(-1) if single else idx


def top_p_filter(log_probs: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of classes whose mass reaches ``top_p``; renormalise.

    Returns log-probabilities (float32) with −∞ outside the nucleus.
    """
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` must be in (0, 1], got {top_p}.")
    if top_p == 1.0:
        return log_probs
    sorted_lp, order = torch.sort(log_probs.float(), dim=-1, descending=True)  # (..., C)
    probs = torch.softmax(sorted_lp, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each class
    sorted_lp = sorted_lp.masked_fill(mass_before >= top_p, float("-inf"))  # the top class always stays
    filtered = torch.full_like(sorted_lp, float("-inf")).scatter(-1, order, sorted_lp)
    return torch.log_softmax(filtered, dim=-1)
