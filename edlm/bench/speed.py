"""Speed benchmark of MDLM / EDLM sampling (SPEC 4): per-call network forwards and end-to-end ``generate``.

    results = run_speed(preset="small", compile=True, device="cuda", out="runs/bench/speed")

``edlm bench speed`` is a thin wrapper over `run_speed`. One run measures, in one process so that every number
shares the card and its clocks:

1. the card's matmul throughput (bf16 on CUDA, `measure_matmul_peak`): the denominator of every MFU;
2. per-call forward times (median of repeats) of the DiT denoiser, the AR transformer (its logits, and the
   ``AREnergy`` call that scores proposals with it) and the NCE energy, at B ∈ {1, B, 2B} sequences of L
   tokens: each call timed on its own and calls queued back to back, with model FLOPs (`transformer_flops`)
   and MFU;
3. end-to-end ``generate`` at B sequences: MDLM, EDLM-AR and EDLM-NCE at each T of ``steps`` (and each k of
   ``ks`` for the EDLM runs), each run twice from the same seed. The timed run wraps the networks in
   `TimedCall` (CUDA events, no synchronisation), which splits its time into the networks' own and everything
   else (the sampler's overhead); the plain run, with the bare networks, is what a user waits for and must
   draw the same tokens. "× alone" is the plain run's time over the sum of the same network calls each timed
   on its own: how close sampling comes to the cost of its network calls.

Peak memory, the card, torch, the command and the date go with the numbers into ``speed.json`` (rewritten
after each section, so a run that is stopped keeps what it measured) and ``speed.md`` (`render_markdown`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import statistics
import time
import traceback
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch

from edlm.bench.speed_models import Networks, SpeedConfig, build_networks, speed_config
from edlm.bench.speed_report import render_markdown
from edlm.eval.speed import (
    TimedCall,
    Timer,
    measure_matmul_peak,
    mfu,
    peak_memory,
    reset_peak_memory,
    time_back_to_back,
    time_calls,
)

__all__ = ["SpeedBench", "run_speed", "run_name", "source_digest"]

GiB = 2**30
METHODS = {"MDLM": None, "EDLM-AR": "ar", "EDLM-NCE": "nce"}  # end-to-end method -> energy network


def run_name(method: str, steps: int, k: int = 1, window: tuple[float, float] = (0.0, 1.0)) -> str:
    """An end-to-end row's name, e.g. "MDLM T=128" or "EDLM-AR k=8 [0,1] T=32"."""
    if method == "MDLM":
        return f"MDLM T={steps}"
    return f"{method} k={k} [{window[0]:g},{window[1]:g}] T={steps}"


