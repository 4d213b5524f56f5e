"""Tied parameters are stored once and restored on load (edlm.models.tied)."""

import json

import pytest
import torch
from torch import nn

from edlm.errors import CheckpointError
from edlm.models import DiT, save_pretrained
from edlm.models.tied import tied_parameters, untie


def test_tied_parameters_names_each_later_alias():
    net = nn.Sequential(nn.Embedding(7, 4), nn.Linear(4, 7, bias=False), nn.Linear(4, 7, bias=False))
    net[1].weight = net[0].weight
    net[2].weight = net[0].weight
    assert tied_parameters(net) == {"1.weight": "0.weight", "2.weight": "0.weight"}
    assert tied_parameters(DiT(11, 8, 16, 1, 2, 8)) == {}


def test_untie_restores_aliases_and_refuses_a_missing_source(tmp_path):
    w = torch.randn(3, 2)
    state = untie({"a": w}, {"b": "a"}, tmp_path)
    assert state["b"] is w
    with pytest.raises(CheckpointError, match="ties b to c, which the weights lack"):
        untie({"a": w}, {"b": "c"}, tmp_path)
    assert untie({"a": w}, None, tmp_path) == {"a": w}


def test_a_model_without_ties_keeps_its_config_json(tmp_path):
    save_pretrained(DiT(11, 8, 16, 1, 2, 8), tmp_path)
    assert "tied" not in json.loads((tmp_path / "config.json").read_text())
