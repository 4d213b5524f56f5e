"""Speed/quality sweeps (SPEC 4): a grid of sampler settings, each cell generated, then scored.

    cfg = load_sweep_config("benchmarks/configs/tiny_cpu.yaml", ["num_samples=64"])
    report = run_sweep(cfg, "runs/bench/tiny_cpu")            # generate + score + merge + plot

One denoiser; the grid is steps × energy × k × window × τ × seed, with ``num_samples``,
``batch_size`` and ``length`` fixed for every cell. Two cheap collapses keep the grid honest and
small: a cell without an energy ignores k, window and τ (MDLM does not run 4× for 4 values of k),
and a cell with k = 1 *is* MDLM (SPEC 2.5: k = 1 reproduces MDLM exactly, and the loop never calls
the energy then), so it becomes the MDLM cell. Two reference cells measure real held-out text of the
same token length and samples of the AR model, under the same judge and entropy.

Layout of an output directory::

    .edlm.lock                   while a sweep runs: who owns the directory (edlm.locks; shard 0 under torchrun)
    config.yaml                  the resolved SweepConfig of the last run
    samples/<cell_key>.jsonl     one file per generated cell, written atomically: a header record
                                 (settings, speed, hardware) and one record per sample (text, tokens)
    results.jsonl                one row per scored cell (single process: appended as each cell ends,
                                 flushed and fsync'ed; at the end re-written sorted by cell key)
    results.rank{r}.jsonl        the rows of shard r when the cells are split over processes
    results.md, *.png            the table and plots (``edlm.bench.plots``)
    meta.json                    hardware, command, date and wall time of the last run

Generation ("generate") and scoring ("score") are separate stages: samples made on a GPU can be
scored later, elsewhere, by another judge. A cell is identified by a stable hash of its settings, so
a re-run skips what is finished (a samples file, a results row for the same judge) and redoes a cell
that was interrupted midway (it left nothing behind). With several processes (``torchrun``, or
``--shard i/n``) process r takes the cells whose index ≡ r (mod n) and writes its own results file;
``merge_results`` joins them.

The configuration and cells are in ``edlm.bench.cells``, the files in ``edlm.bench.records`` and the
generation in ``edlm.bench.generation``; this module runs the stages and re-exports their public names.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from edlm.atomic import atomic_write_text
from edlm.bench.cells import (
    Cell,
    GridConfig,
    ReferenceConfig,
    SweepConfig,
    load_sweep_config,
    resolve_shard,
)
from edlm.bench.generation import SweepModels, generate_cell, training_corpus
from edlm.bench.grid import expand_cells
from edlm.bench.records import (
    RESULTS_FILE,
    TIMING_FIELDS,
    append_jsonl,
    command_line,
    hardware_string,
    merge_results,
    read_results,
    read_sample_texts,
    read_samples,
    samples_finished,
    samples_path,
    utc_now,
)
from edlm.bench.scoring import MauveReferences, score_cell
from edlm.locks import dir_lock

__all__ = [
    "STAGES",
    "TIMING_FIELDS",
    "GridConfig",
    "ReferenceConfig",
    "SweepConfig",
    "Cell",
    "SweepReport",
    "load_sweep_config",
    "expand_cells",
    "resolve_shard",
    "run_sweep",
    "merge_results",
    "read_results",
    "read_samples",
    "read_sample_texts",
    "hardware_string",
]

STAGES = ("generate", "score", "all")


# ----------------------------------------------------------------------------- scoring
def _row(cell_header: dict, quality: dict, judge_name: str, scored_on: str, command: str) -> dict:
    settings = cell_header["settings"]
    speed = cell_header["speed"]
    return {
        "cell_key": cell_header["cell_key"],
        "method": cell_header["method"],
        **settings,
        "length": speed["length"],  # resolved (settings may say null = the denoiser's L)
        "judge": judge_name,
        **quality,
        **{k: v for k, v in speed.items() if k != "length"},
        "scored_on": scored_on,
        "date": utc_now(),
        "command": command,
    }


def _load_judge(judge, device: torch.device):
    """None for "none"; a Judge object passes through; a name is loaded once per process (cached)."""
    if judge is None or (isinstance(judge, str) and judge.lower() == "none"):
        return None
    if not isinstance(judge, str):
        return judge
    from edlm.eval.gen_ppl import load_judge

    return load_judge(judge, device=device)


def _judge_name(judge) -> str:
    if judge is None or (isinstance(judge, str) and judge.lower() == "none"):
        return "none"
    if isinstance(judge, str):
        from edlm.eval.gen_ppl import judge_name

        return judge_name(judge)
    return judge.name


def _judge_is_cell_energy(judge, cell: Cell) -> bool:
    """Judge ≠ energy: a judge never scores samples its own model chose as the energy (warned, then skipped)."""
    from edlm.eval.gen_ppl import judge_is_energy

    if not judge_is_energy(judge, cell.energy_spec):
        return False
    warnings.warn(f"cell {cell.key}: judge {_judge_name(judge)!r} is the cell's energy {cell.energy_spec!r}; "
                  "not scored by that judge (its gen-PPL would not be independent).", stacklevel=3)
    return True


# ----------------------------------------------------------------------------- the sweep
@dataclass
class SweepReport:
    """What ``run_sweep`` did in this process."""

    out: Path
    rank: int
    world_size: int
    cells_total: int  # cells in the whole sweep
    cells_mine: int  # cells of this shard
    generated: int = 0  # cells generated now
    scored: int = 0  # cells scored now
    skipped: int = 0  # cells already finished for every requested stage
    missing_samples: list[str] = field(default_factory=list)  # score stage: cells with no samples yet
    results_path: Path | None = None
    merged: Path | None = None  # results.jsonl after the merge (rank 0)
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        shard = f" (shard {self.rank}/{self.world_size}: {self.cells_mine} cells)" if self.world_size > 1 else ""
        text = (f"edlm bench sweep: {self.cells_total} cells{shard}; generated {self.generated}, scored "
                f"{self.scored}, already done {self.skipped}; {self.seconds:.0f} s; results in {self.out}")
        if self.missing_samples:
            text += (f"\n  {len(self.missing_samples)} cells have no samples yet (run --stage generate): "
                     f"{', '.join(self.missing_samples[:3])}{' …' if len(self.missing_samples) > 3 else ''}")
        return text


def _device(name: str) -> torch.device:
    from edlm.loading import resolve_device

    device = resolve_device(name)
    local = os.environ.get("LOCAL_RANK")
    if device.type == "cuda" and device.index is None and local is not None:
        device = torch.device("cuda", int(local))  # torchrun: one GPU per process
    return device


def _barrier(world: int) -> bool:
    """Wait for every process under torchrun (gloo); False when there is no process group to wait on."""
    if world <= 1 or "MASTER_ADDR" not in os.environ or not torch.distributed.is_available():
        return False
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:  # CPU-side barrier only: no tensors cross processes
        from datetime import timedelta

        dist.init_process_group("gloo", timeout=timedelta(hours=24))  # shards may finish hours apart
    dist.barrier()
    if created:
        dist.destroy_process_group()
    return True


def run_sweep(
    cfg: SweepConfig,
    out: str | os.PathLike | None = None,
    *,
    stage: str = "all",
    judge=None,
    shard: str | tuple[int, int] | None = None,
    plot: bool = True,
    progress: bool = True,
    command: str | None = None,
    on_cell_done: Callable[[Cell, str], None] | None = None,
) -> SweepReport:
    """Generate and/or score every unfinished cell of this process's shard; then merge and plot (rank 0).

    Args:
        cfg: the sweep (``load_sweep_config``).
        out: output directory; None = ``cfg.out`` or ``runs/bench/<cfg.name>``.
        stage: "generate" (samples only), "score" (existing samples only) or "all" (each cell generated
            then scored at once, so its results row lands as soon as it ends).
        judge: a ``Judge``, a judge name (``load_judge``), "none" (entropy only), a list of those or a comma
            list ("smollm2,gemma3": one row per cell and judge), or None = ``cfg.judge``. A judge that is a
            cell's ``hf:`` energy does not score that cell (a warning says so; ``judge_is_energy``).
        shard: "i/n" or (i, n): take the cells whose index ≡ i (mod n); None = ``RANK``/``WORLD_SIZE`` if
            set (torchrun), else all cells.
        plot: write results.md and the PNGs at the end (rank 0, unless stage is "generate").
        progress: a progress bar over this shard's cells.
        command: the command line to record; None = ``sys.argv``.
        on_cell_done: called as ``on_cell_done(cell, stage)`` after a cell's generation ("generate") and
            after its scoring ("score"); an exception raised there stops the sweep (tests use it to
            simulate a kill).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
    started = time.perf_counter()
    out = Path(out or cfg.out or Path("runs") / "bench" / cfg.name)
    rank, world = resolve_shard(shard)
    # shard 0 owns the directory until its merge is written (edlm.locks): checked up front, before any model
    # loads; a second sweep into it stops at once; the other shards write their own files under its ownership
    with dir_lock(out, flag="--out", command=command, enabled=rank == 0):
        out.mkdir(parents=True, exist_ok=True)
        return _run_sweep(cfg, out, rank, world, started, stage=stage, judge=judge, plot=plot, progress=progress,
                          command=command, on_cell_done=on_cell_done)


