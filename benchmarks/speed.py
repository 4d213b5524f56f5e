"""Speed baseline of MDLM / EDLM sampling on one GPU (SPEC 4): forward calls and end-to-end ``generate``.

    python benchmarks/speed.py --out DIR            # MDLM-small shapes, random weights, on CUDA (~3-4 min on an H100)
    python benchmarks/speed.py --out DIR --tiny     # tiny shapes, a few steps: a CPU smoke test of this script

What it measures, in one process, so every number shares the card and its clocks:

1. Ceilings: bf16 matmul throughput (``edlm.eval.speed.measure_matmul_peak``) and device-to-device
   copy bandwidth (bytes read + written), the denominators of MFU and of the roofline floors.
2. Per-call forward time (CUDA events, warm-up, median of repeats) at B ∈ {1, 8, 32}, L = 1024:
   the DiT denoiser (raw logits, and the loop's full ``call_denoiser``: logits + SUBS + finite check),
   an ``ARTransformer`` of the same size (raw logits, and the ``AREnergy`` call), and ``NCEEnergy`` if
   importable. Model FLOPs from ``transformer_flops`` (weights + attention + output layer); MFU against
   the measured matmul peak.
3. Sampler pieces at B = 32: a plain ancestral step, the k-proposal draw of an IS step, and the
   (n·k, L, V+1) float32 copy of log_p_x0 that ``generate`` makes before chunking the energy calls.
4. End-to-end ``generate`` at B = 32, L = 1024: MDLM at 32 / 128 (/ 1024 if the time budget allows)
   steps; EDLM-AR (k ∈ {2, 8}, windows [0.8, 1] and [0, 1], 32 steps, then 128 / 1024 steps cheapest first as
   the time budget allows); EDLM-NCE (k = 8, [0, 1]).
   The denoiser and energy callables are wrapped in timers that synchronise, so "network" time is
   the networks' own GPU time and "overhead" = end-to-end − network (SUBS, finite checks, float64
   sampling, the log_p_x0 copies, syncs) — the loop's own cost.

Models are random-weight (std 0.02 everywhere, LayerNorm weights 1: never time zero weights) and cast
with ``.to(torch.bfloat16)`` (weights and activations bf16; the DiT's LayerNorm / rotary compute in
float32 internally); one extra row times the same DiT in float32 under ``torch.autocast(bfloat16)``.

Writes ``speed.json`` (all numbers, rewritten after each section so a killed run keeps what it has),
``speed.md`` (the tables) into ``--out`` and prints the tables last.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import platform
import statistics
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without `pip install`

from speed_report import fmt, render_markdown  # noqa: E402  (benchmarks/, the script's folder)

from edlm.diffusion import categorical  # noqa: E402
from edlm.diffusion.schedules import LogLinearSchedule  # noqa: E402
from edlm.diffusion.subs import SubsLogProbs, subs_log_probs  # noqa: E402
from edlm.energy.ar_energy import AREnergy  # noqa: E402
from edlm.eval.speed import (  # noqa: E402
    Timer,
    measure_matmul_peak,
    mfu,
    peak_memory,
    reset_peak_memory,
    transformer_flops,
)
from edlm.models import compile_networks, cublaslt, from_pretrained, load_denoiser, read_checkpoint_config  # noqa: E402
from edlm.models.ar import ARTransformer  # noqa: E402
from edlm.models.compiling import INFERENCE_OPTIONS  # noqa: E402
from edlm.models.dit import Denoiser, DiT, DiTBlock, FinalLayer  # noqa: E402
from edlm.samplers import loop as _loop  # noqa: E402
from edlm.samplers.importance import ImportanceSampler  # noqa: E402
from edlm.samplers.loop import generate  # noqa: E402

try:  # written by another helper; the NCE rows are skipped if it does not import
    from edlm.energy.nce_energy import NCEEnergy
except Exception as exc:  # noqa: BLE001 - any import failure means "skip NCE", reported in the output
    NCEEnergy = None
    NCE_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    NCE_IMPORT_ERROR = None

GiB = 2**30
T0 = time.perf_counter()
TIMERS = "events"  # how TimedCall times the loop's network calls: "events" or "sync" (--sync-timers)


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


# ----------------------------------------------------------------------------- configuration
@dataclass
class BenchConfig:
    """Shapes and sweep of one benchmark run; defaults = MDLM-small on OWT (Sahoo et al. 2024)."""

    vocab_size: int = 50258  # GPT-2's 50257 + [MASK] (V + 1 logits; mask_id = V)
    length: int = 1024  # L of MDLM-OWT
    hidden_size: int = 768
    n_blocks: int = 12
    n_heads: int = 12
    cond_dim: int = 128
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64)  # per-call forward rows (32 and 64: the issue's >= 32k tokens)
    e2e_batch: int = 32  # B of the end-to-end runs
    mdlm_steps: tuple[int, ...] = (32, 128)
    long_steps: int = 1024  # MDLM run added only if its estimated time fits the budget
    edlm_steps: int = 32
    edlm_long_steps: tuple[int, ...] = (128, 1024)  # EDLM-AR runs added, cheapest first, while their estimates fit
    ks: tuple[int, ...] = (2, 8)
    windows: tuple[tuple[float, float], ...] = ((0.8, 1.0), (0.0, 1.0))
    # sequences per energy call, by k: 32 = the 32 k tokens per call of the forward rows (since session 3 the
    # loop makes no (B·k, L, V+1) copy for AREnergy, so the AR's own logits are the only vocabulary-sized tensor)
    energy_batch_size: dict[int, int] = field(default_factory=lambda: {2: 32, 8: 32})
    nce_runs: tuple[tuple[int, tuple[float, float]], ...] = ((8, (0.0, 1.0)),)
    fwd_warmup: int = 3
    fwd_repeats: int = 10
    extra_runs: bool = True  # the repeat of the first MDLM run and EDLM-AR with the default energy chunks
    budget_s: float = 460.0  # whole-script target (the brief: <= 8 min on an H100); gates the optional parts

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1  # edlm convention: [MASK] is the last id

    @property
    def V(self) -> int:
        return self.vocab_size - 1  # real tokens


def quick_config() -> BenchConfig:
    """One batch size (32) and the runs the issue's targets name: MDLM T=128 and EDLM-AR k=8 over [0, 1]."""
    return BenchConfig(batch_sizes=[32], mdlm_steps=[128], ks=[8], windows=[[0.0, 1.0]], nce_runs=[[8, [0.0, 1.0]]],
                       extra_runs=False)


