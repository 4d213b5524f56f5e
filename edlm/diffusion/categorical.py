"""Exact categorical sampling (SPEC 1.6).

Gumbel-max with float32 noise over a 50k vocabulary truncates the tail: −log(−log u) with u in
float32 cannot exceed ≈ 16.6, so tokens whose log-probability is more than ~20 below the mode are
never drawn, and sample entropy (and gen-PPL) drop. We sample by inversion in float64 instead:
one float64 uniform per draw, a float64 cumulative sum, and a binary search. Every class with
p > 0 is reachable; probabilities are honoured to float64 rounding (~1e-16).

Several draws per row of a large vocabulary (an importance-sampling step: k proposals) take a faster
route with the same exactness (``_draw_fast``): the masses of each block of ``_BLOCK`` ids are bounded
from above with float32 exps, a block is drawn from those bounds, and the draw is accepted with
probability (the block's exact float64 mass) / (its bound), else redrawn exactly in float64. Accepted
and redrawn draws both follow x_θ exactly; only the ids for given uniforms differ from the one-level
inversion's.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from edlm.accel.block_bounds import BLOCK as _BLOCK
from edlm.accel.block_bounds import block_bounds
from edlm.accel.policy import fast_draw

__all__ = ["REDRAW_SLOTS", "sample_categorical", "draw_rows", "Draws", "top_p_filter", "uniform64", "compile_draws"]


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


# rows redrawn at every call of ``draw_rows(..., overflow=flag)``, whether a draw was rejected or not
REDRAW_SLOTS = 16

# float64 work per chunk of rows: the draw makes (rows, C) float64 temporaries, so without chunks an IS
# step over B·L = 32k masked positions of a 50k vocabulary would hold several 12 GiB tensors at once
_CHUNK_BYTES = 1 << 30
_compiled_draw = None  # torch.compile(_draw_fused), made by `compile_draws`
_compiled_fast = None  # torch.compile(_draw_fast), made by `compile_draws`
_cumsum_op = None  # edlm::cumsum_last, registered by `compile_draws`


def _cumsum(x: Tensor, opaque: bool = False) -> Tensor:
    """Cumulative sum over the last dim; ``opaque``: through ``edlm::cumsum_last``, which inductor runs as the
    ATen kernel instead of generating a scan (see `_few_rows`)."""
    return _cumsum_op(x) if opaque else torch.cumsum(x, dim=-1)


def _few_rows(device: torch.device) -> int:
    """Chunks with fewer rows than this run the compiled draw with opaque scans. Inductor may split a scan with
    fewer than 2 · 32 · (SM count) rows across thread blocks (``Reduction.num_splits``), and in torch 2.11 its
    split-scan code generation fails for our float64 scans with dynamic shapes (``InductorError: TypeError: list
    indices must be integers or slices, not NoneType``: an H200, B = 1, k = 8, a 50k vocabulary). Such chunks are
    small, so the ATen scan costs little there. 0 on CPU."""
    if device.type != "cuda":
        return 0
    return _gpu_few_rows(device.index if device.index is not None else torch.cuda.current_device())


@cache
def _gpu_few_rows(index: int) -> int:
    return 64 * torch.cuda.get_device_properties(index).multi_processor_count


def compile_draws(enable: bool = True) -> None:
    """Run the float64 draw through ``torch.compile``: the row gather, the float64 cast, the [MASK]
    column and exp are fused into the loads of the block sums (or of the cumulative sum), so no (n, C)
    float64 tensor is written. Same arithmetic and the same draws as the eager path
    (tests/diffusion/test_categorical.py)."""
    global _compiled_draw, _compiled_fast, _cumsum_op
    if enable:
        from edlm.accel.compiling import compile_cache_dir

        compile_cache_dir()
    if enable and _cumsum_op is None:
        _cumsum_op = torch.library.custom_op("edlm::cumsum_last", mutates_args=())(_cumsum_last)
        _cumsum_op.register_fake(torch.empty_like)
    _compiled_draw = torch.compile(_draw_fused, dynamic=True) if enable else None
    _compiled_fast = torch.compile(_draw_fast, dynamic=True) if enable else None


def _cumsum_last(x: Tensor) -> Tensor:
    return torch.cumsum(x, dim=-1)


def _blocked(C: int, K: int) -> bool:
    """Use the two-level inversion when gathering K blocks per row reads less than a full CDF of C ids."""
    return K * _BLOCK < C


def _fast(C: int, K: int, device: torch.device) -> bool:
    """Use `_draw_fast` (float32 block bounds, exact by rejection): several draws per row (K ≥ 2) of a vocabulary
    with more than K blocks, on a device where ``fast_draw`` holds (CUDA). One draw per row (a plain step; k = 1)
    keeps the float64 inversion, so k = 1 importance sampling still gives MDLM's tokens for the same uniforms."""
    return K >= 2 and _blocked(C, K) and fast_draw(device)


