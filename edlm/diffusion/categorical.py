"""Exact categorical sampling (SPEC 1.6).

Gumbel-max with float32 noise over a 50k vocabulary truncates the tail: −log(−log u) with u in
float32 cannot exceed ≈ 16.6, so tokens whose log-probability is more than ~20 below the mode are
never drawn, and sample entropy (and gen-PPL) drop. We sample by inversion in float64 instead:
one float64 uniform per draw, a float64 cumulative sum, and a binary search. Every class with
p > 0 is reachable; probabilities are honoured to float64 rounding (~1e-16).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["sample_categorical", "draw_rows", "Draws", "top_p_filter", "uniform64", "compile_draws"]


class Draws(NamedTuple):
    """What ``draw_rows`` returns."""

    ids: Tensor  # (n, K) LongTensor: the drawn classes
    lse: Tensor  # (n,) float64: each row's log-normaliser logsumexp (NaN for a row with NaN, +inf or no mass)

    def checked(self) -> Draws:
        """Itself, after refusing rows that held NaN or +inf (``FloatingPointError``; one host sync)."""
        if torch.isnan(self.lse).any():
            raise FloatingPointError("NaN in the probabilities to sample from.")
        return self


def uniform64(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """Float64 uniforms in [0, 1) drawn from ``generator`` (53 random bits each)."""
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float64)


# float64 work per chunk of rows: the draw makes a few (rows, C) float64 temporaries, so without chunks
# an IS step over B·L = 32k masked positions of a 50k vocabulary would hold 4 × 12 GiB at once
_CHUNK_BYTES = 1 << 30
_compiled_draw = None  # torch.compile(_draw_fused), made by `compile_draws`


def compile_draws(enable: bool = True) -> None:
    """Run the float64 draw through ``torch.compile``: the row gather, the float64 cast, the [MASK]
    column and exp are fused into the cumulative sum's loads instead of each writing (n, C) to memory.
    Same arithmetic and the same draws (tests/diffusion/test_categorical.py); on an H100 an IS step's
    draw at 32 768 positions × 50 258 ids goes from ~50 ms to ~15 ms (benchmarks/results/speed_notes.md)."""
    global _compiled_draw
    _compiled_draw = torch.compile(_draw_fused, dynamic=True) if enable else None


def _invert(lp: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Inversion for float64 log-probabilities (n, C), normalised or not, and uniforms (n, K).

    Returns the class ids (n, K) and the rows' float64 log-normalisers logsumexp (n,), NaN when a row
    held NaN or +inf or had no finite entry (the caller checks)."""
    top = lp.amax(dim=-1, keepdim=True)  # (n, 1)
    cdf = torch.cumsum(torch.exp(lp - top), dim=-1)  # (n, C), float64; NaN for +inf or an all −∞ row
    total = cdf[:, -1:]  # (n, 1)
    r = u * total  # (n, K), in [0, total)
    r = torch.minimum(r, torch.nextafter(total, torch.zeros_like(total)))  # guard rounding at the top
    idx = torch.searchsorted(cdf, r.contiguous(), right=True)  # first class with cdf > r: p(class) > 0
    return idx.clamp_max(lp.shape[-1] - 1), (top + torch.log(total)).squeeze(-1)


def _draw_rows(rows: Tensor, u: Tensor, exclude: int = -1) -> tuple[Tensor, Tensor]:
    """Eager draw for rows (n, C): ``exclude`` ≥ 0 gives that class probability 0 (SUBS's [MASK]
    column, applied here so that raw logits can be passed), written in place into our float64 copy."""
    lp = rows.to(torch.float64, copy=exclude >= 0)  # (n, C); a copy of our own when we write into it
    if exclude >= 0:
        lp[:, exclude] = float("-inf")
    return _invert(lp, u)


def _draw_fused(source: Tensor, index: Tensor | None, u: Tensor, exclude: int) -> tuple[Tensor, Tensor]:
    """``_draw_rows`` of ``source[index]`` written for torch.compile: gather, cast and [MASK] column as
    one expression that the compiler fuses into the loads of the cumulative sum."""
    rows = source if index is None else source[index]
    lp = rows.double()
    if exclude >= 0:
        lp = torch.where(torch.arange(lp.shape[-1], device=lp.device) == exclude, float("-inf"), lp)
    return _invert(lp, u)


def draw_rows(source: Tensor, u: Tensor, index: Tensor | None = None, exclude: int = -1) -> Draws:
    """Exact float64 draws from rows of ``source`` (N, C) (log-probabilities or raw logits, any float
    dtype): the rows ``index`` (n,) (all rows if None), with uniforms ``u`` (n, K).

    Works through the rows in chunks of about 1 GiB of float64 work, so peak memory does not grow with n,
    and through the compiled kernel after ``compile_draws()``. Returns ``Draws``: the ids (n, K) and the
    rows' log-normalisers (n,) in float64 (NaN for a row with NaN, +inf or no finite entry).
    """
    n, C = (source.shape[0] if index is None else index.shape[0]), source.shape[-1]
    step = max(1, _CHUNK_BYTES // (8 * C))
    parts = []
    for i in range(0, n, step):
        part = None if index is None else index[i: i + step]
        if _compiled_draw is not None:
            src = source[i: i + step] if index is None else source
            parts.append(_compiled_draw(src, part, u[i: i + step].double(), exclude))
        else:
            rows = source[i: i + step] if index is None else source.index_select(0, part)
            parts.append(_draw_rows(rows, u[i: i + step].double(), exclude))
    if len(parts) == 1:
        return Draws(*parts[0])
    if not parts:
        return Draws(torch.empty(u.shape, dtype=torch.long, device=source.device),
                     torch.empty(0, dtype=torch.float64, device=source.device))
    return Draws(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


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
    flat = log_probs.reshape(-1, log_probs.shape[-1])
    return draw_rows(flat, u.reshape(flat.shape[0], -1)).checked().ids.reshape(u.shape)


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
