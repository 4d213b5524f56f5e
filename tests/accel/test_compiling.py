"""edlm.accel.compiling: which inductor options reach torch.compile and that they are live, frozen compiles, the
CUDA-graph replay (its contract checked on the CPU), and multi-kernel's persistent preference."""

import os

import pytest
import torch
from torch import nn

from edlm.accel import compiling
from edlm.accel.compiling import INFERENCE_OPTIONS, compile_networks, compiled_target, is_compiled


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


def test_wrapped_networks_compile_their_inner_module():
    """A Denoiser's backbone and an AREnergy's AR model are what `compile_networks` compiles (`compiled_target`)."""
    from types import SimpleNamespace

    backbone, ar_model, plain = Recorder(), Recorder(), Recorder()
    denoiser, energy = SimpleNamespace(backbone=backbone), SimpleNamespace(ar_model=ar_model)
    assert compiled_target(denoiser) is backbone and compiled_target(energy) is ar_model
    assert compiled_target(plain) is plain
    assert not is_compiled(denoiser) and not is_compiled(None)
    compile_networks(denoiser, energy, None)
    assert is_compiled(denoiser) and is_compiled(energy) and len(backbone.calls) == len(ar_model.calls) == 1
    with pytest.raises(TypeError, match="not a torch module"):
        compile_networks(SimpleNamespace())


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


def _tiny(kind: str) -> nn.Module:
    from edlm.energy.nce_energy import NCEEnergy
    from edlm.models.dit import DiT

    torch.manual_seed(0)
    net = (NCEEnergy(61, 16, 32, 2, 4, 8, dropout=0.0) if kind == "nce" else DiT(61, 16, 32, 2, 4, 8, dropout=0.0))
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn_like(prm) * 0.1)  # nonzero adaLN and head: the σ-map matters
    return net.eval()


def _call(kind: str, net: nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 60, (3, 16), generator=g)
    return net(x, torch.where(torch.rand(3, 16, generator=g) < 0.5, 60, x), torch.full((3,), 0.5)) if kind == "nce" \
        else net(x)


def _gemms(code: str) -> int:
    """GEMM calls in inductor's CPU code: cuBLAS-style extern calls, or mkldnn / mkl linears after freezing."""
    import re

    return len(re.findall(r"extern_kernels\.(?:mm|addmm|bmm)\(|mkl\._mkl_linear\.default\(|mkldnn\._linear_pointwise\.default\(", code))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nce", "dit"])
def test_frozen_compile_folds_the_sigma_map_and_gives_the_eager_forward(kind):
    from torch._inductor import config
    from torch._inductor.utils import run_and_get_code

    gemms = {}
    for freeze in (False, True):
        torch._dynamo.reset()
        net = _tiny(kind)
        with torch.no_grad():
            eager = _call(kind, net)
            compile_networks(net, freeze=freeze)
            out, codes = run_and_get_code(lambda net=net: _call(kind, net))
        torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
        gemms[freeze] = _gemms("\n".join(codes))
        assert config.freezing is False  # set around the call only, never left on for other compiles
    # frozen: the σ-map's two linears and every adaLN modulation (2 blocks, + the DiT's output layer) are constants
    assert gemms[False] - gemms[True] == 2 + 2 + (kind == "dit")


def test_frozen_compile_with_autograd_on_keeps_the_weights_live():
    torch._dynamo.reset()
    net, ref = _tiny("nce"), _tiny("nce")
    compile_networks(net, freeze=True)
    _call("nce", net).sum().backward()  # autograd on: no freezing, parameters stay graph inputs
    _call("nce", ref).sum().backward()
    for (name, a), b in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        net.head[-1].bias.add_(1.0)  # an in-place weight change is seen by the unfrozen graph
        ref.head[-1].bias.add_(1.0)
    with torch.enable_grad():
        torch.testing.assert_close(_call("nce", net), _call("nce", ref), rtol=1e-5, atol=1e-6)


class _ReplayedCapture(compiling._Capture):
    """A CUDA graph's contract on the CPU: the captured function reads the capture's input buffers and writes
    into the same output buffers on every replay."""

    captures = 0
    replays = 0

    def _capture(self, call, args, kwargs):
        type(self).captures += 1
        self._call = lambda: call(*args, **kwargs)
        return self._call()

    def _replay(self):
        type(self).replays += 1
        for buf, new in zip(_pytree_leaves(self.outputs), _pytree_leaves(self._call())):
            buf.copy_(new)


def _pytree_leaves(tree):
    from torch.utils import _pytree

    return _pytree.tree_leaves(tree)


