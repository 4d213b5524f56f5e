import math
import time

import pytest
import torch

from edlm.eval import SpeedReport, Timer, measure_matmul_peak, mfu, peak_memory, transformer_flops
from edlm.eval.speed import TimedCall, device_seconds, time_back_to_back, time_calls


def test_timer_measures_a_sleep():
    with Timer("cpu") as timer:
        time.sleep(0.2)
    assert 0.19 <= timer.seconds < 1.0  # generous: a loaded CI machine may oversleep
    assert math.isnan(Timer().seconds)  # nothing measured yet


def test_flops_worked_example():
    # N = 1000, 2 layers, hidden 8, context 4, 10 tokens:
    #   2N = 2000; attention 4·2·4·8 = 256; per token 2256; × 10 tokens = 22 560
    assert transformer_flops(1000, 2, 8, 4, 10) == 22_560
    # causal: each token attends to (4 + 1)/2 = 2.5 positions on average → 4·2·2.5·8 = 160
    assert transformer_flops(1000, 2, 8, 4, 10, causal=True) == 21_600
    # output layer 2·8·100 = 1600 more per token; training is 3 × forward
    assert transformer_flops(1000, 2, 8, 4, 10, vocab_size=100) == 38_560
    assert transformer_flops(1000, 2, 8, 4, 10, training=True) == 3 * 22_560
    # MDLM OWT small (12 layers, 768 wide, 12·768² weights per layer, L = 1024), one forward of
    # one sequence: N = 84 934 656; 2N = 169 869 312; attention 4·12·1024·768 = 37 748 736;
    # per token 207 618 048; × 1024 tokens = 212 600 881 152 ≈ 0.21 TFLOP.
    assert transformer_flops(12 * 12 * 768**2, 12, 768, 1024, 1024) == 212_600_881_152


def test_flops_formula_matches_torch_flop_counter():
    """The formula counts every matmul of a real GPT-2 forward (eager attention: full L×L scores)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import GPT2Config, GPT2LMHeadModel

    V, L, d, n_layers, B = 40, 12, 16, 2, 3
    cfg = GPT2Config(vocab_size=V, n_positions=L, n_embd=d, n_layer=n_layers, n_head=2,
                     bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    model = GPT2LMHeadModel(cfg).eval()
    N = n_layers * 12 * d * d  # QKV 3d², out proj d², MLP 8d² (biases are not FLOPs of matmuls)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randint(0, V, (B, L)))
    assert counter.get_total_flops() == transformer_flops(N, n_layers, d, L, B * L, vocab_size=V)


def test_mfu_and_report():
    assert mfu(1e12, 2.0, 1e12) == 0.5
    with pytest.raises(ValueError):
        mfu(1.0, 0.0, 1.0)
    rep = SpeedReport.from_run(seconds=4.0, num_samples=8, length=1024, nfe_denoiser=100, nfe_energy=10,
                               flops=2e12, peak_flops=1e12)
    assert rep.seconds_per_sample == 0.5 and rep.tokens_per_second == 2048.0
    assert rep.mfu == 0.5 and rep.nfe_denoiser == 100 and rep.nfe_energy == 10
    assert SpeedReport.from_run(1.0, 1, 16, 4).mfu is None  # no peak given: no MFU


def test_matmul_peak_and_memory_on_cpu():
    flops = measure_matmul_peak("cpu", n=128, iters=3)
    assert math.isfinite(flops) and flops > 1e6  # any machine does > 1 MFLOP/s
    assert peak_memory("cpu") is None  # no allocator peak off CUDA


def test_call_timers_on_cpu():
    calls = []

    def nap():
        calls.append(1)
        time.sleep(0.01)

    assert device_seconds(nap, "cpu") >= 0.009  # a sleep lasts at least as long as asked
    times = time_calls(nap, "cpu", warmup=2, repeats=3)
    assert len(times) == 3 and all(t >= 0.009 for t in times)
    assert time_back_to_back(nap, "cpu", warmup=1, calls=4) >= 0.009
    assert len(calls) == 1 + 5 + 5  # device_seconds, warm-ups and repeats, warm-up and calls
    with pytest.raises(ValueError):
        time_calls(nap, "cpu", repeats=0)


def test_timed_call_counts_sizes_and_forwards_attributes():
    class Net:
        vocab_size = 7

        def __call__(self, x):
            return x + 1

    timed = TimedCall(Net(), torch.device("cpu"))
    for n in (2, 2, 3):
        timed(torch.zeros(n, 4))
    assert timed.calls == 3 and timed.sizes == {2: 2, 3: 1} and timed.vocab_size == 7 and timed.seconds > 0
