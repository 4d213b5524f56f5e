"""The sweep grid over samplers (edlm.bench.grid): each sampler reads its own axes, importance cells keep their keys."""

from edlm.bench import expand_cells, load_sweep_config
from edlm.bench.cells import Cell

BASE = ["denoiser=d", "energies.ar=ar:a", "reference.real_text=false", "reference.ar_samples=false",
        "grid.steps=[8]", "grid.energy=[none,ar]", "grid.k=[1,4]"]


def test_each_sampler_reads_its_own_axes():
    cfg = load_sweep_config(None, BASE + ["grid.sampler=[importance,smc,adaptive,remask]", "grid.particles=[4,16]",
                                          "grid.budget=[16,32]", "grid.remask_eta=[0.05]"])
    cells = expand_cells(cfg)
    by = {s: [c for c in cells if c.sampler == s] for s in ("importance", "smc", "adaptive", "remask")}
    assert [c.slug for c in by["importance"]] == ["mdlm-T8-s0", "edlm-ar-k4-w0_1-tau1-T8-s0"]
    assert sorted(c.particles for c in by["smc"]) == [4, 16] and all(c.energy == "ar" for c in by["smc"])
    assert sorted(c.budget for c in by["adaptive"]) == [16, 32]
    # remask: with no energy (k, τ collapse to their defaults) and with the AR energy at k = 1 and 4
    assert sorted((c.energy, c.k) for c in by["remask"]) == [("ar", 1), ("ar", 4), ("none", 1)]
    assert len({c.key for c in cells}) == len(cells)
    smc = by["smc"][0].settings()
    assert smc["sampler"] == "smc" and "budget" not in smc and "remask_eta" not in smc
    assert by["smc"][0].sampler_settings() == {"sampler": "smc", "particles": 4, "ess_threshold": 0.5}


def test_importance_cells_keep_the_keys_of_earlier_runs():
    """The committed tiny CPU sweep's MDLM T = 4 cell: the samplers' fields are not in its hash."""
    cell = Cell("diffusion", num_samples=64, length=128, denoiser="runs/tiny-mdlm", steps=4, batch_size=64)
    assert cell.key == "mdlm-T4-s0-c693bb9b8b"  # benchmarks/results/tiny_cpu/results.jsonl
    assert "sampler" not in cell.settings() and cell.sampler_settings() == {}
    assert cell.key == Cell("diffusion", num_samples=64, length=128, denoiser="runs/tiny-mdlm", steps=4,
                            batch_size=64, particles=99).key  # an axis importance sampling does not read
