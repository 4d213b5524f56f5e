"""Labelled reference behaviours of published code, kept only to measure them against ours.

Never defaults. Each function reproduces one known defect so tests and benchmarks can show its
effect on the exact toy (SPEC §3) or on real models.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["PositiveSignEnergy", "gumbel_max_float32"]


class PositiveSignEnergy:
    """EDLM's published weighting, softmax(+E): wraps an energy and flips its sign.

    Our decoder weights proposals by exp(−E/τ) (SPEC 2.5). The published code applies softmax to
    +E, i.e. it prefers the *least* likely proposals. Passing ``PositiveSignEnergy(energy)`` to
    ``generate`` reproduces that behaviour exactly.
    """

    def __init__(self, energy):
        self.energy = energy
        self.vocab_size = getattr(energy, "vocab_size", None)

    def __call__(self, x_0: Tensor, x_t: Tensor, t: Tensor, log_p_x0: Tensor) -> Tensor:
        return -self.energy(x_0, x_t, t, log_p_x0)


def gumbel_max_float32(log_probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """MDLM's published categorical draw, in float32: argmax_v p_v / E_v with E_v = −log(u_v + 1e-10).

    This "exponential race" is Gumbel-max in another form (argmax log p − log E). float32 uniforms
    are multiples of 2^-24, so E cannot fall below ≈ 6e-8 and is coarsely quantised near there:
    classes far below the mode are drawn less often than their probability (and classes more than
    ~20 nats below it never). Kept only to demonstrate the bias.
    """
    probs = torch.softmax(log_probs.float(), dim=-1)
    u = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=torch.float32)
    race = 1e-10 - torch.log(u + 1e-10)  # the published form, float32 throughout
    return (probs / race).argmax(-1)
