"""edlm.accel.ops: each custom op against its plain-PyTorch reference on the CPU, and each stays one op under
torch.compile."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edlm.accel import cublaslt
from edlm.accel.ops import (
    OUTPUT_PAD_MULTIPLE,
    addmm_gelu,
    padded_linear,
    rotary_cos_sin,
    rotary_inv_freq,
    tuned_linear,
)


def _one_graph(f, *args) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    explained = torch._dynamo.explain(f)(*args)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_addmm_gelu_is_gelu_of_addmm():
    """GELU(bias + a·Wᵀ) through aten's ``_addmm_activation``. On CPU torch computes the erf GELU; cuBLASLt's epilogue
    on CUDA is the tanh form, which is why the blocks take this path on CUDA only."""
    g = torch.Generator().manual_seed(0)
    bias, a, w = torch.randn(6, generator=g), torch.randn(4, 5, generator=g), torch.randn(6, 5, generator=g)
    want = F.gelu(torch.addmm(bias, a, w.t()))
    torch.testing.assert_close(torch.ops.aten._addmm_activation.default(bias, a, w.t(), use_gelu=True), want)
    torch.testing.assert_close(addmm_gelu(bias, a, w.t()), want)


def test_addmm_gelu_stays_whole_under_compile():
    g = torch.Generator().manual_seed(1)
    bias, a, w = torch.randn(6, generator=g), torch.randn(4, 5, generator=g), torch.randn(6, 5, generator=g)

    def f(bias, a, w):
        return addmm_gelu(bias, a, w.t()) * 2

    _one_graph(f, bias, a, w)
    torch.testing.assert_close(torch.compile(f)(bias, a, w),
                               2 * torch.ops.aten._addmm_activation.default(bias, a, w.t(), use_gelu=True))


@pytest.mark.parametrize("epilogue", ["none", "bias", "gelu_bias"])
def test_tuned_linear_on_cpu_is_torchs_call(epilogue):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(5, 8, generator=g), torch.randn(6, 8, generator=g), torch.randn(6, generator=g)
    bias = None if epilogue == "none" else b
    want = {"none": F.linear(x, w), "bias": F.linear(x, w, b), "gelu_bias": F.gelu(F.linear(x, w, b))}[epilogue]
    torch.testing.assert_close(tuned_linear(x, w, bias, epilogue), want)
    torch.testing.assert_close(cublaslt.reference(x, w, bias, epilogue), want)


def test_tuned_linear_stays_one_op_under_compile():
    g = torch.Generator().manual_seed(2)
    x, w, b = torch.randn(5, 8, generator=g), torch.randn(6, 8, generator=g), torch.randn(6, generator=g)

    def f(x):
        return tuned_linear(x, w, b, "bias") * 2

    with torch.no_grad():
        _one_graph(f, x)
        torch.testing.assert_close(torch.compile(f)(x), 2 * F.linear(x, w, b))


def test_rotary_table_is_the_float32_angles_of_the_frequencies():
    positions = torch.arange(11, dtype=torch.float32)
    inv_freq = rotary_inv_freq(8, 10_000.0)
    assert inv_freq.dtype == torch.float32 and inv_freq.shape == (4,)
    torch.testing.assert_close(inv_freq.double(), 10_000.0 ** (-torch.arange(0, 8, 2).double() / 8), rtol=1e-6, atol=0)
    cos, sin = rotary_cos_sin(positions, 8, 10_000.0)
    angles = positions[:, None] * inv_freq[None]
    torch.testing.assert_close((cos, sin), (angles.cos(), angles.sin()), rtol=0, atol=0)


def test_rotary_table_stays_one_op_under_compile():
    def f(positions):
        cos, sin = rotary_cos_sin(positions, 8, 10_000.0)
        return cos * sin

    positions = torch.arange(7, dtype=torch.float32)
    _one_graph(f, positions)
    cos, sin = rotary_cos_sin(positions, 8, 10_000.0)
    torch.testing.assert_close(torch.compile(f)(positions), cos * sin)


def test_padded_linear_gives_the_plain_layers_output():
    """The output layer's GEMM, padded to OUTPUT_PAD_MULTIPLE columns on CUDA: same numbers, same shape, the same
    parameter (a bias passed in replaces the layer's)."""
    assert OUTPUT_PAD_MULTIPLE == 64
    torch.manual_seed(0)
    linear = nn.Linear(24, 37)
    h = torch.randn(3, 5, 24)
    got = padded_linear(h, linear)
    assert got.shape == (3, 5, 37) and linear.weight.shape == (37, 24)
    torch.testing.assert_close(got, linear(h), rtol=0, atol=1e-6)
    assert torch.equal(padded_linear(h, linear, 1), linear(h))  # multiple 1: the plain layer
    bias = torch.randn(37)
    torch.testing.assert_close(padded_linear(h, linear, bias=bias), F.linear(h, linear.weight, bias), rtol=0,
                               atol=1e-6)
