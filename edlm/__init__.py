"""edlm: energy-based diffusion language models (MDLM proposals, residual energies, importance sampling)."""

from edlm.samplers.loop import generate

__version__ = "0.1.0"
__all__ = ["generate", "__version__"]