def _invert(lp: Tensor, u: Tensor, opaque: bool = False) -> tuple[Tensor, Tensor]:
    """One-level inversion for float64 log-probabilities (n, C), normalised or not, and uniforms (n, K):
    a float64 cumulative sum over the C classes and a binary search.

    Returns the class ids (n, K) and the rows' float64 log-normalisers logsumexp (n,), NaN when a row
    held NaN or +inf or had no finite entry (the caller checks)."""
    top = lp.amax(dim=-1, keepdim=True)  # (n, 1)
    cdf = _cumsum(torch.exp(lp - top), opaque)  # (n, C), float64; NaN for +inf or an all −∞ row
    total = cdf[:, -1:]  # (n, 1)
    r = u * total  # (n, K), in [0, total)
    r = torch.minimum(r, torch.nextafter(total, torch.zeros_like(total)))  # guard rounding at the top
    idx = torch.searchsorted(cdf, r.contiguous(), right=True)  # first class with cdf > r: p(class) > 0
    return idx.clamp_max(lp.shape[-1] - 1), (top + torch.log(total)).squeeze(-1)


def _pick_blocks(sums: Tensor, u: Tensor, opaque: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Stage 1 of the two-level inversion: float64 block masses ``sums`` (n, nb), uniforms ``u`` (n, K) ->
    the block of each draw (n, K), the draw's offset into that block's mass (n, K), the row totals (n, 1).

    r = u · total is located among the cumulative block masses: the first block whose cumulative mass
    exceeds r (which has mass > 0), and r minus the mass of the blocks before it."""
    cum = _cumsum(sums, opaque)  # (n, nb)
    total = cum[:, -1:]  # (n, 1); NaN for a row with NaN / +inf / no mass
    r = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))  # (n, K), in [0, total)
    blk = torch.searchsorted(cum, r.contiguous(), right=True).clamp_max(sums.shape[-1] - 1)  # (n, K)
    below = torch.where(blk > 0, cum.gather(-1, (blk - 1).clamp_min(0)), 0.0)  # mass before the block
    return blk, (r - below).clamp_min(0.0), total


def _pick_in_block(vals: Tensor, blk: Tensor, r: Tensor, C: int, opaque: bool = False) -> tuple[Tensor, Tensor]:
    """Stage 2: the unnormalised float64 masses ``vals`` (n, K, _BLOCK) of each draw's block -> class ids (n, K),
    and each block's mass as its cumulative sum ends (n, K) (`_draw_fast` accepts a draw against it).

    r is clamped just below the block's own sum, so rounding between the block sums of stage 1 and this
    cumulative sum can only move a draw to a class of the same block that has mass > 0."""
    cdf = _cumsum(vals, opaque)  # (n, K, _BLOCK)
    last = cdf[..., -1]
    r = torch.minimum(r, torch.nextafter(last, torch.zeros_like(last)))
    j = torch.searchsorted(cdf, r[..., None].contiguous(), right=True).squeeze(-1)  # (n, K)
    return (blk * _BLOCK + j.clamp_max(_BLOCK - 1)).clamp_max(C - 1), last  # C: a row of NaN still gives a valid id


def _block_cols(blk: Tensor, C: int) -> tuple[Tensor, Tensor]:
    """The ids (n, K, _BLOCK) of each draw's block ``blk`` (n, K), and the same clamped into the row (to gather)."""
    cols = blk[..., None] * _BLOCK + torch.arange(_BLOCK, device=blk.device)
    return cols, cols.clamp_max(C - 1)


def _block_masses(z: Tensor, cols: Tensor, cc: Tensor, C: int, top: Tensor, exclude: int) -> Tensor:
    """Exact float64 masses exp(z − top) of the gathered block values ``z`` (n, K, _BLOCK) at ``cc``: 0 at the id
    ``exclude`` and past the last class."""
    z = z.double()
    if exclude >= 0:
        z = torch.where(cc == exclude, float("-inf"), z)
    return torch.where(cols < C, torch.exp(z - top.double()[..., None]), 0.0)


def _invert_blocked(lp: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Two-level inversion, the same draw as ``_invert`` up to float64 rounding: the masses exp(lp − max)
    are summed in blocks of ``_BLOCK`` ids, a draw picks its block from the (n, C / _BLOCK) cumulative
    block masses and its class from a cumulative sum over that block only. No (n, C) cumulative sum is
    written: for K ≪ C / _BLOCK draws per row this reads each row twice instead of scanning it in float64.

    ``lp`` (n, C) float64 is overwritten (it is the caller's own copy)."""
    n, C = lp.shape
    K = u.shape[-1]
    top = lp.amax(dim=-1, keepdim=True)  # (n, 1)
    e = lp.sub_(top).exp_()  # (n, C) masses in place; NaN for +inf or an all −∞ row
    full = C // _BLOCK * _BLOCK
    sums = e[:, :full].reshape(n, -1, _BLOCK).sum(-1)  # (n, C // _BLOCK)
    if full < C:
        sums = torch.cat((sums, e[:, full:].sum(-1, keepdim=True)), dim=-1)  # the last, partial block
    blk, r, total = _pick_blocks(sums, u)
    cols, cc = _block_cols(blk, C)  # (n, K, _BLOCK)
    vals = e.gather(1, cc.reshape(n, -1)).reshape(n, K, _BLOCK).masked_fill(cols >= C, 0.0)  # 0 past the last class
    return _pick_in_block(vals, blk, r, C)[0], (top + torch.log(total)).squeeze(-1)


def _draw_rows(rows: Tensor, u: Tensor, exclude: int = -1) -> tuple[Tensor, Tensor]:
    """Eager draw for rows (n, C): ``exclude`` ≥ 0 gives that class probability 0 (SUBS's [MASK]
    column, applied here so that raw logits can be passed), written in place into our float64 copy."""
    blocked = _blocked(rows.shape[-1], u.shape[-1])
    lp = rows.to(torch.float64, copy=exclude >= 0 or blocked)  # (n, C); our own copy when we write into it
    if exclude >= 0:
        lp[:, exclude] = float("-inf")
    return _invert_blocked(lp, u) if blocked else _invert(lp, u)


def _draw_fused(source: Tensor, index: Tensor | None, u: Tensor, exclude: int,
                opaque: bool = False) -> tuple[Tensor, Tensor]:
    """``_draw_rows`` of ``source[index]`` written for torch.compile: gather, cast and [MASK] column as
    one expression that the compiler fuses into the loads of the reductions; in the two-level case the
    masses of the picked blocks are recomputed from ``source`` (no (n, C) float64 tensor at all).
    ``opaque``: the cumulative sums as ATen kernels (`_few_rows`); the same arithmetic otherwise."""
    rows = source if index is None else source[index]
    C = rows.shape[-1]
    lp = rows.double()
    if exclude >= 0:
        lp = torch.where(torch.arange(C, device=lp.device) == exclude, float("-inf"), lp)
    if not _blocked(C, u.shape[-1]):
        return _invert(lp, u, opaque)
    n, K = u.shape
    top = lp.amax(dim=-1, keepdim=True)  # (n, 1)
    pad = -C % _BLOCK
    e = F.pad(torch.exp(lp - top), (0, pad))  # (n, nb·_BLOCK), zeros past the last class; fused, not written
    sums = e.reshape(n, -1, _BLOCK).sum(-1)  # (n, nb)
    blk, r, total = _pick_blocks(sums, u, opaque)
    cols, cc = _block_cols(blk, C)  # (n, K, _BLOCK)
    vals = _block_masses(rows.gather(1, cc.reshape(n, -1)).reshape(n, K, _BLOCK), cols, cc, C, top, exclude)
    return _pick_in_block(vals, blk, r, C, opaque)[0], (top + torch.log(total)).squeeze(-1)  # the masses of `sums`


def _draw_fast(source: Tensor, index: Tensor | None, u: Tensor, exclude: int,
               opaque: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exact draws from rows ``source[index]`` (n, C) with few float64 exps (the IS step's K = k draws per row).

    Stage 1, one pass over the rows (``edlm.accel.block_bounds``): for each block of ``_BLOCK`` ids its largest
    value m_b and float32 masses a = exp(max(x − m_b, −40)), each raised by its error bound and summed in float64,
    then scaled by exp(m_b − top) in float64: U_b ≥ the block's exact mass S_b = Σ exp(x − top). A draw locates
    r = u · ΣU among the cumulative U_b: block b and an offset o ∈ [0, U_b). Stage 2: the exact float64 masses
    of block b (as in ``_invert_blocked``); if o < S_b the draw is the class at o (probability exactly
    mass / ΣU), else it is rejected (probability (ΣU − ΣS) / ΣU ~ 1e-6) and ``draw_rows`` redraws it with the
    exact float64 inversion, from the fresh uniform (o − S_b) / (U_b − S_b). So every draw follows the row's
    distribution to float64 rounding. ``lse`` comes from the unraised float32 masses (error ~1e-7 in log space).

    Returns ids (n, K), lse (n,) float64 (NaN for a row with NaN, +inf or no mass), the rejected draws (n, K) bool
    and their fresh uniforms (n, K) float64. Written for torch.compile (``compile_draws``) and run as is eagerly.
    """
    n, C = (source.shape[0] if index is None else index.shape[0]), source.shape[1]
    U, top, lse = block_bounds(source, index, exclude)
    blk, o, _ = _pick_blocks(U, u, opaque)  # (n, K) blocks, offsets into them
    cols, cc = _block_cols(blk, C)  # (n, K, _BLOCK)
    src_rows = torch.arange(n, device=source.device) if index is None else index
    z = source[src_rows[:, None, None], cc]  # (n, K, _BLOCK): only the picked blocks are read
    ids, S = _pick_in_block(_block_masses(z, cols, cc, C, top, exclude), blk, o, C, opaque)  # S: exact block mass
    rejected = o >= S
    Ub = U.gather(1, blk)
    fresh = ((o - S) / torch.where(rejected, Ub - S, 1.0)).clamp(0.0, 1.0 - 2.0 ** -53)
    return ids, lse, rejected, torch.where(rejected, fresh, 0.0)


def _chunk_rows(C: int, K: int, fused: bool, fast: bool = False) -> int:
    """Rows per chunk so that one chunk's float64 temporaries stay near ``_CHUNK_BYTES``."""
    if fast:
        # compiled: stage 1 fused into one pass (the (n, nb) sums only), then the picked blocks; eager: about
        # five (n, C) float32 temporaries and one float64
        per_row = 2 * K * _BLOCK + 3 * (C // _BLOCK + 1) if fused else 4 * C + 2 * K * _BLOCK
    elif not _blocked(C, K):
        per_row = C  # the (n, C) cumulative sum
    elif fused:
        per_row = 2 * K * _BLOCK + C // _BLOCK + 1  # the picked blocks' masses and their cumsum; block sums
    else:
        per_row = C + 2 * K * _BLOCK  # our (n, C) float64 copy, then the picked blocks
    return max(1, _CHUNK_BYTES // (8 * per_row))


def draw_rows(source: Tensor, u: Tensor, index: Tensor | None = None, exclude: int = -1,
              overflow: Tensor | None = None) -> Draws:
    """Exact float64 draws from rows of ``source`` (N, C) (log-probabilities or raw logits, any float
    dtype): the rows ``index`` (n,) (all rows if None), with uniforms ``u`` (n, K).

    One draw per row (K = 1): inversion in float64, a cumulative sum over the C classes, or, when
    ``_BLOCK`` < C, the two-level inversion over blocks of ``_BLOCK`` ids (``_invert_blocked``), which gives the
    same draws up to float64 rounding at a fraction of the work. Several draws per row of a large vocabulary
    (``_fast``: an IS step's k proposals) use ``_draw_fast``: float32 block bounds and an exact accept / redraw,
    the same distribution to float64 rounding, with ~25 times fewer float64 exps (one host sync to learn whether
    any draw needs its exact redraw). Works through the rows in chunks of about 1 GiB of float64 work, so peak
    memory does not grow with n, and through the compiled kernels after ``compile_draws()``. Returns ``Draws``:
    the ids (n, K) and the rows' log-normalisers (n,) in float64 (NaN for a row with NaN, +inf or no finite entry).

    ``overflow``: a () bool tensor; with it the fast draw's exact redraws need no host sync (a step captured as a
    CUDA graph): the first `REDRAW_SLOTS` rows among those with a rejected draw are redrawn at every call, whether
    any draw was rejected or not, and ``overflow`` is set (on the device) when more rows needed it. At ~1e-6
    rejections per draw, 65 k draws a call (B = 32, L = 1024, k = 2) need more than 16 rows with probability ~1e-25.
    """
    n, C = (source.shape[0] if index is None else index.shape[0]), source.shape[-1]
    K = u.shape[-1]
    fast = _fast(C, K, source.device)
    compiled = _compiled_fast if fast else _compiled_draw
    step = _chunk_rows(C, K, compiled is not None, fast)
    few = _few_rows(source.device) if compiled is not None else 0
    parts = []
    for i in range(0, n, step):
        part = None if index is None else index[i: i + step]
        src = source[i: i + step] if index is None else source
        uu = u[i: i + step].double()
        if compiled is not None:
            parts.append(compiled(src, part, uu, exclude, min(step, n - i) < few))
        elif fast:
            parts.append(_draw_fast(src, part, uu, exclude))
        else:
            rows = source[i: i + step] if index is None else source.index_select(0, part)
            parts.append(_draw_rows(rows, uu, exclude))
    if not parts:
        return Draws(torch.empty(u.shape, dtype=torch.long, device=source.device),
                     torch.empty(0, dtype=torch.float64, device=source.device))
    def joined(j: int) -> Tensor:  # output j of every chunk, in row order
        return torch.cat([p[j] for p in parts]) if len(parts) > 1 else parts[0][j]

    ids, lse = joined(0), joined(1)
    if fast:
        rejected, fresh = joined(2), joined(3)
        if overflow is not None:
            ids = _redraw_slots(source, index, ids, rejected, fresh, exclude, overflow)
        elif rejected.any():  # the one host sync; true for ~1e-6 of the draws
            ids = _redraw(source, index, ids, rejected, fresh, exclude)
    return Draws(ids, lse)


def _redraw_slots(source: Tensor, index: Tensor | None, ids: Tensor, rejected: Tensor, fresh: Tensor, exclude: int,
                  overflow: Tensor) -> Tensor:
    """`_redraw` with fixed shapes: the first `REDRAW_SLOTS` rows with a rejected draw (the first rows, when fewer
    have one) are redrawn, and ``overflow`` is set if more rows had one."""
    hit = rejected.any(-1)  # (n,)
    m = min(REDRAW_SLOTS, hit.numel())
    # the rows with a rejected draw first (a stable order: the smallest row indices among ties)
    r = torch.argsort((~hit).to(torch.uint8), stable=True)[:m]
    overflow.logical_or_(hit.sum() > m)
    return _redraw_rows(source, index, ids, rejected, fresh, exclude, r)


def _redraw(source: Tensor, index: Tensor | None, ids: Tensor, rejected: Tensor, fresh: Tensor,
            exclude: int) -> Tensor:
    """`_draw_fast`'s rejected draws, drawn again by the exact float64 inversion from their fresh uniforms."""
    r = rejected.any(-1).nonzero().squeeze(-1)  # (m,) rows with a rejected draw: the one host sync
    return _redraw_rows(source, index, ids, rejected, fresh, exclude, r)


def _redraw_rows(source: Tensor, index: Tensor | None, ids: Tensor, rejected: Tensor, fresh: Tensor, exclude: int,
                 r: Tensor) -> Tensor:
    """The rows ``r`` (m,) drawn again by the float64 inversion from their fresh uniforms; only their rejected draws
    are replaced (a kept draw's fresh uniform is 0 and its redraw unused). Returns new ids."""
    rows = source.index_select(0, r if index is None else index.index_select(0, r))
    again, _ = _draw_rows(rows, fresh.index_select(0, r), exclude)  # float64 throughout
    return ids.index_put((r,), torch.where(rejected.index_select(0, r), again, ids.index_select(0, r)))


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
