"""Benchmarks (SPEC 4): speed/quality sweeps over sampler settings, their merge, plots and tables; the speed
benchmark of the networks and the sampling loop.

    cfg = load_sweep_config("benchmarks/configs/tiny_cpu.yaml", ["num_samples=32"])
    report = run_sweep(cfg, "runs/bench/tiny_cpu", stage="all")
    plot_sweep("runs/bench/tiny_cpu")

    results = run_speed(preset="small", compile=True, device="cuda", out="runs/bench/speed")

``edlm bench sweep|merge|plot|speed`` are thin wrappers over these.
"""

from edlm.bench.plots import PLOT_FILES, plot_sweep, results_table
from edlm.bench.speed import run_speed
from edlm.bench.sweep import (
    STAGES,
    TIMING_FIELDS,
    Cell,
    GridConfig,
    ReferenceConfig,
    SweepConfig,
    SweepReport,
    expand_cells,
    hardware_string,
    load_sweep_config,
    merge_results,
    read_results,
    read_sample_texts,
    read_samples,
    resolve_shard,
    run_sweep,
)

__all__ = [
    "STAGES", "TIMING_FIELDS", "PLOT_FILES",
    "GridConfig", "ReferenceConfig", "SweepConfig", "Cell", "SweepReport",
    "load_sweep_config", "expand_cells", "resolve_shard", "run_sweep", "merge_results", "read_results",
    "read_samples", "read_sample_texts", "hardware_string", "plot_sweep", "results_table",
    "run_speed",
]
