"""Small-batch latency of ``generate`` on one GPU: seconds per call, per step, and against the networks' own time.

MDLM-small shapes (DiT 12 x 768, L = 1024, vocab 50 258; AR and NCE networks of the same size), random weights, bf16,
compiled as ``edlm sample --compile`` compiles them. For each batch size B and step count T it times

- MDLM, and EDLM-AR and EDLM-NCE with k proposals (``--ks``) over the window [0.8, 1], each with the eager loop
  (``graph=False``) and with the planned, graph-replayed loop (``graph=True``);

each the median of ``--repeats`` calls after one warm-up call. Beside them, the networks' own time: the denoiser's
forward at (B, L) and the energy network's at (B·k, L), each replayed from one CUDA graph of the compiled network and
timed with CUDA events (median of 20 replays): the GPU's time alone, with no host in it. "network ms" is what one
step's networks need on average, the denoiser's forward plus (energy calls ÷ denoiser calls) energy forwards, and
"step ÷ network" the step's time over it. "forward ms" is the denoiser's forward launched call by call from the host
(median of 20). With ``--first-call`` it also starts fresh processes one after the other, each compiling the
denoiser and sampling T = 8 steps with ``graph=True``, and reports the seconds to build the networks and to the end
of that first call: cold (empty compile caches) and warm (the caches the process before wrote;
``edlm.accel.compiling.compile_cache_dir``), for frozen and unfrozen compiles (a frozen graph is not served from
inductor's cache), with the reductions whose multi-kernel versions were timed in that process.

    python benchmarks/gpu/latency.py --out runs/latency [--batch-sizes 1,8,32] [--steps 128,1024] [--ks 2,8] \
        [--methods MDLM,EDLM-AR,EDLM-NCE] [--preset small|tiny] [--first-call]

``--preset tiny`` (a 2 x 64 DiT over L = 64) checks the benchmark end to end in a minute. Writes ``latency.json`` and
``latency.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from edlm import generate
from edlm.accel.compiling import compile_networks
from edlm.bench.speed_models import build_networks, speed_config
from edlm.diffusion.categorical import compile_draws
from edlm.energy.ar_energy import AREnergy
from edlm.eval.speed import time_calls

WINDOW = (0.8, 1.0)


def _median_call(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up: compiles this shape, captures nothing yet
    secs, out = [], None
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        secs.append(time.perf_counter() - t0)
    return statistics.median(secs), out


def _generate(nets, cfg, B: int, T: int, energy, k: int, graph: bool, device):
    gen = torch.Generator(device=device).manual_seed(0)
    return generate(nets.denoiser, cfg.length, B, cfg.mask_id, cfg.mask_id, T, energy,
                    k=k if energy is not None else 1, window=WINDOW, generator=gen, device=device, graph=graph,
                    energy_batch_size=k * B if energy is not None else None)


@torch.no_grad()
def graph_ms(call, replays: int = 20) -> float:
    """Median milliseconds of ``call()`` (a network's forward) replayed from one CUDA graph, timed with CUDA events
    around each replay: the GPU's time for it, with no host launch in it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as a capture wants (compiles this shape)
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # a compiled network inside a caller's capture is captured whole
        call()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph  # its pool holds the network's output (a (B, L, V+1) logits tensor for the denoiser)
    torch.cuda.empty_cache()
    return statistics.median(times)


METHODS = ("MDLM", "EDLM-AR", "EDLM-NCE")


def _energy_forward(nets, method: str, x, t):
    """The energy network's own forward at the shape of x (B·k, L): the AR model's token log-probabilities, or the
    NCE network's energies."""
    if method == "EDLM-AR":
        return partial(nets.ar.token_log_probs, x)
    return partial(nets.nce, x, x.clone(), t, None)  # two tensors, as sampling passes them (a compiled call guards
    # on its inputs aliasing each other)


def _energy_time(cache: dict, nets, method: str, B: int, k: int, L: int, mask_id: int, device) -> float:
    """The energy network's graph-replayed forward at (B·k, L) in ms (0 for MDLM), timed once per (method, k) and
    kept in ``cache``. Called after the first generate call at that shape: that call compiles the energy and records
    its own CUDA graph (``compile_networks(cuda_graphs=True)``) as sampling does, before this capture replays it."""
    if method == "MDLM":
        return 0.0
    if (method, k) not in cache:
        xk = torch.randint(0, mask_id, (B * k, L), device=device)
        cache[method, k] = graph_ms(_energy_forward(nets, method, xk, torch.ones(B * k, device=device)))
    return cache[method, k]


def measure(batch_sizes, steps_list, repeats: int, device, save=None, methods=METHODS, ks=(2,),
            preset: str = "small") -> list[dict]:
    """The timed rows; ``save(rows)`` after each (a run that is stopped keeps what it measured)."""
    cfg = speed_config(preset)
    nets = build_networks(cfg, device)
    compile_networks(nets.denoiser, nets.ar, nets.nce, freeze=True, cuda_graphs=True)
    compile_draws()
    L, m = cfg.length, cfg.mask_id
    energies = {"MDLM": None, "EDLM-AR": AREnergy(nets.ar, m), "EDLM-NCE": nets.nce}
    rows = []
    for B in batch_sizes:
        x = torch.full((B, L), m, device=device)
        t = torch.ones(B, device=device)
        with torch.no_grad():
            fwd = statistics.median(time_calls(partial(nets.denoiser, x, t), device, warmup=3, repeats=20))
        fwd_graph = graph_ms(partial(nets.denoiser, x, t))
        energy_ms = {}  # (method, k) -> the energy network's graph-replayed forward at (B·k, L)
        for T in steps_list:
            for method in methods:
                for k in ks if method != "MDLM" else (1,):
                    for graph in (False, True):
                        name = method + (f" k={k}" if k > 1 else "") + (" graph" if graph else "")
                        reps = repeats if T * B <= 8192 else max(1, repeats // 2)
                        call = partial(_generate, nets, cfg, B, T, energies[method], k, graph, device)
                        secs, out = _median_call(call, reps)
                        e_ms = _energy_time(energy_ms, nets, method, B, k, L, m, device)
                        net = fwd_graph + out.nfe_energy / out.nfe_denoiser * e_ms
                        row = {"method": name, "B": B, "T": T, "k": k, "seconds": secs,
                               "nfe_denoiser": out.nfe_denoiser, "nfe_energy": out.nfe_energy,
                               "per_step_ms": 1e3 * secs / out.nfe_denoiser, "forward_ms": 1e3 * fwd,
                               "forward_graph_ms": fwd_graph, "energy_graph_ms": e_ms if method != "MDLM" else None,
                               "network_ms": net, "repeats": reps}
                        row["over_forward"] = row["per_step_ms"] / row["forward_ms"]
                        row["over_network"] = row["per_step_ms"] / net
                        rows.append(row)
                        if save is not None:
                            save(rows)
                        print(f"{name:20s} B={B:3d} T={T:5d}: {secs:7.3f} s  {row['per_step_ms']:7.2f} ms/step "
                              f"(NFE {out.nfe_denoiser}/{out.nfe_energy})  network {net:.2f} ms "
                              f"x{row['over_network']:.2f}  host-launched forward {row['forward_ms']:.2f} ms",
                              flush=True)
    return rows


_CHILD = r"""
import time, torch
t0 = time.perf_counter()
from edlm import generate
from edlm.accel.compiling import compile_networks
from edlm.bench.speed_models import build_networks, speed_config
from edlm.diffusion.categorical import compile_draws
cfg = speed_config("small"); dev = torch.device("cuda")
nets = build_networks(cfg, dev)
compile_networks(nets.denoiser, freeze=FREEZE, cuda_graphs=True); compile_draws()
built = time.perf_counter()
generate(nets.denoiser, cfg.length, 1, cfg.mask_id, cfg.mask_id, 8, generator=torch.Generator(device=dev).manual_seed(0),
         device=dev, graph=True)
torch.cuda.synchronize()
from edlm.accel.compiling import MULTI_KERNEL_PICKS
print("FIRST", built - t0, time.perf_counter() - built, len(MULTI_KERNEL_PICKS))
"""


def first_call(cache_root: Path, freeze: bool) -> list[dict]:
    """Two fresh processes in turn, sharing the compile caches under ``cache_root``: seconds to build the networks
    and seconds of the first ``generate`` call (compiling included)."""
    env = dict(os.environ, EDLM_CACHE_DIR=str(cache_root))
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # compile_cache_dir() puts both under cache_root
        env.pop(name, None)
    rows = []
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", _CHILD.replace("FREEZE", str(freeze))], env=env,
                             capture_output=True, text=True)
        wall = time.perf_counter() - t0
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("FIRST")]
        if res.returncode or not line:
            rows.append({"cache": label, "freeze": freeze, "error": res.stderr[-2000:]})
            continue
        build, first, timed = line[0].split()[1:]
        rows.append({"cache": label, "freeze": freeze, "build_s": float(build), "first_call_s": float(first),
                     "process_s": wall, "multi_kernels_timed": int(timed)})
        print(f"first call, freeze={freeze}, {label} cache: build {float(build):.1f} s, first generate "
              f"{float(first):.1f} s ({timed} multi-kernels timed), process {wall:.1f} s", flush=True)
    return rows


