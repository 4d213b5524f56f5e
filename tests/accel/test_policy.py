"""edlm.accel.policy: each fast-path decision is read off the tensors' device and dtype."""

import torch

from edlm.accel.policy import fast_draw, half_cuda_inference, pads_output_gemm, reveals_on_side_stream


def test_half_cuda_inference_only_for_half_precision_no_grad_cuda_forwards(monkeypatch):
    w = torch.zeros(3, 4, dtype=torch.bfloat16)
    h = torch.zeros(2, 4, dtype=torch.bfloat16)
    with torch.no_grad():
        assert not half_cuda_inference(h, w)  # CPU
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: True))
    with torch.no_grad():
        assert half_cuda_inference(h, w) and half_cuda_inference(h) and half_cuda_inference(h.half(), w.half())
        assert not half_cuda_inference(h.float(), w.float())
        assert not half_cuda_inference(h, w.float())  # autocast: fp32 weights
    assert not half_cuda_inference(h, w)  # autograd on


def test_device_decisions_hold_on_cuda_devices_only(monkeypatch):
    for decide in (reveals_on_side_stream, fast_draw):
        assert decide(torch.device("cuda")) and decide(torch.device("cuda", 1))
        assert not decide(torch.device("cpu")) and not decide(torch.device("meta"))
    h = torch.zeros(2, 3)
    assert not pads_output_gemm(h)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: True))
    assert pads_output_gemm(h)
