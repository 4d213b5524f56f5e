"""Tied parameters in checkpoints: a tensor registered under several names is stored once.

Hugging Face masked LMs tie their output layer to the input embedding (BERT also ties the output bias), so their
state dict names one tensor twice; safetensors refuses a tensor shared by two names. ``save_pretrained`` stores it
under its first name and records the others in config.json's "tied" (``{"cls.predictions.decoder.weight":
"bert.embeddings.word_embeddings.weight"}``); ``from_pretrained`` points them back at it before loading.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edlm.errors import CheckpointError

__all__ = ["tied_parameters", "untie"]


def tied_parameters(model: nn.Module) -> dict[str, str]:
    """Every later name of a parameter registered under several names -> its first name (empty if none)."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            tied[name] = first[id(p)]
        else:
            first[id(p)] = name
    return tied


def untie(state: dict[str, torch.Tensor], tied: dict | None, where: Path) -> dict[str, torch.Tensor]:
    """``state`` with each tied name (``tied``: name -> stored name, from ``where``) holding its stored tensor."""
    if tied is None:
        return state
    if not isinstance(tied, dict):
        raise CheckpointError(f"{where} has a \"tied\" field that is not a map of parameter names.")
    for alias, source in tied.items():
        if source not in state:
            raise CheckpointError(f"{where} ties {alias} to {source}, which the weights lack; the checkpoint is "
                                  "incomplete.")
        state[alias] = state[source]
    return state
