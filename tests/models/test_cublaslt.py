"""The tuned GEMMs (edlm.models.cublaslt, ops.tuned_linear, dit.block_linear) and multi-kernel's persistent
preference (compiling.prefer_persistent). cuBLASLt itself runs on a GPU only (benchmarks/gpu/lt_algos.py); here the
tuner's choice rule runs against stand-in candidates, and the networks' routing against torch's own calls."""

import ctypes

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edlm.models import compiling, cublaslt
from edlm.models import dit as dit_module
from edlm.models.ops import tuned_linear


def test_ctypes_structs_have_the_sizes_of_cublasLt_h():
    # cublasLtMatmulAlgo_t is uint64_t data[8]; the heuristic result adds size_t, cublasStatus_t, float, int[4]
    assert ctypes.sizeof(cublaslt._Algo) == 64
    assert ctypes.sizeof(cublaslt._Heuristic) == 96
    assert cublaslt.EPILOGUES == {"none": 1, "bias": 4, "gelu_bias": 36}


@pytest.mark.parametrize("epilogue", ["none", "bias", "gelu_bias"])
def test_tuned_linear_on_cpu_is_torchs_call(epilogue):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(5, 8, generator=g), torch.randn(6, 8, generator=g), torch.randn(6, generator=g)
    bias = None if epilogue == "none" else b
    want = {"none": F.linear(x, w), "bias": F.linear(x, w, b), "gelu_bias": F.gelu(F.linear(x, w, b))}[epilogue]
    torch.testing.assert_close(tuned_linear(x, w, bias, epilogue), want)
    torch.testing.assert_close(cublaslt.reference(x, w, bias, epilogue), want)


class _FakeGemm:
    """Stand-in candidates: candidate i returns torch's output plus offsets[i] (0: the same output)."""

    offsets = [0.0, 1e-3, 0.0, 0.0]

    def __init__(self, problem, device=0):
        self.problem, self.algos = problem, list(range(len(self.offsets)))
        self.launched = []

    def __call__(self, x, w, bias=None, algo=0, out=None):
        y = cublaslt.reference(x, w, bias, self.problem.epilogue) + self.offsets[algo]
        if out is not None:
            out.copy_(y)
            return out
        return y

    def launch(self, x, w, bias, algo, y):
        self.launched.append(algo)
        y.copy_(self(x, w, bias, algo))


def _tuner(monkeypatch, timings):
    """A Tuner over _FakeGemm whose timing of option i (−1: torch's call) is timings[i], read in call order."""
    monkeypatch.setattr(cublaslt, "Gemm", _FakeGemm)
    tuner = cublaslt.Tuner()
    order = iter([-1] + [i for i in range(len(_FakeGemm.offsets)) if _FakeGemm.offsets[i] == 0.0])
    monkeypatch.setattr(tuner, "_ms", lambda fn: timings[next(order)])
    return tuner


def test_tuner_picks_the_fastest_candidate_with_torchs_exact_output(monkeypatch):
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    # candidate 1 would be the fastest but its output differs: rejected, never timed
    tuner = _tuner(monkeypatch, {-1: 1.0, 0: 0.97, 2: 0.90, 3: 0.95, 1: 0.1})
    choice = tuner.tune(x, w, None, "none")
    assert choice.algo == 2 and choice.rejected == [1] and set(choice.ms) == {-1, 0, 2, 3}


def test_tuner_keeps_torchs_call_unless_a_candidate_beats_it_by_the_margin(monkeypatch):
    x, w = torch.randn(4, 8), torch.randn(3, 8)
    tuner = _tuner(monkeypatch, {-1: 1.0, 0: 0.995, 2: 0.992, 3: 1.2})
    assert tuner.tune(x, w, None, "none").algo == -1


