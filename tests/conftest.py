import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global seed (tests that need streams use generators)."""
    torch.manual_seed(0)
    yield
