"""Residual energies E(x_0, x_t, t): lower = more data-like (SPEC 2.2)."""

from edlm.energy.ar_energy import AREnergy, check_same_tokenizer
from edlm.energy.nce_energy import NCEEnergy
from edlm.energy.nce_loss import NCELossOutput, nce_loss, sample_negatives
from edlm.energy.text_energy import TextLMEnergy

__all__ = ["AREnergy", "NCEEnergy", "NCELossOutput", "TextLMEnergy", "check_same_tokenizer", "nce_loss",
           "sample_negatives"]