class SpeedBench:
    """One benchmark run: its networks, the results dict, and the sections that fill it."""

    def __init__(self, cfg: SpeedConfig, device: torch.device, nets: Networks, out_dir: Path, meta: dict,
                 log=print):
        self.cfg, self.device, self.nets, self.out_dir, self._print = cfg, device, nets, out_dir, log
        self.results: dict = {"meta": meta, "models": nets.info, "ceilings": {}, "forward": [], "e2e": [],
                              "errors": []}
        self.peak = float("nan")
        self._alone: dict[tuple[str, int], float] = {}
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ bookkeeping
    def log(self, msg: str) -> None:
        self._print(f"[{time.perf_counter() - self._t0:7.1f}s] {msg}")

    def save(self) -> None:
        from edlm.accel import compiling, cublaslt

        meta = self.results["meta"]
        meta["elapsed_s"] = round(time.perf_counter() - self._t0, 1)
        meta["gemm_picks"] = cublaslt.picks()  # cuBLASLt algorithms the tuned GEMMs chose over torch's
        meta["multi_kernel_picks"] = list(compiling.MULTI_KERNEL_PICKS)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "speed.json").write_text(json.dumps(self.results, indent=2))
        (self.out_dir / "speed.md").write_text(render_markdown(self.results))

    def error(self, where: str, exc: BaseException) -> None:
        """Record a failed section or row (an out-of-memory error, say) and go on with the next."""
        first = str(exc).splitlines()[0] if str(exc) else ""
        self.results["errors"].append(f"{where}: {type(exc).__name__}: {first}")
        self.log(f"ERROR {where}: {type(exc).__name__}: {first}\n{traceback.format_exc()}")
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _inputs(self, B: int, seed: int = 7):
        """Clean tokens x_0 (B, L), x_t with about half of them masked (as mid-trajectory), t = 0.5, and the
        mask."""
        cfg, dev = self.cfg, self.device
        g = torch.Generator(device=dev).manual_seed(seed)
        x_0 = torch.randint(0, cfg.mask_id, (B, cfg.length), device=dev, generator=g)
        masked = torch.rand((B, cfg.length), device=dev, generator=g) < 0.5
        x_t = torch.where(masked, torch.full_like(x_0, cfg.mask_id), x_0)
        return x_0, x_t, torch.full((B,), 0.5, device=dev), masked

    # ------------------------------------------------------------------ 1. the matmul peak
    def ceilings(self) -> None:
        dev = self.device
        self.peak = max(measure_matmul_peak(dev), measure_matmul_peak(dev))  # the second: clocks up
        what = "bf16 8192³" if dev.type == "cuda" else "float32 512³"
        self.results["ceilings"] = {"matmul_peak_tflops": self.peak / 1e12,
                                    "matmul": f"{what} (measure_matmul_peak, best of 2)"}
        self.log(f"matmul peak {self.peak / 1e12:.3g} TFLOP/s ({what})")
        self.save()

    # ------------------------------------------------------------------ 2. per-call forwards
    @torch.no_grad()
    def forward_rows(self, batch_sizes: tuple[int, ...]) -> None:
        self.log("per-call forward times")
        for B in batch_sizes:
            try:
                self._forward_at(B)
            except Exception as exc:  # noqa: BLE001 - an out-of-memory size: keep the other rows
                self.error(f"forward B={B}", exc)
            self.save()

    def _call(self, kind: str, B: int, seed: int = 7):
        """One network call at B sequences, ready to time: "dit" (denoiser logits), "ar logits", "ar" (the
        ``AREnergy`` call: the AR scores x_0, then x_θ is gathered at x_0 from the lazy log_p_x0 view the loop
        passes, its masked rows normalised as the proposal draw leaves them) or "nce"."""
        from edlm.diffusion.subs import SubsLogProbs

        nets, cfg = self.nets, self.cfg
        x_0, x_t, t, masked = self._inputs(B, seed)
        if kind == "dit":
            return partial(nets.denoiser, x_t, t)
        if kind == "ar logits":
            return partial(nets.ar, x_0)
        if kind == "nce":
            return partial(nets.nce, x_0, x_t, t)
        log_p_x0 = SubsLogProbs(nets.denoiser(x_t, t), x_t, cfg.mask_id)
        log_p_x0[masked]
        return partial(self._energy("ar"), x_0, x_t, t, log_p_x0)

    def _forward_at(self, B: int) -> None:
        fpt = self.nets.flops_per_token
        self._row("DiT", "denoiser fwd (logits)", B, self._call("dit", B, seed=B), fpt["dit"])
        self._row("AR", "AR fwd (logits)", B, self._call("ar logits", B, seed=B), fpt["ar"])
        self._row("AR", "AREnergy call (fwd+logsoftmax+gather)", B, self._call("ar", B, seed=B), fpt["ar"])
        if self.nets.nce is not None:
            self._row("NCE", "NCEEnergy fwd", B, self._call("nce", B, seed=B), fpt["nce"])

    def _row(self, model: str, what: str, B: int, fn, flops_per_token: float) -> None:
        cfg, dev = self.cfg, self.device
        times = time_calls(fn, dev, cfg.warmup, cfg.repeats)
        back_to_back = time_back_to_back(fn, dev, 1, cfg.repeats)
        t = statistics.median(times)
        flops = flops_per_token * B * cfg.length
        row = {"model": model, "what": what, "B": B, "ms": t * 1e3, "ms_min": min(times) * 1e3,
               "ms_max": max(times) * 1e3, "repeats": len(times), "tokens_per_s": B * cfg.length / t,
               "gflop": flops / 1e9, "mfu": mfu(flops, t, self.peak),
               "ms_back_to_back": back_to_back * 1e3, "mfu_back_to_back": mfu(flops, back_to_back, self.peak)}
        self.results["forward"].append(row)
        self.log(f"  {model:4s} {what:38s} B={B:4d} {row['ms']:9.3f} ms  MFU {100 * row['mfu']:5.1f}%  "
                 f"back to back {row['ms_back_to_back']:9.3f} ms")

    # ------------------------------------------------------------------ 3. end to end
    def _energy(self, kind: str | None):
        """The energy of an end-to-end method: None (MDLM), ``AREnergy`` over the AR network, or the NCE
        energy."""
        from edlm.energy.ar_energy import AREnergy

        if kind == "ar":
            return AREnergy(self.nets.ar, self.cfg.mask_id)
        return self.nets.nce if kind == "nce" else None

    def _generate(self, denoiser, energy, steps: int, k: int):
        """One ``generate`` of B sequences from a fixed seed: its output and its seconds (`Timer`)."""
        from edlm.samplers.loop import generate

        cfg, dev = self.cfg, self.device
        gen = torch.Generator(device=dev).manual_seed(1234)
        with Timer(dev) as timer:
            out = generate(denoiser, cfg.length, cfg.batch_size, cfg.mask_id, cfg.mask_id, steps, energy,
                           k=k if energy is not None else 1, window=cfg.window, generator=gen,
                           energy_batch_size=cfg.batch_size if energy is not None else None, device=dev)
        return out, timer.seconds

    def methods(self) -> list[str]:
        return [m for m in METHODS if m != "EDLM-NCE" or self.nets.nce is not None]

    @torch.no_grad()
    def warm_up(self, runs: list[tuple]) -> None:
        """A short untimed run of each (method, k) of ``runs``: compiled networks and draws compile the loop's
        shapes here, not inside a timed run (up to 8 steps, so that the last steps draw from few masked rows
        too)."""
        self.log("warm-up runs")
        steps = min(8, *(T for _, T, _ in runs))
        for method, k in dict.fromkeys((method, k) for method, _, k in runs):
            try:
                self._generate(self.nets.denoiser, self._energy(METHODS[method]), steps, k)
            except Exception as exc:  # noqa: BLE001 - the timed runs will report it too
                self.error(f"warm-up {method} k={k}", exc)

    def plan(self, steps: tuple[int, ...], ks: tuple[int, ...], long: bool = False) -> list[tuple]:
        """The end-to-end runs as (method, T, k): MDLM at each T, then each EDLM method at each T and k; with
        ``long`` MDLM at T = L last."""
        runs = [("MDLM", T, 1) for T in steps]
        runs += [(m, T, k) for m in self.methods() if METHODS[m] for T in steps for k in ks]
        return runs + ([("MDLM", self.cfg.length, 1)] if long else [])

    @torch.no_grad()
    def end_to_end(self, runs: list[tuple[str, int, int]]) -> None:
        cfg = self.cfg
        self.log(f"end-to-end generate, B={cfg.batch_size}, L={cfg.length}")
        for method, T, k in runs:
            name = run_name(method, T, k, cfg.window)
            try:
                self.results["e2e"].append(self.e2e(method, T, k))
            except Exception as exc:  # noqa: BLE001 - out of memory, say: record it, go on
                self.error(f"e2e {name}", exc)
                self.results["e2e"].append({"name": name, "method": method, "steps": T, "k": k,
                                            "error": type(exc).__name__})
            self.save()

    def e2e(self, method: str, steps: int, k: int = 1) -> dict:
        """The timed run (networks in `TimedCall`) and the plain run of one method and setting: one result
        row."""
        cfg, dev, kind = self.cfg, self.device, METHODS[method]
        B, L = cfg.batch_size, cfg.length
        den = TimedCall(self.nets.denoiser, dev)
        energy = TimedCall(self._energy(kind), dev) if kind else None
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        reset_peak_memory(dev)
        out, secs = self._generate(den, energy, steps, k)
        plain, plain_secs = self._generate(self.nets.denoiser, self._energy(kind), steps, k)
        peak = peak_memory(dev)
        net_den, net_en = den.seconds, energy.seconds if energy else 0.0
        alone = sum(c * self.alone_seconds("dit", n) for n, c in den.sizes.items())
        if energy is not None:
            alone += sum(c * self.alone_seconds(kind, n) for n, c in energy.sizes.items())
        fpt = self.nets.flops_per_token
        flops = out.nfe_denoiser * B * L * fpt["dit"] + (out.energy_evals * L * fpt[kind] if kind else 0.0)
        row = {
            "name": run_name(method, steps, k, cfg.window), "method": method, "steps": steps, "energy": kind,
            "k": k if kind else 1, "window": list(cfg.window) if kind else None,
            "energy_batch_size": B if kind else None, "B": B, "L": L,
            "seconds": secs, "seconds_plain": plain_secs,
            "same_tokens": bool(torch.equal(out.tokens, plain.tokens)),
            "seconds_per_sample": plain_secs / B, "tokens_per_s": B * L / plain_secs,
            "nfe_denoiser": out.nfe_denoiser, "denoiser_calls": den.calls,
            "nfe_energy": out.nfe_energy, "energy_calls": energy.calls if energy else 0,
            "energy_seqs": out.energy_evals, "is_steps": out.is_steps,
            "mean_ess": statistics.fmean(out.ess) if out.ess else None,
            "net_denoiser_s": net_den, "net_energy_s": net_en, "overhead_s": secs - net_den - net_en,
            "overhead_pct": 100 * (secs - net_den - net_en) / secs,
            "alone_s": alone, "over_alone": plain_secs / alone, "over_alone_timed": secs / alone,
            "peak_gib": None if peak is None else peak / GiB, "model_tflop": flops / 1e12,
            "mfu": mfu(flops, plain_secs, self.peak),
        }
        tokens = "same tokens" if row["same_tokens"] else "OTHER TOKENS"
        self.log(f"  {row['name']:28s} {secs:8.3f} s (plain {plain_secs:.3f} s, {tokens})  "
                 f"NFE {out.nfe_denoiser}/{out.nfe_energy}  net {net_den:.3f}+{net_en:.3f} s  "
                 f"overhead {row['overhead_pct']:.1f}%  x alone {row['over_alone']:.3f}  "
                 f"MFU {100 * row['mfu']:.1f}%")
        return row

    @torch.no_grad()
    def alone_seconds(self, kind: str, n: int) -> float:
        """Median seconds of one network call as the loop makes it, timed on its own (`time_calls`): the
        denoiser at n sequences, or the energy at a chunk of n proposals."""
        if (kind, n) not in self._alone:
            self._alone[(kind, n)] = statistics.median(time_calls(self._call(kind, n), self.device, 2, 5))
        return self._alone[(kind, n)]


