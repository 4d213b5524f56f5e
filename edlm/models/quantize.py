"""Int8 storage of a checkpoint's weight matrices: row-wise symmetric scales, dequantised on load.

A shipped model set travels with the package, so its size matters: int8 halves float16's bytes. Each 2-D floating
weight with at least ``MIN_NUMEL`` entries is stored as ``q = round(w / s)`` in int8 with one scale per row,
``s = max|w_row| / 127``, saved under ``<key>.int8_scale`` (float32). Loading multiplies back, ``w ≈ q · s``,
with an error of at most s / 2 per entry; vectors (biases, norms) and small tensors stay in their own dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MIN_NUMEL", "SCALE_SUFFIX", "quantize_int8", "dequantize_int8"]

MIN_NUMEL = 4096  # smaller tensors gain nothing worth a second tensor of scales
SCALE_SUFFIX = ".int8_scale"


def quantize_int8(state: dict[str, Tensor], keys: set[str]) -> dict[str, Tensor]:
    """``state`` with each 2-D floating tensor named in ``keys`` (and big enough) replaced by int8 + its scales."""
    out: dict[str, Tensor] = {}
    for k, w in state.items():
        if k in keys and w.is_floating_point() and w.dim() == 2 and w.numel() >= MIN_NUMEL:
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
