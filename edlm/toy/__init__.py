"""SPEC §3: an enumerable joint where the denoiser, the AR model and the energy are exact."""

from edlm.toy.joint import ToyJoint, ancestral_distribution, total_variation, total_variation_noise

__all__ = ["ToyJoint", "ancestral_distribution", "total_variation", "total_variation_noise"]