def source_digest() -> str:
    """sha256[:16] over the ``edlm`` package's Python sources (paths and contents): which code produced the
    numbers, also where the run has no git checkout."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_speed(preset: str = "small", models: str | Path | None = None, batch_size: int | None = None,
              length: int | None = None, steps: tuple[int, ...] | None = None,
              ks: tuple[int, ...] | None = None, window: tuple[float, float] | None = None,
              compile: bool = False, device: str = "auto",
              out: str | Path = "runs/bench/speed", quick: bool = False, long: bool = False,
              command: str | None = None, log=print) -> dict:
    """Run the speed benchmark; write ``speed.json`` and ``speed.md`` into ``out``; return the results dict.

    Args:
        preset: "small" (MDLM-small shapes) or "tiny" (a CPU's); with ``models``, its repeats and CPU threads.
        models: a shipped model set (e.g. edlm/assets/wikipedia_en): its shapes and weights; B · L = 32 k.
        batch_size, length, steps, ks, window: override the preset's (`SpeedConfig`).
        compile: torch.compile the networks as ``edlm sample --compile`` does (frozen weights, small-output
            calls replayed from CUDA graphs) and the float64 proposal draw.
        device: "auto" (CUDA if available), "cpu", "cuda" or "cuda:N".
        quick: forward rows at B only; end-to-end at the smallest T and the largest k only.
        long: an MDLM run at T = L steps too (one token per step; 1024 for MDLM-small).
        command: the command line to record (default: the call's settings).
        log: where progress lines go (``print``; a no-op function silences them).
    """
    from edlm.accel.compiling import compile_networks
    from edlm.diffusion.categorical import compile_draws

    cfg = speed_config(preset, models, batch_size=batch_size, length=length,
                       steps=None if steps is None else tuple(steps), ks=None if ks is None else tuple(ks),
                       window=None if window is None else tuple(window))
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    settings = {"preset": preset, "models": None if models is None else str(models), "compile": compile,
                "device": str(dev), "quick": quick, "long": long}
    meta = {"device": _device_name(dev), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "date": datetime.date.today().isoformat(),
            "command": command or f"run_speed({', '.join(f'{k}={v!r}' for k, v in settings.items())})",
            "settings": settings, "source_sha256": source_digest(),
            "config": {**{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
                       "mask_id": cfg.mask_id}}
    threads = torch.get_num_threads()
    if dev.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        torch.manual_seed(0)
        nets = build_networks(cfg, dev, models)
        bench = SpeedBench(cfg, dev, nets, Path(out), meta, log=log)
        bench.log(f"{meta['device']}, torch {meta['torch']}, {nets.info['weights']}, config {meta['config']}")
        if compile:
            for name in ("recompile_limit", "cache_size_limit"):  # each forward-row batch size compiles once
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, 64)
            compile_networks(nets.denoiser, nets.ar, nets.nce, freeze=True, cuda_graphs=True)
            compile_draws()
        bench.ceilings()
        bench.forward_rows((cfg.batch_size,) if quick else cfg.forward_batch_sizes)
        if quick:
            runs = bench.plan((min(cfg.steps),), (max(cfg.ks),), long)
        else:
            runs = bench.plan(cfg.steps, cfg.ks, long)
        bench.warm_up(runs)
        bench.end_to_end(runs)
        bench.save()
    finally:
        torch.set_num_threads(threads)
    bench.log(f"wrote {bench.out_dir / 'speed.json'} and speed.md")
    return bench.results