@pytest.fixture
def graphed(monkeypatch):
    """`_Graphed` with its capture replayed on the CPU (every tensor counted as on the GPU, no side stream)."""
    monkeypatch.setattr(compiling, "_on_gpu", lambda t: True)
    monkeypatch.setattr(compiling._Graphed, "capture", _ReplayedCapture)
    monkeypatch.setattr(compiling._Graphed, "_warm", lambda self, args, kwargs: None)
    _ReplayedCapture.captures = 0
    return compiling._Graphed


def test_graphed_call_copies_inputs_in_and_outputs_out(graphed):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 1)).eval()
    calls = []

    def call(x, scale=1.0):
        calls.append(x)
        return net(x).squeeze(-1) * scale

    g = graphed(call)
    xs = [torch.randn(4, 6) for _ in range(3)]
    with torch.no_grad():
        outs = [g(x, scale=2.0) for x in xs]  # first: a plain call, then captured; later: replays
        assert _ReplayedCapture.captures == 1 and len(g.graphs) == 1
        assert all(c is not x for c, x in zip(calls[1:], xs[1:]))  # the graph reads its own input buffers
        for x, out in zip(xs, outs):  # each output is its own input's (a replay's inputs were copied in) ...
            torch.testing.assert_close(out, net(x).squeeze(-1) * 2.0)
        assert outs[1].data_ptr() != outs[2].data_ptr()  # ... and not the graph's buffer, overwritten by the next
        g(torch.randn(4, 6), scale=3.0)  # another constant: another signature
        g(torch.randn(2, 6), scale=2.0)  # another shape
        assert _ReplayedCapture.captures == 3
    with torch.inference_mode():  # buffers made here could not be written outside inference mode: their own graph
        torch.testing.assert_close(g(xs[0], scale=2.0), outs[0])
        assert _ReplayedCapture.captures == 4
    with torch.enable_grad():
        x = torch.randn(4, 6)
        out = g(x, scale=2.0)  # autograd on: the plain call, with a graph to differentiate
        assert out.requires_grad and calls[-1] is x and _ReplayedCapture.captures == 4


def test_graphed_call_leaves_large_outputs_and_failed_captures_ungraphed(graphed, monkeypatch):
    g = graphed(lambda x: x * 2, max_output_bytes=4 * 10)
    with torch.no_grad():
        small, large = torch.ones(10), torch.ones(11)  # 40 bytes of float32 may be graphed, 44 may not
        for _ in range(2):
            torch.testing.assert_close(g(large), large * 2)
            torch.testing.assert_close(g(small), small * 2)
        assert _ReplayedCapture.captures == 1 and sum(v is None for v in g.graphs.values()) == 1

        def broken(self, call, args, kwargs):
            raise RuntimeError("operation not permitted when stream is capturing")

        monkeypatch.setattr(_ReplayedCapture, "_capture", broken)
        g = graphed(lambda x: x + 1)
        with pytest.warns(RuntimeWarning, match="capture failed"):
            torch.testing.assert_close(g(small), small + 1)
        torch.testing.assert_close(g(small), small + 1)  # later calls: plain, no second attempt
        assert list(g.graphs.values()) == [None]


def test_graphed_call_inside_a_callers_capture_runs_plainly(graphed, monkeypatch):
    """generate(graph=True) captures whole steps: a network call inside that capture neither captures a graph of
    its own nor replays one (a replay cannot be recorded into another capture)."""
    g = graphed(lambda x: x * 3)
    x = torch.ones(4)
    with torch.no_grad():
        g(x), g(x)  # captured, then replayed
        assert _ReplayedCapture.captures == 1
        monkeypatch.setattr(compiling, "_capturing", lambda: True)
        replays = _ReplayedCapture.replays
        torch.testing.assert_close(g(torch.full((4,), 2.0)), torch.full((4,), 6.0))
        torch.testing.assert_close(g(torch.ones(5)), torch.full((5,), 3.0))  # a new signature: not captured either
        assert _ReplayedCapture.captures == 1 and _ReplayedCapture.replays == replays and len(g.graphs) == 1


def test_cuda_graphs_leave_cpu_calls_as_they_are():
    torch._dynamo.reset()
    net, ref = _tiny("nce"), _tiny("nce")
    compile_networks(net, cuda_graphs=True)
    assert isinstance(net._compiled_call_impl, compiling._Graphed)
    with torch.no_grad():
        torch.testing.assert_close(_call("nce", net), _call("nce", ref), rtol=1e-5, atol=1e-6)
    assert net._compiled_call_impl.graphs == {}  # CPU tensors: never a signature, never captured


