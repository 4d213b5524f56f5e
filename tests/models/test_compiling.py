"""compile_networks: which inductor options reach torch.compile, and that they are live."""

import os

import pytest
import torch
from torch import nn

from edlm.models.compiling import INFERENCE_OPTIONS, compile_networks, is_compiled


class Recorder(nn.Module):
    """Records the keyword arguments of ``nn.Module.compile`` instead of compiling."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def compile(self, **kwargs):
        self.calls.append(kwargs)
        self._compiled_call_impl = self.forward


def test_default_options_are_multi_kernel_and_a_mode_adds_its_own():
    plain, tuned, bare = Recorder(), Recorder(), Recorder()
    compile_networks(plain)
    compile_networks(tuned, mode="max-autotune-no-cudagraphs")
    compile_networks(bare, mode="reduce-overhead", options={})
    assert plain.calls == [{"options": {"triton.multi_kernel": 1}, "dynamic": False}]
    assert INFERENCE_OPTIONS == {"triton.multi_kernel": 1}
    assert tuned.calls[0]["options"] == {"max_autotune": True, "coordinate_descent_tuning": True,
                                         "triton.multi_kernel": 1}
    assert bare.calls[0]["options"] == {"triton.cudagraphs": True}  # the mode's own options, nothing added
    compile_networks(plain, options={"triton.multi_kernel": 0})  # already compiled: not compiled again
    assert len(plain.calls) == 1 and is_compiled(plain)


def test_multi_kernel_turns_its_pick_cache_off_and_leaves_a_users_setting(monkeypatch):
    # torch 2.11: a graph loaded from inductor's FX graph cache fails in multi-kernel's pick-cache lookup
    key = "TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE"
    monkeypatch.delenv(key, raising=False)
    compile_networks(Recorder(), options={})
    assert key not in os.environ  # no multi-kernel, nothing set
    compile_networks(Recorder())
    assert os.environ[key] == "1"
    monkeypatch.setenv(key, "0")
    compile_networks(Recorder())
    assert os.environ[key] == "0"


def test_options_reach_inductor_and_the_compiled_forward_matches_eager():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))
    x = torch.randn(8, 16)
    with torch.no_grad():
        eager = net(x)
        compile_networks(net)  # the default options: accepted by inductor, inert on CPU
        torch.testing.assert_close(net(x), eager, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="no_such_inductor_option"):  # torch checks each option's name
        compile_networks(nn.Linear(4, 4), options={"no_such_inductor_option": 1})
