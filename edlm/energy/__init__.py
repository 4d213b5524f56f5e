"""Residual energies E(x_0, x_t, t): lower = more data-like (SPEC 2.2)."""

from edlm.energy.ar_energy import AREnergy, check_same_tokenizer

__all__ = ["AREnergy", "check_same_tokenizer"]
