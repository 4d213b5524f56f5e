"""Int8 and int4 storage of a checkpoint's weight matrices: symmetric scales, dequantised to float on load.

A shipped model set travels with the package, so its size matters. Each 2-D floating weight with at least
``MIN_NUMEL`` entries (embedding and output tables included) is stored in one of two formats; vectors (biases,
norms) and small tensors stay in their own dtype. Loading multiplies back, ``w ≈ q · s``, with an error of at
most s / 2 per entry.

``int8``: ``q = round(w / s)`` in int8, one scale per row ``s = max|w_row| / 127`` under ``<key>.int8_scale``
(float32). A quarter of float32's bytes.

``int4``: each row is cut into groups of ``GROUP`` consecutive entries (the last one padded with zeros), one scale
per group ``s = max|w_group| / 7`` under ``<key>.int4_scale`` (float16, shape (rows, groups)), ``q = round(w / s)``
in -7..7. The range is symmetric: with -8..7 the extra level is only reachable by shrinking the step below
max|w| / 7, and then the largest positive entry clips by more than s / 2. Two values go in one uint8 byte under
``<key>`` as ``q + 8`` (1..15): entry 2j in the low nibble, entry 2j + 1 in the high one. ``<key>.int4_shape``
(int64, [rows, cols]) gives the matrix's shape back without the model's config. That is 4.25 bits per weight
(4.5 with float32 scales).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MIN_NUMEL", "SCALE_SUFFIX", "INT4_SCALE_SUFFIX", "INT4_SHAPE_SUFFIX", "GROUP", "FORMATS",
           "quantize", "dequantize", "quantize_int8", "dequantize_int8", "quantize_int4", "dequantize_int4",
           "pack_nibbles", "unpack_nibbles"]

MIN_NUMEL = 4096  # smaller tensors gain nothing worth a second tensor of scales
SCALE_SUFFIX = ".int8_scale"
INT4_SCALE_SUFFIX = ".int4_scale"
INT4_SHAPE_SUFFIX = ".int4_shape"
GROUP = 64  # entries per int4 scale: 2 bytes of float16 scale per 32 bytes of data; even, so rows pack whole
FORMATS = ("int8", "int4")


def _selected(k: str, w: Tensor, keys: set[str]) -> bool:
    return k in keys and w.is_floating_point() and w.dim() == 2 and w.numel() >= MIN_NUMEL


def quantize(state: dict[str, Tensor], keys: set[str], fmt: str) -> dict[str, Tensor]:
    """``state`` with the weight matrices named in ``keys`` stored as ``fmt``: "int8" or "int4"."""
    if fmt == "int8":
        return quantize_int8(state, keys)
    elif fmt == "int4":
        return quantize_int4(state, keys)
    else:
        raise ValueError(f"weight format must be one of {', '.join(FORMATS)}, got {fmt!r}.")


def dequantize(state: dict[str, Tensor], dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Undo `quantize`, whichever format each matrix is in; a no-op for a state with none."""
    return dequantize_int4(dequantize_int8(state, dtype), dtype)


# ----------------------------------------------------------------------------- int8, one scale per row
def quantize_int8(state: dict[str, Tensor], keys: set[str]) -> dict[str, Tensor]:
    """``state`` with each 2-D floating tensor named in ``keys`` (and big enough) replaced by int8 + its scales."""
    out: dict[str, Tensor] = {}
    for k, w in state.items():
        if _selected(k, w, keys):
            w32 = w.detach().float()
            scale = (w32.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)  # (rows,)
            out[k] = torch.round(w32 / scale[:, None]).clamp_(-127, 127).to(torch.int8)
            out[k + SCALE_SUFFIX] = scale
        else:
            out[k] = w
    return out