def render(result: dict) -> str:
    commands = result.get("commands") or [result["command"]]
    lines = [f"# Small-batch latency ({result['card']}, torch {result['torch']}, {result['date']})", "",
             *[f"`{c}`" for c in commands], "",
             "| method | B | T | s / call | denoiser calls | energy calls | ms / step | network ms | step ÷ network "
             "| host-launched forward ms | step ÷ forward |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result.get("rows", []):
        lines.append(f"| {r['method']} | {r['B']} | {r['T']} | {r['seconds']:.3f} | {r['nfe_denoiser']} | "
                     f"{r.get('nfe_energy', '')} | {r['per_step_ms']:.2f} | {r['network_ms']:.2f} | "
                     f"{r['over_network']:.2f} | {r['forward_ms']:.2f} | {r['over_forward']:.2f} |")
    if result.get("first_call"):
        lines += ["", "| compile | cache | build s | first call s (compile + T = 8) | multi-kernels timed | process s |",
                  "|---|---|---:|---:|---:|---:|"]
        for r in result["first_call"]:
            kind = "frozen" if r["freeze"] else "not frozen"
            if "error" in r:
                lines.append(f"| {kind} | {r['cache']} | error | | | |")
            else:
                lines.append(f"| {kind} | {r['cache']} | {r['build_s']:.1f} | {r['first_call_s']:.1f} | "
                             f"{r.get('multi_kernels_timed', '')} | {r['process_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/latency", help="directory for latency.json and latency.md")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated B")
    p.add_argument("--steps", default="128,1024", help="comma-separated T")
    p.add_argument("--ks", default="2", help="comma-separated proposals per importance-sampled step (EDLM rows)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated methods, each timed with the eager and the graph-replayed loop")
    p.add_argument("--preset", default="small", choices=("small", "tiny"),
                   help="network shapes (edlm.bench.speed_models); tiny checks the benchmark in a minute")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row (halved for the longest rows)")
    p.add_argument("--first-call", action="store_true", help="also time the first call of two fresh processes")
    args = p.parse_args(argv)
    methods = tuple(args.methods.split(","))
    if not set(methods) <= set(METHODS):
        p.error(f"--methods: choose from {', '.join(METHODS)}, got {args.methods!r}")
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu/latency.py needs a CUDA device.")
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
              "command": "python benchmarks/gpu/latency.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if args.first_call:  # first: the child processes must not share the GPU with this one's networks
        result["first_call"] = []
        for freeze in (False, True):
            root = Path(tempfile.mkdtemp(prefix="edlm-cache-"))
            try:
                result["first_call"] += first_call(root, freeze)
            finally:
                shutil.rmtree(root, ignore_errors=True)

    def save(rows):
        result["rows"] = rows
        (out / "latency.json").write_text(json.dumps(result, indent=1))
        (out / "latency.md").write_text(render(result))

    save(measure([int(b) for b in args.batch_sizes.split(",")], [int(t) for t in args.steps.split(",")],
                 args.repeats, device, save, methods=methods, ks=tuple(int(k) for k in args.ks.split(",")),
                 preset=args.preset))
    print(render(result))


if __name__ == "__main__":
    main()
