"""Reference behaviours, labelled: published defects (for comparison) and baseline samplers."""

from edlm.baselines.ar_sampler import ARSampleOutput, ar_sample
from edlm.baselines.reference_defects import PositiveSignEnergy, gumbel_max_float32

__all__ = ["ARSampleOutput", "PositiveSignEnergy", "ar_sample", "gumbel_max_float32"]