def dequantize_int8(state: dict[str, Tensor], dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Undo `quantize_int8`: every ``<key>.int8_scale`` turns ``<key>`` back into a ``dtype`` matrix."""
    scales = {k[: -len(SCALE_SUFFIX)]: v for k, v in state.items() if k.endswith(SCALE_SUFFIX)}
    out = {k: v for k, v in state.items() if not k.endswith(SCALE_SUFFIX)}
    for k, scale in scales.items():
        q = out.get(k)
        if q is None or q.dtype != torch.int8 or q.dim() != 2 or scale.shape != (q.shape[0],):
            raise ValueError(f"{k}{SCALE_SUFFIX} has no int8 matrix with one row per scale to go with it.")
        out[k] = (q.float() * scale.float()[:, None]).to(dtype)
    return out


# ----------------------------------------------------------------------------- int4, one scale per group
def pack_nibbles(q: Tensor) -> Tensor:
    """int values in -7..7, (..., 2n) -> uint8 (..., n): ``q[2j] + 8`` in the low nibble, ``q[2j+1] + 8`` high."""
    u = (q.to(torch.int16) + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_nibbles(packed: Tensor) -> Tensor:
    """Undo `pack_nibbles`: uint8 (..., n) -> int8 (..., 2n) in -8..7."""
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=-1).flatten(-2)  # (..., n, 2) -> (..., 2n): low first


def _float16_scale_at_least(s: Tensor) -> Tensor:
    """``s`` (float32, > 0) rounded up to float16, so that max|w_group| / scale ≤ 7 and nothing clips.

    float16 keeps 11 significant bits: the step grows by at most 2^-10 of itself, which moves no entry's error
    past half the stored step, and halves the scales' bytes against float32 (2 rather than 4 per 64 weights).
    """
    h = s.to(torch.float16)
    low = h.float() < s
    h[low] = torch.nextafter(h[low], torch.tensor(float("inf"), dtype=torch.float16))
    if not torch.isfinite(h).all():
        raise ValueError("a weight group's max|w| / 7 exceeds float16's range (65504); these weights are not "
                         "finite or far too large to store as int4; use int8 or float16.")
    return h


def quantize_int4(state: dict[str, Tensor], keys: set[str]) -> dict[str, Tensor]:
    """``state`` with each 2-D floating tensor named in ``keys`` (and big enough) replaced by packed int4, its
    group scales and its shape."""
    out: dict[str, Tensor] = {}
    for k, w in state.items():
        if not _selected(k, w, keys):
            out[k] = w
            continue
        rows, cols = w.shape
        groups = -(-cols // GROUP)
        w32 = torch.nn.functional.pad(w.detach().float(), (0, groups * GROUP - cols))  # (rows, groups * GROUP)
        w32 = w32.view(rows, groups, GROUP)  # (rows, groups, GROUP)
        # an all-zero group gets the smallest float16 step and stores zeros
        s = (w32.abs().amax(dim=2) / 7.0).clamp_min(2.0**-24)  # (rows, groups); 2^-24: smallest float16 > 0
        scale = _float16_scale_at_least(s)
        q = torch.round(w32 / scale.float()[..., None]).clamp_(-7, 7)  # (rows, groups, GROUP)
        out[k] = pack_nibbles(q.view(rows, groups * GROUP))  # (rows, groups * GROUP / 2)
        out[k + INT4_SCALE_SUFFIX] = scale
        out[k + INT4_SHAPE_SUFFIX] = torch.tensor([rows, cols], dtype=torch.int64)
    return out


def dequantize_int4(state: dict[str, Tensor], dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Undo `quantize_int4`: every ``<key>.int4_scale`` + ``<key>.int4_shape`` turns ``<key>`` back into a
    ``dtype`` matrix."""
    suffixes = (INT4_SCALE_SUFFIX, INT4_SHAPE_SUFFIX)
    names = {k[: -len(x)] for k in state for x in suffixes if k.endswith(x)}
    out = {k: v for k, v in state.items() if not k.endswith(suffixes)}
    for k in sorted(names):
        packed, scale, shape = out.get(k), state.get(k + INT4_SCALE_SUFFIX), state.get(k + INT4_SHAPE_SUFFIX)
        ok = packed is not None and scale is not None and shape is not None and packed.dtype == torch.uint8
        ok = ok and packed.dim() == 2 and scale.dim() == 2 and shape.shape == (2,)
        if ok:
            rows, cols = (int(n) for n in shape)
            groups = -(-cols // GROUP)
            ok = packed.shape == (rows, groups * GROUP // 2) and scale.shape == (rows, groups)
        if not ok:
            raise ValueError(f"{k}: its int4 matrix (uint8, two entries a byte), {INT4_SCALE_SUFFIX} (one per "
                             f"{GROUP} entries of a row) and {INT4_SHAPE_SUFFIX} ([rows, cols]) do not fit together.")
        q = unpack_nibbles(packed).view(rows, groups, GROUP).float()  # (rows, groups, GROUP)
        w = (q * scale.float()[..., None]).view(rows, groups * GROUP)[:, :cols]  # (rows, cols)
        out[k] = w.to(dtype).contiguous()
    return out
