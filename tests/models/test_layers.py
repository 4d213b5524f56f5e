"""edlm.models.layers: where a block's GEMMs and the output layer's GEMM take the fast path of edlm.accel (decided by
edlm.accel.policy; forced here on the CPU), they give the plain layers' output; the cached rotary table."""

import torch
from torch import nn

from edlm.accel.ops import rotary_cos_sin
from edlm.models import layers


def _block(seed=0):
    torch.manual_seed(seed)
    block = layers.DiTBlock(32, 4, 16, dropout=0.0).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return block


def test_block_routes_its_gemms_through_tuned_linear_with_the_same_output(monkeypatch):
    """Where `half_cuda_inference` holds (a CUDA half-precision no-grad forward; forced here on the CPU), the block's
    four GEMMs (QKV, attention out, MLP up with its GELU, MLP down) go through ``tuned_linear``, reshaped to 2-D and
    back."""
    block = _block()
    x, c = torch.randn(2, 8, 32), torch.randn(2, 16)
    cos, sin = layers.Rotary(8)(8, x.device)
    with torch.no_grad():
        want = block(x, (cos, sin), c)
        calls = []
        real = layers.tuned_linear

        def counting(h, w, bias, epilogue):
            calls.append((tuple(h.shape), tuple(w.shape), epilogue))
            return real(h, w, bias, epilogue)

        monkeypatch.setattr(layers, "half_cuda_inference", lambda h, weight=None: True)
        monkeypatch.setattr(layers, "tuned_linear", counting)
        got = block(x, (cos, sin), c)
    # on the CPU aten's GELU epilogue is the erf form, the layer's the tanh form (on CUDA both are tanh), so the
    # outputs agree to that difference only
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)
    assert not torch.equal(got, want)
    assert calls == [((16, 32), (96, 32), "none"), ((16, 32), (32, 32), "none"), ((16, 32), (128, 32), "gelu_bias"),
                     ((16, 128), (32, 128), "bias")]


def test_cpu_and_training_forwards_take_the_plain_layers(monkeypatch):
    block = _block()
    monkeypatch.setattr(layers, "tuned_linear", lambda *a: (_ for _ in ()).throw(AssertionError("tuned on CPU")))
    x, c = torch.randn(2, 8, 32, dtype=torch.bfloat16), torch.randn(2, 16, dtype=torch.bfloat16)
    rotary = layers.Rotary(8)(8, x.device)
    with torch.no_grad():
        block.to(torch.bfloat16)(x, rotary, c)
    block.float()(x.float(), rotary, c.float()).sum().backward()


def test_block_linear_stays_one_op_under_compile(monkeypatch):
    import torch._dynamo

    lin = nn.Linear(8, 6)
    monkeypatch.setattr(layers, "half_cuda_inference", lambda h, weight=None: True)

    def f(h):
        return layers.block_linear(h, lin) * 2

    h = torch.randn(2, 3, 8)
    torch._dynamo.reset()
    with torch.no_grad():
        explained = torch._dynamo.explain(f)(h)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0)
        torch.testing.assert_close(torch.compile(f)(h), 2 * lin(h))


def test_output_layer_pads_its_gemm_where_asked_and_gives_the_same_logits(monkeypatch):
    torch.manual_seed(0)
    final = layers.FinalLayer(16, 37, cond_dim=8)
    with torch.no_grad():
        for p in final.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    x, c = torch.randn(2, 5, 16), torch.randn(2, 8)
    with torch.no_grad():
        plain, plain_ex = final(x, c), final(x, c, exclude=4)
        widths = []
        real = layers.padded_linear
        monkeypatch.setattr(layers, "pads_output_gemm", lambda h: True)
        monkeypatch.setattr(layers, "padded_linear",
                            lambda h, lin, multiple, bias: widths.append(multiple) or real(h, lin, multiple, bias))
        padded, padded_ex = final(x, c), final(x, c, exclude=4)
    assert widths == [64, 64] and padded.shape == plain.shape == (2, 5, 37)
    torch.testing.assert_close(padded, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(padded_ex, plain_ex, rtol=0, atol=1e-6)
    assert torch.isneginf(padded_ex[..., 4]).all()


def test_rotary_table_is_the_ops_float32_table_and_follows_the_device():
    rot = layers.Rotary(8, max_len=16)
    want = rotary_cos_sin(torch.arange(16, dtype=torch.float32), 8, 10_000.0)
    cos, sin = rot(11, torch.device("cpu"))
    torch.testing.assert_close((cos, sin), (want[0][:11], want[1][:11]), rtol=0, atol=0)
    rot = rot.to(torch.bfloat16)  # casting the model must not coarsen positions
    cos, sin = rot(16, torch.device("cpu"))
    assert cos.dtype == sin.dtype == torch.float32
    torch.testing.assert_close((cos, sin), want, rtol=0, atol=0)
    longer = rot(20, torch.device("cpu"))  # beyond the table: computed per call
    torch.testing.assert_close(longer[0][:16], want[0], rtol=0, atol=0)
    assert longer[0].shape == (20, 4)
    rot = rot.to("meta")
    assert rot._table[0].device.type == "meta"
    assert list(layers.Rotary(8, max_len=16).state_dict()) == ["inv_freq"]  # the checkpoint layout is unchanged
