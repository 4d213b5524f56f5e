"""Speed measures (SPEC 4): wall-clock, network calls, tokens/s, peak memory, FLOPs and MFU.

Quality and speed are reported together: the claim to test is "same gen-PPL at matched entropy with
fewer steps / less time". FLOPs are *model* FLOPs (the useful work of each forward pass), so MFU
= model FLOPs / (seconds · peak FLOP/s), as in PaLM (Chowdhery et al. 2022, App. B).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

__all__ = ["Timer", "SpeedReport", "peak_memory", "reset_peak_memory", "transformer_flops",
           "measure_matmul_peak", "mfu"]


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

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Timer:
        self._sync()  # don't charge queued work from before the block to it
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()  # kernels launched in the block must finish before we read the clock
        self.seconds = time.perf_counter() - self._start


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