def _run_sweep(cfg: SweepConfig, out: Path, rank: int, world: int, started: float, *, stage: str, judge, plot: bool,
               progress: bool, command: str | None, on_cell_done) -> SweepReport:
    """``run_sweep`` in the directory it owns."""
    device = _device(cfg.device)
    from edlm.eval.gen_ppl import parse_judges

    judges = parse_judges(cfg.judge if judge is None else judge)  # one results row per (cell, judge)
    judge_names = [_judge_name(j) for j in judges]
    command = command or command_line()
    cells = expand_cells(cfg, corpus=training_corpus(cfg))
    mine = [c for i, c in enumerate(cells) if i % world == rank]
    results_path = out / (RESULTS_FILE if world == 1 else f"results.rank{rank}.jsonl")
    report = SweepReport(out=out, rank=rank, world_size=world, cells_total=len(cells), cells_mine=len(mine),
                         results_path=results_path)
    if rank == 0:
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))

    scored = {name: {r["cell_key"] for r in read_results(out, judge=name)} for name in judge_names}
    models = SweepModels(cfg, device)
    judge_objs: dict[int, object] = {}  # judge index -> loaded judge, once per process
    dna_reference = _dna_reference(cfg) if cfg.dna and stage != "generate" else None
    references = MauveReferences(out, cells, cfg.judge_batch_size)  # MAUVE's held-out side, once per judge
    scoring_hw = hardware_string(device)
    iterator = mine
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(mine, desc=f"sweep{f' {rank}/{world}' if world > 1 else ''}", unit="cell")
    for cell in iterator:
        did = False
        path = samples_path(out, cell)
        if stage in ("generate", "all") and not samples_finished(out, cell):
            samples, speed = generate_cell(cell, models)
            header = {"record": "cell", "cell_key": cell.key, "method": cell.method, "settings": cell.settings(),
                      "speed": speed, "command": command}
            from edlm.pipeline import write_jsonl

            write_jsonl([header, *samples], path)  # atomic: a kill mid-cell leaves no file
            report.generated += 1
            did = True
            if on_cell_done is not None:
                on_cell_done(cell, "generate")
        todo = [i for i, name in enumerate(judge_names) if cell.key not in scored[name]] if stage != "generate" else []
        todo = [i for i in todo if not _judge_is_cell_energy(judges[i], cell)]  # judge ≠ energy: warned, skipped
        if todo:
            if not samples_finished(out, cell):
                report.missing_samples.append(cell.key)
                continue
            header, samples = read_samples(path)
            for i in todo:
                if i not in judge_objs:
                    judge_objs[i] = _load_judge(judges[i], device)  # once per process (load_judge caches it too)
                quality = score_cell(header, samples, judge_objs[i], cfg.judge_batch_size, dna_reference,
                                     references=references(judge_objs[i]))
                append_jsonl(results_path, _row(header, quality, judge_names[i], scoring_hw, command))
                scored[judge_names[i]].add(cell.key)
            report.scored += 1
            did = True
            if on_cell_done is not None:
                on_cell_done(cell, "score")
        report.skipped += not did

    synced = _barrier(world)
    if rank == 0:
        if world > 1 and not synced:
            warnings.warn("other shards may still be running; run `edlm bench merge DIR` when all are done.",
                          stacklevel=2)
        if stage != "generate":
            report.merged = merge_results(out)
        report.seconds = time.perf_counter() - started
        if stage != "generate" and plot:
            from edlm.bench.plots import plot_sweep

            report.plots = plot_sweep(out)  # every judge: one table each, plots per judge
        _write_meta(out, cfg, report, device, command)
    report.seconds = time.perf_counter() - started
    return report


