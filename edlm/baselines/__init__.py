"""Reference behaviours, labelled: published defects (for comparison) and baseline samplers."""

from edlm.baselines.reference_defects import PositiveSignEnergy, gumbel_max_float32

__all__ = ["PositiveSignEnergy", "gumbel_max_float32"]
