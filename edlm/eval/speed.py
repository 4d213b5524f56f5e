"""Speed measures (SPEC 4): wall-clock and device timers, network calls, tokens/s, peak memory, FLOPs and MFU.

Quality and speed are reported together: the claim to test is "same gen-PPL at matched entropy with
fewer steps / less time". FLOPs are *model* FLOPs (the useful work of each forward pass), so MFU
= model FLOPs / (seconds · peak FLOP/s), as in PaLM (Chowdhery et al. 2022, App. B).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Timer", "SpeedReport", "peak_memory", "reset_peak_memory", "transformer_flops",
           "measure_matmul_peak", "mfu", "synchronize", "device_seconds", "time_calls", "time_back_to_back",
           "TimedCall"]


class Timer:
    """Wall-clock timer; on CUDA it synchronises before reading the clock at both ends.

    >>> with Timer("cuda") as timer:
    ...     out = generate(...)
    >>> timer.seconds
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.seconds: float = float("nan")  # set on exit
        self._start = 0.0

    def __enter__(self) -> Timer:
        synchronize(self.device)  # don't charge queued work from before the block to it
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)  # kernels launched in the block must finish before we read the clock
        self.seconds = time.perf_counter() - self._start


def synchronize(device: str | torch.device) -> None:
    """Wait for the work queued on a CUDA device; a no-op elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_seconds(block: Callable[[], object], device: str | torch.device) -> float:
    """Seconds that ``block()`` takes on ``device``: on CUDA, between two events recorded on the current
    stream around it (the kernels it queues, waited for at the end); elsewhere the host clock around the
    call."""
    device = torch.device(device)
    if device.type != "cuda":
        start = time.perf_counter()
        block()
        return time.perf_counter() - start
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    block()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def time_calls(fn: Callable[[], object], device: str | torch.device, warmup: int = 3,
               repeats: int = 10) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` (`device_seconds`, one at a time), after ``warmup`` calls.

    Each call starts on an idle device and is waited for, so its host-side preparation counts: the cost of one
    call made on its own."""
    if repeats <= 0 or warmup < 0:
        raise ValueError(f"need repeats > 0 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    for _ in range(warmup):
        fn()
    synchronize(device)
    return [device_seconds(fn, device) for _ in range(repeats)]


def time_back_to_back(fn: Callable[[], object], device: str | torch.device, warmup: int = 1,
                      calls: int = 10) -> float:
    """Seconds per call of ``calls`` calls of ``fn`` queued back to back (one `device_seconds` around all).

    No synchronisation between the calls, so the host prepares the next call while the device runs this one,
    as the sampling loop makes its energy calls; `time_calls` also counts each call's host-side
    preparation."""
    if calls <= 0 or warmup < 0:
        raise ValueError(f"need calls > 0 and warmup >= 0, got calls={calls}, warmup={warmup}.")
    for _ in range(warmup):
        fn()
    synchronize(device)

    def in_a_row() -> None:
        for _ in range(calls):
            fn()

    return device_seconds(in_a_row, device) / calls


class TimedCall:
    """A network callable that sums the time spent inside its calls and counts them by batch size.

    On CUDA it records an event on the current stream before and after each call and reads them after the run:
    no synchronisation, so the caller (the sampling loop) runs as with the bare network (its host queues work
    ahead of the device), and a call's time is the device's, from the stream reaching the call to its last
    kernel. Elsewhere it reads the host clock around each call. Other attributes (``vocab_size``,
    ``time_conditioned``, ``uses_log_p_x0``, ...) are the network's, so ``generate`` validates and caches as
    without the wrapper.
    """

    def __init__(self, fn, device: torch.device):
        self.fn, self.device = fn, device
        self.events = device.type == "cuda"
        self.calls = 0
        self.sizes: dict[int, int] = {}  # rows per call -> calls
        self._seconds = 0.0
        self._pairs: list = []

    def __call__(self, *args, **kwargs):
        n = args[0].shape[0]
        self.sizes[n] = self.sizes.get(n, 0) + 1
        self.calls += 1
        if not self.events:
            start = time.perf_counter()
            out = self.fn(*args, **kwargs)
            self._seconds += time.perf_counter() - start
            return out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.fn(*args, **kwargs)
        end.record()
        self._pairs.append((start, end))
        return out

    @property
    def seconds(self) -> float:
        """Seconds inside the calls so far (on CUDA: waits for the device, then reads the events)."""
        if self._pairs:
            synchronize(self.device)
            self._seconds += sum(a.elapsed_time(b) for a, b in self._pairs) / 1e3
            self._pairs = []
        return self._seconds

    def __getattr__(self, name):
        if name in ("fn", "_pairs", "_seconds"):  # not set yet (copy, pickle): no recursion through self.fn
            raise AttributeError(name)
        return getattr(self.fn, name)


@dataclass
class SpeedReport:
    """Speed of one generation run, reported beside its quality numbers."""

    seconds_per_sample: float  # wall-clock of the whole run / number of samples
    nfe_denoiser: int  # batched denoiser calls
    nfe_energy: int  # batched energy calls
    tokens_per_second: float  # generated tokens (samples × length) / wall-clock seconds
    peak_memory_bytes: int | None = None  # CUDA peak allocated memory; None on CPU
    flops: float | None = None  # model FLOPs of the run (transformer_flops summed over calls)
    mfu: float | None = None  # flops / (seconds · peak FLOP/s), in [0, 1]

    @classmethod
    def from_run(cls, seconds: float, num_samples: int, length: int, nfe_denoiser: int, nfe_energy: int = 0,
                 peak_memory_bytes: int | None = None, flops: float | None = None,
                 peak_flops: float | None = None) -> SpeedReport:
        """Build a report from the raw counts of one run (e.g. the fields of ``GenerateOutput``)."""
        if seconds <= 0 or num_samples <= 0:
            raise ValueError(f"need seconds > 0 and num_samples > 0, got {seconds}, {num_samples}.")
        util = mfu(flops, seconds, peak_flops) if (flops is not None and peak_flops) else None
        return cls(seconds_per_sample=seconds / num_samples, nfe_denoiser=nfe_denoiser, nfe_energy=nfe_energy,
                   tokens_per_second=num_samples * length / seconds, peak_memory_bytes=peak_memory_bytes,
                   flops=flops, mfu=util)


def reset_peak_memory(device: str | torch.device) -> None:
    """Start a new peak-memory window (CUDA only; a no-op elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str | torch.device) -> int | None:
    """Peak memory allocated by tensors on ``device`` since the last reset, in bytes; None off CUDA.

    (On CPU there is no allocator-level peak; process RSS would count the whole interpreter.)
    """
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def transformer_flops(n_params_non_embedding: int, n_layers: int, hidden: int, seq_len: int, tokens: int,
                      causal: bool = False, vocab_size: int = 0, training: bool = False) -> float:
    """Model FLOPs of transformer forward passes over ``tokens`` tokens (one multiply-add = 2 FLOPs).

    Forward, per token (Kaplan et al. 2020, Table 1; PaLM App. B):

        2·N                       the weight matmuls (N = non-embedding parameters: QKV, output
                                  projection, MLP); each weight is one multiply-add per token
      + 4·n_layers·seq_len·hidden attention: scores Q·Kᵀ (2·seq_len·hidden per layer) and the
                                  weighted sum of V (another 2·seq_len·hidden)
      + 2·hidden·vocab_size       the output (de-embedding) layer, if ``vocab_size`` is given

    total = tokens · (that sum). With ``causal`` each token attends to (seq_len + 1)/2 positions on
    average, so the attention term uses (seq_len + 1)/2 instead of seq_len. ``training`` counts
    forward + backward = 3 × forward. Norms, softmax and embeddings lookups are ignored (< 1%).

    Args:
        n_params_non_embedding: N.
        n_layers, hidden: depth and width (hidden = n_heads · head_dim).
        seq_len: the context each token attends over (the window length L of the denoiser).
        tokens: tokens processed in total, e.g. nfe · batch · L for a sampling run.
    """
    attended = (seq_len + 1) / 2 if causal else seq_len
    per_token = 2 * n_params_non_embedding + 4 * n_layers * attended * hidden + 2 * hidden * vocab_size
    return float(tokens) * per_token * (3 if training else 1)


def measure_matmul_peak(device: str | torch.device = "cuda", dtype: torch.dtype | None = None,
                        n: int | None = None, iters: int = 20) -> float:
    """Achievable matmul throughput on ``device``, in FLOP/s: times ``iters`` (n × n) @ (n × n) products.

    Only meaningful on CUDA (defaults there: bfloat16, n = 8192 — use it as the denominator of MFU
    next to the datasheet peak). On CPU the defaults are float32 and n = 512, just so it runs.
    """
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if on_cuda else torch.float32)
    n = n or (8192 if on_cuda else 512)
    if n <= 0 or iters <= 0:
        raise ValueError(f"need n > 0 and iters > 0, got n={n}, iters={iters}.")
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernel selection, clocks
        a @ b
    with Timer(device) as timer:
        for _ in range(iters):
            a @ b
    return 2.0 * n**3 * iters / timer.seconds


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOP utilisation: flops / (seconds · peak FLOP/s)."""
    if seconds <= 0 or peak <= 0:
        raise ValueError(f"need seconds > 0 and peak > 0, got seconds={seconds}, peak={peak}.")
    return flops / (seconds * peak)
