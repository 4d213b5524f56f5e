"""Noise schedules for absorbing-state diffusion (SPEC 1.1).

A schedule gives α_t — the probability that a token is still clean at time t ∈ [0, 1] — its
derivative α'_t, and σ(t) = −log α_t. Everything else (masking probabilities, loss weights,
reverse-step probabilities) is derived from these three functions.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = [
    "NoiseSchedule",
    "LogLinearSchedule",
    "LinearSigmaSchedule",
    "CosineSchedule",
    "SCHEDULES",
    "get_schedule",
]


class NoiseSchedule(ABC):
    """Monotone schedule α_t: decreasing from α_0 ≈ 1 to α_1 ≈ 0 (SPEC 1.1)."""

    name: str = "abstract"

    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """α_t, the probability that a token is still clean at time t."""

    @abstractmethod
    def alpha_prime(self, t: Tensor) -> Tensor:
        """dα_t/dt (negative)."""

    def sigma(self, t: Tensor) -> Tensor:
        """σ(t) = −log α_t, the total noise; MDLM's time-conditioning input."""
        return -torch.log(self.alpha(t))

    def mask_prob(self, t: Tensor) -> Tensor:
        """1 − α_t: the probability that a token is masked at time t (SPEC 1.2)."""
        return 1.0 - self.alpha(t)

    def loss_weight(self, t: Tensor) -> Tensor:
        """α'_t / (1 − α_t), the NELBO weight of SPEC 1.5 (negative; −1/t for log-linear, ε→0)."""
        return self.alpha_prime(t) / (1.0 - self.alpha(t))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class LogLinearSchedule(NoiseSchedule):
    """α_t = 1 − (1 − ε)·t: the masking probability grows linearly in t (MDLM's default)."""

    name = "loglinear"

    def __init__(self, eps: float = 1e-3):
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"`eps` must be in [0, 1), got {eps}.")
        self.eps = eps  # α_1 = ε keeps σ(1) finite

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - (1.0 - self.eps) * t  # SPEC 1.1

    def alpha_prime(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -(1.0 - self.eps))


class LinearSigmaSchedule(NoiseSchedule):
    """σ(t) = σ_min + t·(σ_max − σ_min), so α_t = exp(−σ(t)) (linear in the total noise)."""

    name = "linear_sigma"

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0):
        if not 0.0 <= sigma_min < sigma_max:
            raise ValueError(f"need 0 <= sigma_min < sigma_max, got {sigma_min}, {sigma_max}.")
        self.sigma_min = sigma_min  # α_0 = e^-1e-4 ≈ 1
        self.sigma_max = sigma_max  # α_1 = e^-20 ≈ 2e-9 ≈ 0

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min + t * (self.sigma_max - self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-self.sigma(t))

    def alpha_prime(self, t: Tensor) -> Tensor:
        return -(self.sigma_max - self.sigma_min) * torch.exp(-self.sigma(t))


class CosineSchedule(NoiseSchedule):
    """α_t = ε + (1 − ε)·cos(πt/2): slow masking at first, fast near t = 1."""

    name = "cosine"

    def __init__(self, eps: float = 1e-3):
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"`eps` must be in [0, 1), got {eps}.")
        self.eps = eps  # α_1 = ε keeps σ(1) finite

    def alpha(self, t: Tensor) -> Tensor:
        return self.eps + (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def alpha_prime(self, t: Tensor) -> Tensor:
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


SCHEDULES: dict[str, type[NoiseSchedule]] = {
    "loglinear": LogLinearSchedule,
    "linear_sigma": LinearSigmaSchedule,
    "cosine": CosineSchedule,
}


def get_schedule(name: str | NoiseSchedule, **kwargs) -> NoiseSchedule:
    """Build a schedule by name (``loglinear``, ``linear_sigma``, ``cosine``) or pass one through."""
    if isinstance(name, NoiseSchedule):
        return name
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}.")
    return SCHEDULES[name](**kwargs)
