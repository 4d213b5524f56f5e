"""Samplers (never call networks) and ``generate`` (the one loop that does)."""

from edlm.samplers.ancestral import AncestralSampler
from edlm.samplers.base import GenerateOutput, StepOutput
from edlm.samplers.importance import ImportanceSampler, effective_sample_size, importance_log_weights
from edlm.samplers.loop import generate

__all__ = [
    "AncestralSampler",
    "GenerateOutput",
    "ImportanceSampler",
    "StepOutput",
    "effective_sample_size",
    "generate",
    "importance_log_weights",
]
