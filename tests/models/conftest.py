"""Tiny models shared by the model tests (random but seeded; MDLM's zero-init output replaced)."""

import pytest
import torch

from edlm.models import ARTransformer, DiT

TINY = dict(vocab_size=37, length=16, hidden_size=32, n_blocks=2, n_heads=4)  # head_dim 8


def randomize_(model: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with N(0, std²) noise: MDLM's init zeroes the output layer and the
    adaLN gates, which would make a fresh model blind to its inputs and every dependence test vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture
def tiny_sizes():
    return dict(TINY)


@pytest.fixture
def randomize():
    return randomize_


@pytest.fixture
def tiny_dit():
    return randomize_(DiT(**TINY, cond_dim=16, dropout=0.0)).eval()


@pytest.fixture
def tiny_dit_tc():
    return randomize_(DiT(**TINY, cond_dim=16, dropout=0.0, time_conditioning=True)).eval()


@pytest.fixture
def tiny_ar():
    return randomize_(ARTransformer(**TINY, dropout=0.0)).eval()


@pytest.fixture
def tokens():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, TINY["vocab_size"] - 1, (3, 12), generator=g)  # (B, L), no [MASK] (= 36)