def test_tuner_tunes_once_per_problem_and_not_while_capturing(monkeypatch):
    monkeypatch.setattr(cublaslt, "Gemm", _FakeGemm)
    tuner, tuned = cublaslt.Tuner(), []

    def tune(*args):
        tuned.append(args[0].shape)
        return cublaslt.Choice(2, {-1: 1.0, 2: 0.5}, [], _FakeGemm(cublaslt.Problem(4, 3, 8, "bias")))

    monkeypatch.setattr(tuner, "tune", tune)
    x, w, b = torch.randn(4, 8), torch.randn(3, 8), torch.randn(3)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    torch.testing.assert_close(tuner(x, w, b, "bias"), F.linear(x, w, b))  # torch's call, nothing stored
    assert tuned == [] and tuner.choices == {}
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    for _ in range(3):
        torch.testing.assert_close(tuner(x, w, b, "bias"), F.linear(x, w, b))
    tuner(torch.randn(6, 8), w, b, "bias")
    assert tuned == [(4, 8), (6, 8)] and len(tuner.choices) == 2


def test_tuner_leaves_mixed_dtypes_to_torch(monkeypatch):
    """cuBLASLt is told one dtype for x, w and the bias; a bias of another dtype or a strided one goes to torch."""
    tuner = cublaslt.Tuner()
    monkeypatch.setattr(tuner, "tune", lambda *a: pytest.fail("tuned a GEMM it should have left to torch"))
    x, w = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(3, 8, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError):  # torch's own call refuses a float32 bias with bf16 operands, as before
        tuner(x, w, torch.randn(3), "bias")
    strided = torch.randn(3, 2, dtype=torch.bfloat16)[:, 0]
    torch.testing.assert_close(tuner(x, w, strided, "bias"), F.linear(x, w, strided))
    assert tuner.choices == {}


def _block(seed=0):
    torch.manual_seed(seed)
    block = dit_module.DiTBlock(32, 4, 16, dropout=0.0).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return block


def test_block_routes_its_gemms_through_tuned_linear_with_the_same_output(monkeypatch):
    """Where `_tuned_here` holds (a CUDA half-precision no-grad forward; forced here on the CPU), the block's four GEMMs
    (QKV, attention out, MLP up with its GELU, MLP down) go through ``tuned_linear``, reshaped to 2-D and back."""
    block = _block()
    x, c = torch.randn(2, 8, 32), torch.randn(2, 16)
    cos, sin = dit_module.Rotary(8)(8, x.device)
    with torch.no_grad():
        want = block(x, (cos, sin), c)
        calls = []
        real = dit_module.tuned_linear

        def counting(h, w, bias, epilogue):
            calls.append((tuple(h.shape), tuple(w.shape), epilogue))
            return real(h, w, bias, epilogue)

        monkeypatch.setattr(dit_module, "_tuned_here", lambda h, w: True)
        monkeypatch.setattr(dit_module, "tuned_linear", counting)
        got = block(x, (cos, sin), c)
    # on the CPU aten's GELU epilogue is the erf form, the layer's the tanh form (on CUDA both are tanh), so the
    # outputs agree to that difference only
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)
    assert not torch.equal(got, want)
    assert calls == [((16, 32), (96, 32), "none"), ((16, 32), (32, 32), "none"), ((16, 32), (128, 32), "gelu_bias"),
                     ((16, 128), (32, 128), "bias")]


def test_tuned_here_only_for_half_precision_no_grad_cuda_forwards(monkeypatch):
    w = torch.zeros(3, 4, dtype=torch.bfloat16)
    h = torch.zeros(2, 4, dtype=torch.bfloat16)
    with torch.no_grad():
        assert not dit_module._tuned_here(h, w)  # CPU
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: True))
    with torch.no_grad():
        assert dit_module._tuned_here(h, w)
        assert not dit_module._tuned_here(h.float(), w.float())
        assert not dit_module._tuned_here(h, w.float())  # autocast: fp32 weights
        monkeypatch.setattr(dit_module.DiTBlock, "tuned_gemms", False)
        assert not dit_module._tuned_here(h, w)
    monkeypatch.setattr(dit_module.DiTBlock, "tuned_gemms", True)
    assert not dit_module._tuned_here(h, w)  # autograd on


def test_block_linear_stays_one_op_under_compile(monkeypatch):
    import torch._dynamo

    lin = nn.Linear(8, 6)
    monkeypatch.setattr(dit_module, "_tuned_here", lambda h, w: True)

    def f(h):
        return dit_module.block_linear(h, lin) * 2

    h = torch.randn(2, 3, 8)
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(f)(h)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0)
        torch.testing.assert_close(torch.compile(f)(h), 2 * lin(h))


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