def _dna_reference(cfg: SweepConfig):
    """The k-mer reference of ``dna: true``: ``reference.split`` of ``reference.corpus`` or the training corpus."""
    from dataclasses import replace

    from edlm.errors import ConfigError
    from edlm.eval.dna import DnaReference
    from edlm.eval.dna_report import reference_sequence

    # training_corpus reads the denoiser's record only for a real-text row; ask it whether or not there is one
    corpus = cfg.reference.corpus or training_corpus(replace(cfg, reference=replace(cfg.reference, real_text=True)))
    if corpus is None:
        raise ConfigError("dna: true needs the held-out sequence: set reference.corpus (e.g. dna_ecoli_k12).")
    return DnaReference.from_sequence(reference_sequence(corpus, cfg.reference.split))


def _write_meta(out: Path, cfg: SweepConfig, report: SweepReport, device: torch.device, command: str) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    meta = {
        "name": cfg.name,
        "hardware": hardware_string(device),
        "device": str(device),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": utc_now(),
        "command": command,
        "wall_seconds_this_run": round(report.seconds, 1),
        "load_average_1_5_15min_at_end": list(load) if load else None,
        "cells_total": report.cells_total,
        "generated_this_run": report.generated,
        "scored_this_run": report.scored,
        "world_size": report.world_size,
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
