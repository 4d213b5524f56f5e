"""``EnergyConfig``: the settings of ``edlm train energy`` that a ``RunConfig`` does not already hold.

Everything else (data, optimizer, EMA, trainer, run dir) comes from the ``RunConfig``; the energy's
architecture is the denoiser's (SPEC 2.4: initialise from the denoiser), so ``model.*`` sizes are
not read.
"""

from __future__ import annotations

from dataclasses import dataclass

from edlm.errors import ConfigError

__all__ = ["EnergyConfig"]


@dataclass
class EnergyConfig:
    """NCE training of the EDLM energy (SPEC 2.4)."""

    denoiser: str | None = None  # save_pretrained dir (or hub id) of the frozen denoiser; may be passed apart
    n_neg: int = 1  # negatives per data sequence; the paper's NCE uses one per positive
    init_from_denoiser: bool = True  # SPEC 2.4: copy embedding + blocks from the denoiser; False = random init
    dropout: float | None = None  # None = the denoiser's dropout
    time_conditioning: bool | None = None  # None = as the denoiser (MDLM-OWT: not time-conditioned)

    def __post_init__(self) -> None:
        if self.n_neg < 1:
            raise ConfigError(f"energy.n_neg must be >= 1, got {self.n_neg}.")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"energy.dropout must be in [0, 1), got {self.dropout}.")