class _Kernel:
    def __init__(self, name):
        self.inductor_meta = {"kernel_name": name}


class _FakeMultiKernelCall:
    def __init__(self, timings):
        self.kernels = [_Kernel("triton_red_fused_ln_0"), _Kernel("triton_per_fused_ln_1")]
        self._timings = timings

    def benchmark_sub_kernels(self, *args, **kwargs):
        return list(self._timings)

    def run(self):  # as inductor's MultiKernelCall.run picks
        timings = self.benchmark_sub_kernels()
        return timings.index(min(timings))


def test_prefer_persistent_keeps_the_persistent_version_unless_the_looped_one_is_clearly_faster(monkeypatch):
    monkeypatch.setattr(compiling, "MULTI_KERNEL_PICKS", [])
    compiling.prefer_persistent(_FakeMultiKernelCall)
    compiling.prefer_persistent(_FakeMultiKernelCall)  # once: not wrapped twice
    assert _FakeMultiKernelCall(timings=[0.100, 0.110]).run() == 1  # persistent within 15 %: kept
    assert _FakeMultiKernelCall(timings=[0.050, 0.480]).run() == 0  # the NCE's final mean: looped
    monkeypatch.setattr(compiling, "PERSISTENT_PREFERENCE", 1.0)  # inductor's own rule
    assert _FakeMultiKernelCall(timings=[0.100, 0.110]).run() == 0
    assert [p["kept"] for p in compiling.MULTI_KERNEL_PICKS] == [1, 0, 0]
    assert compiling.MULTI_KERNEL_PICKS[0]["ms"] == [0.100, 0.110]


class _Source:
    def __init__(self, src):
        self.src = src


class _CachedKernel(_Kernel):
    def __init__(self, name, source):
        super().__init__(name)
        self.fn, self.size_hints, self.triton_meta = _Source(source), {"x": 1024, "r0_": 512}, {"device": "cuda:0"}


class _TimedMultiKernelCall(_FakeMultiKernelCall):
    calls = 0

    def __init__(self, timings, sources=("src-looped", "src-persistent")):
        super().__init__(timings)
        self.kernels = [_CachedKernel("triton_red_fused_ln_0", sources[0]),
                        _CachedKernel("triton_per_fused_ln_1", sources[1])]

    def benchmark_sub_kernels(self, *args, **kwargs):
        type(self).calls += 1
        return list(self._timings)


def test_multi_kernel_picks_are_kept_for_the_next_process(tmp_path, monkeypatch):
    monkeypatch.setenv("EDLM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    monkeypatch.setattr(compiling, "MULTI_KERNEL_PICKS", [])
    compiling.prefer_persistent(_TimedMultiKernelCall)
    assert _TimedMultiKernelCall(timings=[0.050, 0.480]).run() == 0  # timed: the looped version is clearly faster
    assert _TimedMultiKernelCall.calls == 1
    assert len(list(compiling.pick_cache_dir().iterdir())) == 1
    # the same versions again (a later process): the kept pick, whatever a new timing would say, and no timing
    assert _TimedMultiKernelCall(timings=[0.480, 0.050]).run() == 0
    assert _TimedMultiKernelCall.calls == 1
    # other versions (another source) are timed and kept apart
    assert _TimedMultiKernelCall(timings=[0.480, 0.050], sources=("a", "b")).run() == 1
    assert _TimedMultiKernelCall.calls == 2
    assert [p["kept"] for p in compiling.MULTI_KERNEL_PICKS] == [0, 1]
    for entry in compiling.pick_cache_dir().iterdir():  # a damaged entry is timed again
        entry.write_text("garbage")
    assert _TimedMultiKernelCall(timings=[0.480, 0.050]).run() == 1
    assert _TimedMultiKernelCall.calls == 3
    monkeypatch.setattr(compiling, "PERSISTENT_PREFERENCE", 1.0)  # another rule: another key, timed again
    assert _TimedMultiKernelCall(timings=[0.100, 0.110]).run() == 0
    assert _TimedMultiKernelCall.calls == 4


def test_compile_cache_lives_under_the_edlm_cache_unless_set(tmp_path, monkeypatch):
    from edlm.accel.compiling import compile_cache_dir

    monkeypatch.setenv("EDLM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    assert compile_cache_dir() == tmp_path / "compile" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "compile" / "inductor")
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "compile" / "triton")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # a user's own choice is kept
    assert compile_cache_dir() == tmp_path / "mine"