def shipped_config(directory: str, quick: bool) -> BenchConfig:
    """Shapes of a shipped model set (e.g. edlm/assets/wikipedia_en), batches of ~32 k tokens as for MDLM-small."""
    c = read_checkpoint_config(Path(directory) / "mdlm")["config"]
    per_call = max(1, 32768 // c["length"])  # B · L = 32 k tokens, the issue's per-call size
    base = quick_config() if quick else BenchConfig()
    return replace(base, vocab_size=c["vocab_size"], length=c["length"], hidden_size=c["hidden_size"],
                   n_blocks=c["n_blocks"], n_heads=c["n_heads"], cond_dim=c["cond_dim"],
                   batch_sizes=sorted({32, per_call}), e2e_batch=per_call,
                   energy_batch_size={k: per_call for k in (2, 4, 8)})


def tiny_config() -> BenchConfig:
    return BenchConfig(vocab_size=258, length=64, hidden_size=64, n_blocks=2, n_heads=2, cond_dim=32,
                       batch_sizes=(1, 2, 4), e2e_batch=4, mdlm_steps=(4, 8), long_steps=32, edlm_steps=4,
                       edlm_long_steps=(8,),
                       energy_batch_size={2: 4, 8: 2}, fwd_warmup=1, fwd_repeats=3, budget_s=120.0)


# ----------------------------------------------------------------------------- helpers
def randomize_(model: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """Random weights everywhere except LayerNorm scales (kept at 1): no zero matmuls (adaLN-Zero and
    the zero output layer of a fresh DiT would time faster than real weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 or name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def non_embedding_params(model: torch.nn.Module) -> int:
    """N of ``transformer_flops``: per-token weight matmuls in the blocks (QKV, out, MLP) and, for the
    NCE energy, its (2H -> H) input projection. adaLN maps act once per sequence, not per token, and the
    output layer is counted separately through ``vocab_size``."""
    n = 0
    for block in model.blocks:
        for mod in (block.attn_qkv, block.attn_out, block.mlp):
            n += sum(p.numel() for p in mod.parameters())
    if hasattr(model, "input_proj"):
        n += sum(p.numel() for p in model.input_proj.parameters())
    return n


def flops_per_token(model: torch.nn.Module, cfg: BenchConfig, causal: bool, output_layer: bool) -> float:
    return transformer_flops(non_embedding_params(model), model.n_blocks, model.hidden_size, cfg.length,
                             tokens=1, causal=causal, vocab_size=cfg.vocab_size if output_layer else 0)


def default_energy_chunk(cfg: BenchConfig) -> int:
    """Sequences per energy call when ``energy_batch_size`` is None: generate keeps one chunk's
    (chunk, L, V+1) fp32 copy of log_p_x0 under ``_LOGP_CHUNK_BYTES`` (2 GiB)."""
    limit = getattr(_loop, "_LOGP_CHUNK_BYTES", None)
    per_seq = cfg.length * cfg.vocab_size * 4
    n = cfg.e2e_batch * max(cfg.ks)
    return max(1, min(n, limit // per_seq)) if limit else n


def run_name(method: str, k: int, window, steps: int) -> str:
    """An EDLM row's name in speed.json / speed.md, e.g. "EDLM-AR k=8 [0,1] T=32"."""
    return f"{method} k={k} [{window[0]:g},{window[1]:g}] T={steps}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _elapsed(block, device: torch.device) -> float:
    """Seconds that ``block()`` takes: CUDA events around it on GPU (waiting for its kernels), the host clock on CPU."""
    if device.type != "cuda":
        t = time.perf_counter()
        block()
        return time.perf_counter() - t
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    block()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def time_call(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls after ``warmup`` calls; CUDA events on GPU."""
    for _ in range(warmup):
        fn()
    sync(device)
    return [_elapsed(fn, device) for _ in range(repeats)]


def time_stream(fn, device: torch.device, warmup: int, calls: int) -> float:
    """Seconds per call of ``calls`` calls made back to back (events around all of them): how the loop calls
    its energy chunks, with no sync between them, so the host's dispatch of a call overlaps the previous
    call's kernels. ``time_call`` syncs around each call and so also counts each call's host prelude."""
    for _ in range(warmup):
        fn()
    sync(device)

    def calls_in_a_row():
        for _ in range(calls):
            fn()

    return _elapsed(calls_in_a_row, device) / calls


def free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def gib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / GiB


class TimedCall:
    """Wraps a network callable and sums the seconds spent inside its calls.

    ``TIMERS = "events"`` (the default since session 11): CUDA events on the stream before and after each call, read
    after the run. No host sync, so the loop runs as with the bare network (its host queues work ahead of the GPU),
    and a call's time is the GPU's time from the stream reaching the call to the call's last kernel: queued sampler
    work is outside it, host-bound stretches inside the call are inside it. ``"sync"`` (sessions 1–10): synchronise
    before and after each call and time on the host; the sync before keeps queued sampler work out of the
    network's time, the sync after makes its kernels finish inside it, and each sync stops the host from running
    ahead. On a CPU both are the host clock. Other attributes (``vocab_size``, ``length``, ``time_conditioned``, ...)
    are forwarded, so ``generate`` validates and caches as without the wrapper.
    """

    def __init__(self, fn, device: torch.device):
        self.fn = fn
        self.device = device
        self.events = device.type == "cuda" and TIMERS == "events"
        self._seconds = 0.0
        self._pairs: list = []
        self.calls = 0
        self.sizes: dict[int, int] = {}  # rows per call -> calls (for the "measured alone" sum)

    def __call__(self, *args, **kwargs):
        n = args[0].shape[0]
        self.sizes[n] = self.sizes.get(n, 0) + 1
        self.calls += 1
        if self.events:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            out = self.fn(*args, **kwargs)
            b.record()
            self._pairs.append((a, b))
            return out
        sync(self.device)
        t = time.perf_counter()
        out = self.fn(*args, **kwargs)
        sync(self.device)
        self._seconds += time.perf_counter() - t
        return out

    @property
    def seconds(self) -> float:
        if self._pairs:
            sync(self.device)
            self._seconds += sum(a.elapsed_time(b) for a, b in self._pairs) / 1e3
            self._pairs = []
        return self._seconds

    def __getattr__(self, name):
        if name in ("fn", "_pairs", "_seconds"):
            raise AttributeError(name)
        return getattr(self.fn, name)


class TimedAR:
    """An AR model for ``AREnergy`` whose scoring forward (transformer + log-softmax at the tokens, one
    call since the fused ``forward(x, score=True)``) is timed on its own; the rest of the energy call
    (the x_θ gather, float64 sums) is energy time minus this."""

    def __init__(self, model: ARTransformer, device: torch.device):
        self.forward = TimedCall(model, device)
        self.vocab_size = model.vocab_size

    @property
    def _compiled_call_impl(self):  # what edlm.models.compiling.is_compiled looks for
        return getattr(self.forward.fn, "_compiled_call_impl", None)

    def token_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x, score=True)  # == ARTransformer.token_log_probs


def check_finite(x: torch.Tensor) -> None:
    """The NaN check the loop made on its full log_p_x0 until session 3 (one sum over (B, L, V+1)); the lazy
    SUBS now checks only the rows it normalises, inside ``SubsLogProbs``."""
    if torch.isnan(x.sum()):
        raise FloatingPointError("NaN in log-probs")


# ----------------------------------------------------------------------------- the benchmark
class Bench:
    def __init__(self, cfg: BenchConfig, device: torch.device, out_dir: Path, meta: dict):
        self.cfg, self.device, self.out_dir = cfg, device, out_dir
        self.results: dict = {"meta": meta, "ceilings": {}, "roofline": {}, "forward": [], "pieces": [],
                              "e2e": [], "errors": []}
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.peak = None
        self.bandwidth = None

    # ------------------------------------------------------------------ bookkeeping
    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = round(time.perf_counter() - T0, 1)
        self.results["meta"]["tuned_gemm_picks"] = cublaslt.picks()
        (self.out_dir / "speed.json").write_text(json.dumps(self.results, indent=2))
        (self.out_dir / "speed.md").write_text(render_markdown(self.results))

    def error(self, where: str, exc: BaseException) -> None:
        msg = f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log("ERROR " + msg)
        traceback.print_exc()
        self.results["errors"].append(msg)
        free(self.device)

    def remaining(self) -> float:
        return self.cfg.budget_s - (time.perf_counter() - T0)

    # ------------------------------------------------------------------ models
    def load_shipped(self, directory: str) -> None:
        """Replace the random weights by those of a shipped model set (same shapes: see `shipped_config`)."""
        root = Path(directory)
        self.denoiser.backbone.load_state_dict(load_denoiser(root / "mdlm").backbone.state_dict())
        self.ar.load_state_dict(from_pretrained(root / "ar", expected_type="ar").state_dict())
        if self.nce is not None and (root / "nce").is_dir():
            self.nce.load_state_dict(from_pretrained(root / "nce").state_dict())
        self.results["models"]["weights"] = f"shipped: {root}"
        log(f"weights loaded from {root}")

    def build_models(self) -> None:
        cfg, dev = self.cfg, self.device
        dit = randomize_(DiT(cfg.vocab_size, cfg.length, cfg.hidden_size, cfg.n_blocks, cfg.n_heads, cfg.cond_dim,
                             dropout=0.0), seed=0)
        self.dit_fp32 = dit.to(dev).eval() if dev.type == "cuda" else None  # for the autocast row
        self.denoiser = Denoiser(randomize_(DiT(cfg.vocab_size, cfg.length, cfg.hidden_size, cfg.n_blocks,
                                                cfg.n_heads, cfg.cond_dim, dropout=0.0), seed=0),
                                 LogLinearSchedule(), cfg.mask_id).to(dev, self.dtype).eval()
        self.ar = randomize_(ARTransformer(cfg.vocab_size, cfg.length, cfg.hidden_size, cfg.n_blocks, cfg.n_heads,
                                           dropout=0.0, mask_id=cfg.mask_id), seed=1).to(dev, self.dtype).eval()
        self.nce = None
        if NCEEnergy is not None:
            try:
                self.nce = randomize_(NCEEnergy(cfg.vocab_size, cfg.length, cfg.hidden_size, cfg.n_blocks,
                                                cfg.n_heads, cfg.cond_dim, dropout=0.0, mask_id=cfg.mask_id),
                                      seed=2).to(dev, self.dtype).eval()
            except Exception as exc:  # noqa: BLE001
                self.error("build NCEEnergy", exc)
        else:
            log(f"NCEEnergy not importable ({NCE_IMPORT_ERROR}); NCE rows skipped")
        backbone = self.denoiser.backbone
        self.fpt = {
            "dit": flops_per_token(backbone, cfg, causal=False, output_layer=True),
            "ar": flops_per_token(self.ar, cfg, causal=True, output_layer=True),
        }
        if self.nce is not None:
            self.fpt["nce"] = flops_per_token(self.nce, cfg, causal=False, output_layer=False)
        self.results["models"] = {
            "dtype": "bf16 via .to(torch.bfloat16) (weights + activations)" if dev.type == "cuda" else "float32 (CPU)",
            "weights": "random, std 0.02, LayerNorm scales 1",
            "dit_params": sum(p.numel() for p in backbone.parameters()),
            "dit_non_embedding_params": non_embedding_params(backbone),
            "ar_params": sum(p.numel() for p in self.ar.parameters()),
            "nce_params": None if self.nce is None else sum(p.numel() for p in self.nce.parameters()),
            "nce_import_error": NCE_IMPORT_ERROR,
            "flops_per_token": self.fpt,
            "attention": "flash_attn" if importlib.util.find_spec("flash_attn") else "torch SDPA",
        }

    def compile_models(self, mode: str | None = None, options: dict | None = None, freeze: bool = True,
                       cuda_graphs: bool = True) -> None:
        """``nn.Module.compile`` in place, as `edlm.pipeline.compile_networks` does for `edlm sample --compile`
        (``freeze``: inductor's freezing, the weights as graph constants; nothing here changes them after compiling).
        Static shapes: each batch size of the forward rows compiles once, so allow more than torch's 8.
        ``cuda_graphs``: calls with small outputs (the energies' scores, the AR's with ``score=True``) replay a CUDA
        graph, as in `edlm sample --compile`; logits do not."""
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 64)
        compile_networks(self.denoiser, self.ar, self.nce, mode=mode, options=options, freeze=freeze,
                         cuda_graphs=cuda_graphs)
        log("networks compiled in place (first calls of each shape compile; the warm-up repeats absorb it)")

    # ------------------------------------------------------------------ 1. ceilings
    def ceilings(self) -> None:
        dev = self.device
        log("ceilings: bf16 matmul peak, copy bandwidth")
        self.peak = measure_matmul_peak(dev)
        self.peak = max(self.peak, measure_matmul_peak(dev))  # second pass: clocks up
        n = (1 * GiB if dev.type == "cuda" else 64 * 2**20) // 2
        src = torch.randn(n, device=dev, dtype=torch.bfloat16)
        dst = torch.empty_like(src)
        t = statistics.median(time_call(partial(dst.copy_, src), dev, 3, 20))
        self.bandwidth = 2 * src.numel() * src.element_size() / t
        src = dst = None
        self.results["ceilings"] = {
            "matmul_peak_tflops": self.peak / 1e12,
            "matmul": "bf16 8192^3 (measure_matmul_peak, best of 2)" if dev.type == "cuda" else "fp32 512^3",
            "copy_bandwidth_tbs": self.bandwidth / 1e12,
            "copy": "1 GiB device-to-device copy_, read + written bytes, median of 20",
        }
        log(f"  matmul peak {self.peak / 1e12:.0f} TFLOP/s, copy {self.bandwidth / 1e12:.2f} TB/s")
        self.save()

    # ------------------------------------------------------------------ 2. forward calls
    def _row(self, model: str, what: str, B: int, times: list[float], flops: float | None, extra=None,
             stream=None) -> dict:
        """One forward row; ``stream`` (a callable) is also timed back to back (``time_stream``)."""
        t = statistics.median(times)
        row = {"model": model, "what": what, "B": B, "ms": t * 1e3, "ms_min": min(times) * 1e3,
               "ms_max": max(times) * 1e3, "repeats": len(times), "tokens_per_s": B * self.cfg.length / t,
               "gflop": None if flops is None else flops / 1e9,
               "mfu": None if flops is None else mfu(flops, t, self.peak)}
        if stream is not None:
            ts = time_stream(stream, self.device, 1, self.cfg.fwd_repeats)
            row["ms_stream"] = ts * 1e3
            row["mfu_stream"] = None if flops is None else mfu(flops, ts, self.peak)
        if extra:
            row.update(extra)
        self.results["forward"].append(row)
        log(f"  {model:8s} {what:34s} B={B:3d} {t * 1e3:9.2f} ms  "
            + ("" if flops is None else f"MFU {row['mfu'] * 100:5.1f}%")
            + ("" if row.get("mfu_stream") is None else
               f"   back to back {row['ms_stream']:.2f} ms, MFU {row['mfu_stream'] * 100:5.1f}%"))
        return row

    @torch.no_grad()
    def forward_rows(self) -> None:
        log("per-call forward times")
        for B in self.cfg.batch_sizes:
            try:
                self._forward_at(B)
            except Exception as exc:  # noqa: BLE001 - keep the other rows
                self.error(f"forward B={B}", exc)
            free(self.device)
            self.save()
        self.results["roofline"] = self.roofline()
        self.save()

    def _forward_at(self, B: int) -> None:
        cfg, dev = self.cfg, self.device
        L, w, r = cfg.length, cfg.fwd_warmup, cfg.fwd_repeats
        tokens = B * L
        g = torch.Generator(device=dev).manual_seed(B)
        x_0 = torch.randint(0, cfg.V, (B, L), device=dev, generator=g)
        masked = torch.rand((B, L), device=dev, generator=g) < 0.5
        x_t = torch.where(masked, torch.full_like(x_0, cfg.mask_id), x_0)  # half masked, as mid-trajectory
        t = torch.full((B,), 0.5, device=dev)
        den = partial(self.denoiser, x_t, t)
        self._row("DiT", "denoiser fwd (logits)", B, time_call(den, dev, w, r), self.fpt["dit"] * tokens, stream=den)

        reveal = torch.rand((B, L), device=dev, generator=g) < 1 / 128  # a plain T = 128 step reveals ~L/T per row
        reveal &= masked

        def call_denoiser():  # what generate's call_denoiser and a plain step read per NFE since session 3
            return SubsLogProbs(self.denoiser(x_t, t), x_t, cfg.mask_id)[reveal]

        self._row("DiT", "fwd + lazy SUBS of a T=128 step's rows (loop)", B, time_call(call_denoiser, dev, w, r),
                  self.fpt["dit"] * tokens)
        logits = self.denoiser(x_t, t)
        self._row("DiT", "lazy SUBS, rows of a T=128 step", B,
                  time_call(lambda: SubsLogProbs(logits, x_t, cfg.mask_id)[reveal], dev, w, r), None)
        self._row("DiT", "lazy SUBS, all masked rows (an IS step)", B,
                  time_call(lambda: SubsLogProbs(logits, x_t, cfg.mask_id)[masked], dev, w, r), None)
        self._row("DiT", "full SUBS (subs_log_probs, the loop before session 3)", B,
                  time_call(lambda: subs_log_probs(logits, x_t, cfg.mask_id), dev, w, r), None,
                  {"bytes_out_fp32": logits.numel() * 4})
        lp = SubsLogProbs(logits, x_t, cfg.mask_id)  # what AREnergy gets in the loop: a lazy view ...
        lp[masked]  # ... whose masked rows the proposal draw has normalised
        if B == max(cfg.batch_sizes) and self.dit_fp32 is not None:
            sigma = torch.zeros(B, device=dev)

            def autocast_fwd():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return self.dit_fp32(x_t, sigma)

            self._row("DiT", "fp32 weights + autocast(bf16) fwd", B, time_call(autocast_fwd, dev, w, r),
                      self.fpt["dit"] * tokens)
        self._row("AR", "AR fwd (logits)", B, time_call(lambda: self.ar(x_0), dev, w, r), self.fpt["ar"] * tokens,
                  stream=lambda: self.ar(x_0))
        energy = AREnergy(self.ar, cfg.mask_id)
        self._row("AR", "AREnergy call (fwd+logsoftmax+gather)", B,
                  time_call(lambda: energy(x_0, x_t, t, lp), dev, w, r), self.fpt["ar"] * tokens,
                  stream=lambda: energy(x_0, x_t, t, lp))
        if self.nce is not None:
            nce = partial(self.nce, x_0, x_t, t)
            self._row("NCE", "NCEEnergy fwd", B, time_call(nce, dev, w, r), self.fpt["nce"] * tokens, stream=nce)

    def roofline(self) -> dict:
        """The two numbers of one denoiser call at the e2e batch: FLOPs and the fewest bytes it must move."""
        cfg = self.cfg
        B, L = cfg.e2e_batch, cfg.length
        flops = self.fpt["dit"] * B * L
        weight_bytes = sum(p.numel() * p.element_size() for p in self.denoiser.parameters())
        logits_bytes = B * L * cfg.vocab_size * 2  # bf16 logits written once
        lp_bytes = B * L * cfg.vocab_size * 4  # the loop's fp32 log_p_x0 (the denoiser interface's output)
        fwd_floor_bytes = weight_bytes + B * L * 8 + logits_bytes
        loop_floor_bytes = weight_bytes + B * L * 8 + lp_bytes  # fused fwd+SUBS writing fp32 log-probs once
        return {
            "B": B, "L": L, "flops": flops, "weight_bytes": weight_bytes,
            "min_bytes_fwd_bf16_logits": fwd_floor_bytes, "min_bytes_fwd_fp32_logprobs": loop_floor_bytes,
            "t_compute_ms": flops / self.peak * 1e3,
            "t_memory_fwd_ms": fwd_floor_bytes / self.bandwidth * 1e3,
            "t_memory_fp32_logprobs_ms": loop_floor_bytes / self.bandwidth * 1e3,
            "floor_ms": max(flops / self.peak, loop_floor_bytes / self.bandwidth) * 1e3,
            "bound": "compute" if flops / self.peak > loop_floor_bytes / self.bandwidth else "memory",
        }

    # ------------------------------------------------------------------ 3. sampler pieces
    @torch.no_grad()
    def pieces(self) -> None:
        log("sampler pieces at the e2e batch")
        try:
            self._pieces()
        except Exception as exc:  # noqa: BLE001
            self.error("pieces", exc)
        free(self.device)
        self.save()

    def _piece(self, what: str, times: list[float], extra: dict | None = None) -> None:
        row = {"what": what, "B": self.cfg.e2e_batch, "ms": statistics.median(times) * 1e3, "repeats": len(times)}
        row.update(extra or {})
        self.results["pieces"].append(row)
        log(f"  {what:66s} {row['ms']:9.2f} ms")

    def _pieces(self) -> None:
        cfg, dev = self.cfg, self.device
        B, L = cfg.e2e_batch, cfg.length
        g = torch.Generator(device=dev).manual_seed(0)
        x = torch.full((B, L), cfg.mask_id, device=dev, dtype=torch.long)  # t = 1: all masked
        log_p_x0 = SubsLogProbs(self.denoiser(x, torch.ones(B, device=dev)), x, cfg.mask_id)  # as the loop holds it
        T = cfg.edlm_steps
        ts = torch.linspace(1.0, 1e-5, T + 1, dtype=torch.float64, device=dev)
        plain = ImportanceSampler(cfg.mask_id, k=1)
        self._piece(f"plain ancestral step, first of T={T} (all masked)",
                    time_call(lambda: plain.step(log_p_x0, x, ts[0], ts[1], g), dev, 1, 5))
        lp_bytes = B * L * cfg.vocab_size * 4  # one (B, L, V+1) fp32 log_p_x0
        for k in cfg.ks:
            sampler = ImportanceSampler(cfg.mask_id, k=k)
            self._piece(f"IS propose_step k={k} (float64 draw at all {B * L} masked positions)",
                        time_call(partial(sampler.propose_step, log_p_x0, x, ts[0], ts[1], g), dev, 1, 3))
            free(dev)
            dense = log_p_x0.dense()  # what an energy that reads log_p_x0 as a tensor costs (AREnergy does not)
            for chunk in sorted({cfg.energy_batch_size.get(k) or B * k, default_energy_chunk(cfg)}):
                self._copy_piece(dense, k, chunk, lp_bytes)
            dense = None

    def _copy_piece(self, log_p_x0: torch.Tensor, k: int, chunk: int, lp_bytes: int) -> None:
        """The log_p_x0 copies of one IS step in ``generate`` (since 3c54289): ``lp_rows = log_p_x0[rows]``,
        then ``lp_rows[rows_of]`` — a (chunk, L, V+1) fp32 gather — before each energy call."""
        dev, B = self.device, self.cfg.e2e_batch
        rows = torch.arange(B, device=dev)  # every row active, as in the e2e runs
        n = B * k
        chunks = [torch.arange(i, min(i + chunk, n), device=dev) // k for i in range(0, n, chunk)]

        def copies():
            lp_rows = log_p_x0[rows]  # (B, L, V+1)
            for rows_of in chunks:
                lp_rows[rows_of]  # (chunk, L, V+1), consumed by the energy call, then freed

        free(dev)
        reset_peak_memory(dev)
        base = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
        times = time_call(copies, dev, 1, 3)
        written = lp_bytes + n * lp_bytes // B
        moved = 2 * written  # each copy reads what it writes
        self._piece(f"loop's log_p_x0 copies per IS step, k={k}, energy chunk {chunk} ({len(chunks)} calls)", times,
                    {"k": k, "chunk": chunk, "calls": len(chunks), "gib_written": written / GiB,
                     "ms_per_call": statistics.median(times) * 1e3 / len(chunks),
                     "peak_extra_gib": gib(peak_memory(dev) - base) if dev.type == "cuda" else None,
                     "achieved_tbs": moved / statistics.median(times) / 1e12})
        free(dev)

    # ------------------------------------------------------------------ 4. end to end
    @torch.no_grad()
    def e2e(self, name: str, steps: int, energy_kind: str | None = None, k: int = 1,
            window: tuple[float, float] = (0.0, 1.0), ebs: int | None = None, record: bool = True,
            plain: bool = True) -> dict | None:
        """One end-to-end run with timed networks and, if ``plain``, the same run with the bare networks."""
        cfg, dev = self.cfg, self.device
        B, L = cfg.e2e_batch, cfg.length
        den = TimedCall(self.denoiser, dev)
        ar_timed = None
        energy = None
        if energy_kind == "ar":
            ar_timed = TimedAR(self.ar, dev)
            energy = TimedCall(AREnergy(ar_timed, cfg.mask_id), dev)
        elif energy_kind == "nce":
            energy = TimedCall(self.nce, dev)
        free(dev)
        reset_peak_memory(dev)
        try:
            out, secs = self._generate(den, energy, steps, k, window, ebs)
        except Exception as exc:  # noqa: BLE001 - OOM included: record and go on
            self.error(f"e2e {name}", exc)
            if record:
                self.results["e2e"].append({"name": name, "steps": steps, "k": k, "window": list(window),
                                            "energy_batch_size": ebs, "error": f"{type(exc).__name__}"})
                self.save()
            return None
        bare = (self._plain_run(steps, energy_kind, k, window, ebs, out.tokens) if plain and record
                else {"seconds": None, "same_tokens": None})
        alone = sum(c * self.alone_ms("dit", n) for n, c in den.sizes.items()) / 1e3
        if energy_kind is not None:
            alone += sum(c * self.alone_ms(energy_kind, n) for n, c in energy.sizes.items()) / 1e3
        net_den = den.seconds
        net_en = energy.seconds if energy is not None else 0.0
        overhead = secs - net_den - net_en
        flops = out.nfe_denoiser * self.fpt["dit"] * B * L
        if energy_kind is not None:
            flops += out.energy_evals * L * self.fpt[energy_kind]
        row = {
            "name": name, "steps": steps, "energy": energy_kind, "k": k,
            "window": list(window) if energy_kind else None,
            "energy_batch_size": (ebs or f"default ({default_energy_chunk(cfg)})") if energy_kind else None,
            "B": B, "L": L, "seconds": secs, "seconds_per_sample": secs / B, "tokens_per_s": B * L / secs,
            "nfe_denoiser": out.nfe_denoiser, "nfe_energy_chunks": out.nfe_energy, "energy_seqs": out.energy_evals,
            "is_steps": out.is_steps, "mean_ess": statistics.fmean(out.ess) if out.ess else None,
            "net_denoiser_s": net_den, "net_energy_s": net_en,
            "ar_forward_s": ar_timed.forward.seconds if ar_timed else None,
            "overhead_s": overhead, "overhead_pct": 100 * overhead / secs,
            "alone_s": alone, "over_alone_instrumented": secs / alone,
            # the cost a user sees: the same run without the timers' syncs around every network call
            "seconds_plain": bare["seconds"], "plain_same_tokens": bare["same_tokens"],
            "over_alone": (bare["seconds"] or secs) / alone,
            "overhead_per_denoiser_call_ms": 1e3 * overhead / max(out.nfe_denoiser, 1),
            "peak_gib": gib(peak_memory(dev)), "model_tflop": flops / 1e12, "mfu": mfu(flops, secs, self.peak),
            "floor_s": flops / self.peak, "measured_over_floor": secs / (flops / self.peak),
        }
        if record:
            self.results["e2e"].append(row)
            self.save()
        log(f"  {name:34s} {secs:8.2f} s (plain {fmt(bare['seconds'], '.2f')} s, x alone {row['over_alone']:.3f})  "
            f"{secs / B * 1e3:8.1f} ms/sample  NFE {out.nfe_denoiser}/{out.nfe_energy}  "
            f"net {net_den:.2f}+{net_en:.2f} s  overhead {row['overhead_pct']:.0f}%  "
            f"peak {row['peak_gib'] or 0:.1f} GiB  MFU {row['mfu'] * 100:.1f}%")
        return row

    def _generate(self, denoiser, energy, steps, k, window, ebs):
        """One ``generate`` of the end-to-end batch from the fixed seed: its output and its seconds."""
        cfg, dev = self.cfg, self.device
        gen = torch.Generator(device=dev).manual_seed(1234)
        with Timer(dev) as timer:
            out = generate(denoiser, cfg.length, cfg.e2e_batch, cfg.V, cfg.mask_id, steps, energy=energy, k=k,
                           window=window, generator=gen, energy_batch_size=ebs, device=dev)
        return out, timer.seconds

    def _plain_run(self, steps, energy_kind, k, window, ebs, tokens) -> dict:
        """The run again with the bare networks (no timers, so no sync around each call) and the same seed:
        its seconds, and whether it drew the same tokens as the timed run."""
        energy = {"ar": lambda: AREnergy(self.ar, self.cfg.mask_id), "nce": lambda: self.nce}.get(
            energy_kind, lambda: None)()
        try:
            out, secs = self._generate(self.denoiser, energy, steps, k, window, ebs)
        except Exception as exc:  # noqa: BLE001
            self.error("plain e2e run", exc)
            return {"seconds": None, "same_tokens": None}
        return {"seconds": secs, "same_tokens": bool(torch.equal(out.tokens, tokens))}

    @torch.no_grad()
    def alone_ms(self, kind: str, n: int) -> float:
        """Median time of one network call as the loop makes it, measured on its own: the denoiser at n rows,
        or the energy at a chunk of n proposals (half-masked inputs; AREnergy reads a lazy x_θ view)."""
        cache = self.__dict__.setdefault("_alone", {})
        if (kind, n) not in cache:
            cfg, dev = self.cfg, self.device
            x_t, t = self._inputs(n)
            x_0 = torch.where(x_t == cfg.mask_id, torch.randint_like(x_t, cfg.V), x_t)
            if kind == "dit":
                fn = partial(self.denoiser, x_t, t)
            elif kind == "ar":
                lp = SubsLogProbs(self.denoiser(x_t, t), x_t, cfg.mask_id)
                lp.sample(x_t == cfg.mask_id, torch.rand(n * cfg.length, device=dev, dtype=torch.float64)[
                    : int((x_t == cfg.mask_id).sum())])  # the draw normalises the masked rows, as in a step
                fn = partial(AREnergy(self.ar, cfg.mask_id), x_0, x_t, t, lp)
            else:
                fn = partial(self.nce, x_0, x_t, t)
            cache[(kind, n)] = statistics.median(time_call(fn, dev, 2, 5)) * 1e3
        return cache[(kind, n)]

    def end_to_end(self) -> None:
        cfg = self.cfg
        log(f"end-to-end generate, B={cfg.e2e_batch}, L={cfg.length}")
        self._warm_up()
        if cfg.extra_runs:  # the default-chunk run's chunk shape, likewise
            self.e2e("warm-up EDLM-AR, default chunks", self._warm_steps(), "ar", k=max(cfg.ks), window=(0.0, 1.0),
                     ebs=None, record=False)
        if self.nce is not None:  # a compiled NCE energy compiles its chunk shape here, not inside the timed run
            for k, _ in cfg.nce_runs:
                self.e2e("warm-up EDLM-NCE", self._warm_steps(), "nce", k=k, window=(0.0, 1.0),
                         ebs=cfg.energy_batch_size.get(k), record=False)
        first = cfg.mdlm_steps[0]
        self.e2e(f"MDLM T={first}", first)
        if cfg.extra_runs:
            self.e2e(f"MDLM T={first} (repeat)", first)
        last = None
        for T in cfg.mdlm_steps[1:]:
            last = self.e2e(f"MDLM T={T}", T) or last
        self.edlm_rows = {}
        for k in cfg.ks:
            for window in cfg.windows:
                row = self.e2e(run_name("EDLM-AR", k, window, cfg.edlm_steps), cfg.edlm_steps, "ar",
                               k=k, window=window, ebs=cfg.energy_batch_size.get(k))
                if row is not None:
                    self.edlm_rows[(k, tuple(window))] = row
        k = max(cfg.ks)
        if cfg.extra_runs:
            self.e2e(run_name("EDLM-AR", k, (0.0, 1.0), cfg.edlm_steps) + ", default chunks", cfg.edlm_steps, "ar",
                     k=k, window=(0.0, 1.0), ebs=None)
        if self.nce is not None:
            for k, window in cfg.nce_runs:
                self.e2e(run_name("EDLM-NCE", k, window, cfg.edlm_steps), cfg.edlm_steps,
                         "nce", k=k, window=window, ebs=cfg.energy_batch_size.get(k))
        self.last_mdlm = last

    def long_run(self) -> None:
        """MDLM at ``long_steps``, only if its estimate (NFE scales with T) fits the budget left."""
        cfg, last = self.cfg, getattr(self, "last_mdlm", None)
        if last is None:
            return
        estimate = last["seconds"] * cfg.long_steps / last["steps"]
        left = self.remaining()
        log(f"MDLM T={cfg.long_steps}: estimated {estimate:.0f} s, {left:.0f} s left in the budget")
        if 1.3 * estimate < left:
            self.e2e(f"MDLM T={cfg.long_steps}", cfg.long_steps, plain=False)
        else:
            self.results["e2e"].append({"name": f"MDLM T={cfg.long_steps}", "steps": cfg.long_steps,
                                        "skipped": f"estimated {estimate:.0f} s > budget left {left:.0f} s"})
            self.save()

    def edlm_long_runs(self) -> None:
        """EDLM-AR at ``edlm_long_steps``, cheapest first, each only if its estimate (its T = edlm_steps time
        × T / edlm_steps: one denoiser call and, inside the window, one IS step per step) fits the budget left."""
        cfg = self.cfg
        plan = sorted(((row["seconds"] * T / cfg.edlm_steps, T, k, window)
                       for (k, window), row in getattr(self, "edlm_rows", {}).items() for T in cfg.edlm_long_steps),
                      key=lambda p: p[0])
        for estimate, T, k, window in plan:
            name = run_name("EDLM-AR", k, window, T)
            left = self.remaining()
            if 1.3 * estimate < left:
                log(f"{name}: estimated {estimate:.0f} s, {left:.0f} s left in the budget")
                self.e2e(name, T, "ar", k=k, window=window, ebs=cfg.energy_batch_size.get(k), plain=False)
            else:
                self.results["e2e"].append({"name": name, "steps": T, "k": k, "window": list(window),
                                            "skipped": f"estimated {estimate:.0f} s > budget left {left:.0f} s"})
                self.save()

    def long_only(self) -> None:
        """``--long-only``: the runs a full run leaves out when its budget is spent, and nothing else: MDLM at
        ``long_steps``, then EDLM-AR at each of ``edlm_long_steps`` × ``ks`` × ``windows``, cheapest first (cost taken
        as T · (1 + k · window width): a denoiser call per step and k energy proposals per step in the window). Each
        is timed once (no plain re-run) with no budget gate, and saved as it ends, so a run cut short by a time
        limit keeps the rows it finished."""
        cfg = self.cfg
        log(f"long runs only, B={cfg.e2e_batch}, L={cfg.length}")
        self._warm_up()
        self.e2e(f"MDLM T={cfg.long_steps}", cfg.long_steps, plain=False)
        plan = sorted((T * (1 + k * (window[1] - window[0])), T, k, tuple(window))
                      for T in cfg.edlm_long_steps for k in cfg.ks for window in cfg.windows)
        for _, T, k, window in plan:
            self.e2e(run_name("EDLM-AR", k, window, T), T, "ar", k=k, window=window, ebs=cfg.energy_batch_size.get(k),
                     plain=False)

    def _warm_up(self) -> None:
        """Untimed short MDLM and EDLM-AR (largest k, its chunk size) runs first: the compiled networks and draws
        compile their loop shapes here, not inside a timed run."""
        k = max(self.cfg.ks)
        self.e2e("warm-up MDLM", 4, record=False)
        self.e2e("warm-up EDLM-AR", self._warm_steps(), "ar", k=k, window=(0.0, 1.0),
                 ebs=self.cfg.energy_batch_size.get(k), record=False)

    def _warm_steps(self) -> int:
        """Steps of an EDLM warm-up: enough that its last IS steps draw from few masked rows (at T = 8 over [0, 1],
        about B·L/8), so the compiled draw's few-rows variant (`categorical._few_rows`) compiles here. With 2 steps
        (up to session 10) the first timed EDLM run of session 10's quick run took 11.0 s against 5.98 s plain, which
        fits such a compile inside it (speed_notes.md, session 10; not yet re-measured with 8)."""
        return min(8, self.cfg.edlm_steps)

    # ------------------------------------------------------------------ 5. diagnosis of the forward
    def diagnose(self) -> None:
        """Where a denoiser forward's time goes: kernel categories (profiler), host dispatch at B = 1,
        and what fusion buys (torch.compile of the backbone and of SUBS) — predictions for the fixes,
        measured on the baseline code without changing it."""
        log("diagnosis: profiler breakdown, host dispatch, torch.compile checks")
        self.results["diagnose"] = {}
        for name, fn in (("profile", self._profile), ("dispatch", self._dispatch), ("compile", self._compile)):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                self.error(f"diagnose {name}", exc)
            free(self.device)
            self.save()

    def _inputs(self, B: int):
        cfg, dev = self.cfg, self.device
        g = torch.Generator(device=dev).manual_seed(7)
        x_0 = torch.randint(0, cfg.V, (B, cfg.length), device=dev, generator=g)
        masked = torch.rand((B, cfg.length), device=dev, generator=g) < 0.5
        return torch.where(masked, torch.full_like(x_0, cfg.mask_id), x_0), torch.full((B,), 0.5, device=dev)

    @torch.no_grad()
    def _profile(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        dev, B = self.device, self.cfg.e2e_batch
        if dev.type != "cuda":
            return
        x_t, t = self._inputs(B)
        reps = 3
        out = {}
        for what, fn in (("DiT fwd", lambda: self.denoiser(x_t, t)),
                         ("AR fwd", lambda: self.ar(x_t.clamp_max(self.cfg.V - 1)))):
            for _ in range(2):
                fn()
            sync(dev)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(reps):
                    fn()
                sync(dev)
            cats: dict[str, float] = {}
            kernels = []
            for evt in prof.key_averages():
                us = getattr(evt, "self_device_time_total", None)
                if us is None:
                    us = getattr(evt, "self_cuda_time_total", 0)
                on_device = "CUDA" in str(getattr(evt, "device_type", "CUDA"))
                if not us or not on_device or evt.key.startswith("aten::") or evt.key.startswith("cuda"):
                    continue
                cat = kernel_category(evt.key)
                cats[cat] = cats.get(cat, 0.0) + us / 1e3 / reps
                kernels.append({"kernel": evt.key[:90], "category": cat, "ms_per_fwd": us / 1e3 / reps,
                                "launches_per_fwd": evt.count / reps})
            kernels.sort(key=lambda r: -r["ms_per_fwd"])
            total = sum(cats.values())
            out[what] = {"B": B, "gpu_ms_per_fwd": total,
                         "by_category_ms": dict(sorted(cats.items(), key=lambda kv: -kv[1])),
                         "launches_per_fwd": sum(k["launches_per_fwd"] for k in kernels), "top_kernels": kernels[:14]}
            log(f"  {what} B={B}: {total:.1f} ms of kernels, {out[what]['launches_per_fwd']:.0f} launches: "
                + ", ".join(f"{c} {v:.1f}" for c, v in out[what]["by_category_ms"].items()))
        self.results["diagnose"]["profile"] = out

    @torch.no_grad()
    def _dispatch(self) -> None:
        """Host time to enqueue one forward (no sync) vs its GPU time: equal means CPU-bound."""
        dev = self.device
        x_t, t = self._inputs(1)
        n = 20
        for _ in range(3):
            self.denoiser(x_t, t)
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(n):
            self.denoiser(x_t, t)
        enqueue = (time.perf_counter() - t0) / n
        sync(dev)
        wall = (time.perf_counter() - t0) / n
        self.results["diagnose"]["dispatch_B1"] = {"host_enqueue_ms": enqueue * 1e3, "wall_ms": wall * 1e3}
        log(f"  DiT B=1: host enqueue {enqueue * 1e3:.2f} ms per forward, wall {wall * 1e3:.2f} ms")

    @torch.no_grad()
    def _compile(self) -> None:
        """torch.compile of the unchanged backbone and of SUBS: what fusing the elementwise work buys."""
        cfg, dev = self.cfg, self.device
        if dev.type != "cuda" or importlib.util.find_spec("triton") is None:
            return
        rows = []
        self.results["diagnose"]["compile"] = rows
        backbone = self.denoiser.backbone
        for mode, B in (("default", cfg.e2e_batch), ("default", 1), ("reduce-overhead", 1)):
            if self.remaining() < 120:
                log(f"  skip compile {mode} B={B}: {self.remaining():.0f} s left")
                break
            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
            compiled = torch.compile(backbone, mode=mode, dynamic=False)
            x_t, _ = self._inputs(B)
            sigma = torch.zeros(B, device=dev)
            t0 = time.perf_counter()
            got = compiled(x_t, sigma).clone()
            sync(dev)
            compile_s = time.perf_counter() - t0
            breaks = int(sum(torch._dynamo.utils.counters["graph_break"].values()))
            ref = backbone(x_t, sigma)
            rel = float((got.float() - ref.float()).norm() / ref.float().norm())
            times = time_call(partial(compiled, x_t, sigma), dev, 3, 10)
            eager = time_call(partial(backbone, x_t, sigma), dev, 3, 10)
            ms, eager_ms = statistics.median(times) * 1e3, statistics.median(eager) * 1e3
            flops = self.fpt["dit"] * B * cfg.length
            rows.append({"what": f"DiT fwd torch.compile(mode={mode})", "B": B, "ms": ms, "eager_ms": eager_ms,
                         "speedup": eager_ms / ms, "mfu": mfu(flops, ms / 1e3, self.peak),
                         "compile_s": compile_s, "rel_err_vs_eager": rel, "graph_breaks": breaks})
            log(f"  compiled DiT ({mode}) B={B}: {ms:.2f} ms vs eager {eager_ms:.2f} ms, "
                f"MFU {rows[-1]['mfu'] * 100:.1f}%, rel err {rel:.1e}, compile {compile_s:.0f} s, {breaks} graph breaks")
            got = ref = compiled = None
            free(dev)
        # SUBS + finite check fused by inductor: the floor for a fused SUBS kernel at the e2e batch
        B = cfg.e2e_batch
        x_t, t = self._inputs(B)
        logits = self.denoiser(x_t, t)

        def subs_and_check(logits, x_t):
            lp = subs_log_probs(logits, x_t, cfg.mask_id)
            return lp, (torch.isnan(lp) | torch.isposinf(lp)).any()

        torch._dynamo.reset()
        fused = torch.compile(subs_and_check, dynamic=False)
        lp, bad = fused(logits, x_t)
        ref = subs_log_probs(logits, x_t, cfg.mask_id)
        same = bool(torch.equal(torch.isinf(lp), torch.isinf(ref))) and not bool(bad)
        fin = torch.isfinite(ref)
        err = float((lp[fin] - ref[fin]).abs().max())
        lp = ref = fin = None
        times = time_call(lambda: bool(fused(logits, x_t)[1]), dev, 2, 10)
        eager = time_call(lambda: check_finite(subs_log_probs(logits, x_t, cfg.mask_id)), dev, 2, 10)
        ms, eager_ms = statistics.median(times) * 1e3, statistics.median(eager) * 1e3
        rows.append({"what": "SUBS + finite check torch.compile", "B": B, "ms": ms, "eager_ms": eager_ms,
                     "speedup": eager_ms / ms, "mfu": None, "compile_s": None, "rel_err_vs_eager": err,
                     "same_support": same})
        log(f"  compiled SUBS + check B={B}: {ms:.2f} ms vs eager {eager_ms:.2f} ms (max abs err {err:.1e}, "
            f"same -inf support {same})")


def kernel_category(name: str) -> str:
    n = name.lower()
    if any(s in n for s in ("flash", "fmha", "attention", "attn", "sdpa")):
        return "attention"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul", "sm90_", "wgmma")):
        return "matmul"
    if any(s in n for s in ("reduce", "norm", "softmax", "logsumexp")):
        return "reduction/norm"
    if any(s in n for s in ("copy", "cat", "index", "gather", "scatter", "fill")):
        return "copy/index"
    return "elementwise"


def source_hashes() -> dict[str, str]:
    """sha256[:12] of the library files this benchmark measures (the device gets no .git)."""
    root = Path(__file__).resolve().parents[1] / "edlm"
    names = ["samplers/loop.py", "samplers/importance.py", "samplers/ancestral.py", "diffusion/subs.py",
             "diffusion/categorical.py", "models/dit.py", "models/ar.py", "energy/ar_energy.py",
             "energy/nce_energy.py", "eval/speed.py"]
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest()[:12] for n in names if (root / n).exists()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for speed.json and speed.md")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and few steps (CPU smoke test)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget that gates the long MDLM run")
    parser.add_argument("--no-diagnose", action="store_true", help="skip the profiler / torch.compile section")
    parser.add_argument("--quick", action="store_true",
                        help="B=32 only, MDLM T=128, EDLM k=8 [0,1]; no pieces, diagnosis or long run")
    parser.add_argument("--long-only", action="store_true",
                        help="only the long end-to-end runs (MDLM at 1024 steps, EDLM-AR at 128 and 1024), each "
                             "timed once, no budget gate: what a full run's budget leaves out")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the networks in place (as `edlm sample --compile`) before measuring")
    parser.add_argument("--compile-mode", default=None,
                        help="torch.compile mode for --compile (default: torch's default)")
    parser.add_argument("--inductor-defaults", action="store_true",
                        help="compile with inductor's default options, without edlm's INFERENCE_OPTIONS (multi-kernel)")
    parser.add_argument("--no-freeze", action="store_true",
                        help="compile without inductor's freezing (as before session 7; `edlm sample --compile` "
                             "freezes: weights as graph constants, an unconditioned network's σ-map folded)")
    parser.add_argument("--no-cuda-graphs", action="store_true",
                        help="compile without replaying the small-output calls (energies) from CUDA graphs "
                             "(as before session 9; `edlm sample --compile` replays them)")
    parser.add_argument("--compile-draws", action="store_true",
                        help="also torch.compile the float64 proposal draw (edlm.diffusion.categorical.compile_draws)")
    parser.add_argument("--no-pad-vocab", action="store_true",
                        help="plain output GEMM (FinalLayer.pad_multiple = 1), the code before padding")
    parser.add_argument("--flat-draw", action="store_true",
                        help="one-level float64 inversion for every draw (the draw before session 4; "
                             "edlm.diffusion.categorical.BLOCK set past any vocabulary)")
    parser.add_argument("--fuse-residual", action="store_true",
                        help="DiTBlock.fuse_residual: the attention residual in the output GEMM (off by default)")
    parser.add_argument("--fuse-norm", action="store_true",
                        help="DiTBlock.fuse_norm: attention residual, norm2 and modulation in one Triton kernel (off)")
    parser.add_argument("--sync-timers", action="store_true",
                        help="time the loop's network calls with a device sync before and after each (sessions "
                             "1-10) instead of CUDA events (TimedCall)")
    parser.add_argument("--sync-reveals", action="store_true",
                        help="plain steps decide their reveals on the sampling stream (before session 11), not on "
                             "a side stream (edlm.samplers.loop.SIDE_STREAM)")
    parser.add_argument("--exact64-draws", action="store_true",
                        help="IS steps draw their k proposals with the float64 two-level inversion (before session "
                             "11), not categorical._draw_fast")
    parser.add_argument("--no-tuned-gemms", action="store_true",
                        help="the blocks' GEMMs as torch calls them (as before session 10), not through "
                             "edlm.models.cublaslt's tuner (DiTBlock.tuned_gemms)")
    parser.add_argument("--shipped", default=None, metavar="DIR",
                        help="a shipped model set (e.g. edlm/assets/wikipedia_en): its shapes and weights")
    parser.add_argument("--date", default=datetime.date.today().isoformat())
    args = parser.parse_args(argv)
    if args.no_pad_vocab:
        FinalLayer.pad_multiple = 1
    if args.flat_draw:
        categorical.BLOCK = 1 << 40  # K · BLOCK < C never holds: always the one-level cumulative sum
    if args.fuse_residual:
        DiTBlock.fuse_residual = True
    if args.fuse_norm:
        DiTBlock.fuse_norm = True
    if args.no_tuned_gemms:
        DiTBlock.tuned_gemms = False
    global TIMERS
    if args.sync_timers:
        TIMERS = "sync"
    if args.sync_reveals:
        _loop.SIDE_STREAM = False
    if args.exact64_draws:
        categorical.FAST_DEVICE_TYPES = ()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = (tiny_config() if args.tiny else shipped_config(args.shipped, args.quick) if args.shipped
           else quick_config() if args.quick else BenchConfig())
    if args.budget_s is not None:
        cfg.budget_s = args.budget_s
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    inductor_options = {} if args.inductor_defaults else dict(INFERENCE_OPTIONS)  # on top of --compile-mode's
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor()})",
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        "date": args.date, "config": {k: v for k, v in asdict(cfg).items()},
        "compiled": args.compile, "compile_mode": args.compile_mode, "compiled_draws": args.compile_draws,
        "inductor_options": inductor_options if args.compile else None,
        "frozen": (not args.no_freeze) if args.compile else None,
        "cuda_graphs": (not args.no_cuda_graphs) if args.compile else None, "output_gemm_pad_multiple": FinalLayer.pad_multiple,
        "draw": "one-level (flat)" if args.flat_draw else f"two-level, blocks of {categorical.BLOCK} ids when K·BLOCK < C"
        + (f"; K >= 2 draws per row on {categorical.FAST_DEVICE_TYPES}: float32 block bounds + exact float64 redraw"
           if categorical.FAST_DEVICE_TYPES and not args.flat_draw else ""),
        "timers": TIMERS, "reveals_on_side_stream": _loop.SIDE_STREAM,
        "fuse_residual": DiTBlock.fuse_residual, "fuse_gelu": DiTBlock.fuse_gelu, "fuse_norm": DiTBlock.fuse_norm,
        "tuned_gemms": DiTBlock.tuned_gemms, "source_sha256": source_hashes(),
    }
    torch.manual_seed(0)
    bench = Bench(cfg, device, out_dir, meta)
    log(f"device {meta['device']}, torch {meta['torch']}, config {'tiny' if args.tiny else 'MDLM-small'}")
    bench.build_models()
    if args.shipped and not args.tiny:
        bench.load_shipped(args.shipped)
    if args.compile:
        bench.compile_models(args.compile_mode, inductor_options, freeze=not args.no_freeze,
                             cuda_graphs=not args.no_cuda_graphs)
    if args.compile_draws:
        from edlm.diffusion.categorical import compile_draws

        compile_draws()
    bench.ceilings()
    if args.long_only:
        bench.long_only()
        return finish(bench)
    bench.forward_rows()
    if not args.quick:
        bench.pieces()
    bench.end_to_end()
    if not (args.no_diagnose or args.quick):
        bench.diagnose()
    if not args.quick:
        bench.long_run()
        bench.edlm_long_runs()
    return finish(bench)


def finish(bench: Bench) -> int:
    """Saves the results, prints the report; 1 if anything failed."""
    bench.save()
    print("\n" + render_markdown(bench.results), flush=True)
    log("done")
    return 1 if bench.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
