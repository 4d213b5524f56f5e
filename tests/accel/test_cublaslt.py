"""edlm.accel.cublaslt: the tuner behind ``ops.tuned_linear``. cuBLASLt itself runs on a GPU only; here the tuner's
choice rule runs against stand-in candidates whose reference is torch's own call."""

import ctypes

import pytest
import torch
import torch.nn.functional as F

from edlm.accel import cublaslt


def test_ctypes_structs_have_the_sizes_of_cublasLt_h():
    # cublasLtMatmulAlgo_t is uint64_t data[8]; the heuristic result adds size_t, cublasStatus_t, float, int[4]
    assert ctypes.sizeof(cublaslt._Algo) == 64
    assert ctypes.sizeof(cublaslt._Heuristic) == 96
    assert cublaslt.EPILOGUES == {"none": 1, "bias": 4, "gelu_bias": 36}


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
