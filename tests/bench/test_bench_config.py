"""Sweep config parsing and the grid: typed YAML, unknown keys, the none/k=1 collapse, stable keys, shards."""

import pytest

from edlm.bench import Cell, expand_cells, load_sweep_config, resolve_shard
from edlm.errors import ConfigError


def test_yaml_and_overrides_parse_into_typed_config(sweep_cfg):
    cfg = sweep_cfg("num_samples=8", "grid.steps=[3,5]", "grid.window=[[0.4,0.6]]")
    assert cfg.name == "micro" and cfg.num_samples == 8 and cfg.grid.steps == [3, 5]
    assert cfg.grid.window == [[0.4, 0.6]] and cfg.energies["ar"].startswith("ar:")


@pytest.mark.parametrize("override, match", [
    ("num_sample=8", "unknown sweep config key 'num_sample'"),
    ("grid.stepz=[1]", "unknown sweep config key 'grid.stepz'"),
    ("grid.steps=[four]", "grid.steps"),
    ("grid.energy=[nce]", "not 'none' nor a key of energies"),
    ("grid.window=[[0.7,0.2]]", "t_lo <= t_hi"),
    ("grid.k=[0]", "grid.k: k must be a positive integer, got 0"),
    ("energies.bad=foo:/x", "not an energy spec"),
    ("num_samples", "key=value"),
])
def test_bad_config_is_a_config_error(sweep_cfg, override, match):
    with pytest.raises(ConfigError, match=match):
        sweep_cfg(override)


def test_missing_file_and_missing_denoiser(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("num_samples: 2\n")
    with pytest.raises(ConfigError, match="must set 'denoiser'"):
        load_sweep_config(tmp_path / "empty.yaml")


def test_grid_collapses_no_energy_and_k1_to_mdlm(sweep_cfg):
    cfg = sweep_cfg("grid.k=[1,2,4]", "grid.window=[[0,1],[0.4,0.6]]", "grid.temperature=[0.5,1.0]",
                    "grid.seed=[0,1]")
    cells = expand_cells(cfg)
    kinds = [c.kind for c in cells]
    assert kinds[:2] == ["real_text", "ar_samples"]
    diffusion = [c for c in cells if c.kind == "diffusion"]
    mdlm = [c for c in diffusion if c.energy == "none"]
    edlm = [c for c in diffusion if c.energy != "none"]
    # MDLM: one cell per (steps, seed), whatever k/window/τ say (energy=none and k=1 both land here)
    assert len(mdlm) == 2 * 2 and all(c.k == 1 and c.window == (0.0, 1.0) and c.temperature == 1.0 for c in mdlm)
    assert len(edlm) == 2 * 2 * 2 * 2 * 2  # steps × k∈{2,4} × window × τ × seed
    keys = [c.key for c in cells]
    assert len(set(keys)) == len(keys)
    assert keys == [c.key for c in expand_cells(cfg)]  # stable across calls


def test_cell_key_depends_on_every_setting_and_is_stable():
    base = Cell("diffusion", num_samples=4, length=12, denoiser="d", steps=4, seed=0, batch_size=2)
    assert base.key == Cell("diffusion", num_samples=4, length=12, denoiser="d", steps=4, seed=0, batch_size=2).key
    assert base.key.startswith("mdlm-T4-s0-")
    for change in (dict(steps=8), dict(seed=1), dict(num_samples=5), dict(batch_size=4), dict(denoiser="e")):
        other = Cell(**{**base.settings(), "window": base.window, **change})
        assert other.key != base.key
    assert base.method == "MDLM"
    edlm = Cell("diffusion", 4, 12, "d", steps=4, energy="ar", energy_spec="ar:x", k=4, window=(0.4, 0.6))
    assert edlm.method == "EDLM-AR k=4, window=[0.4, 0.6], τ=1"
    assert Cell("diffusion", 4, 12, "d", steps=4, energy="ebm", energy_spec="nce:x", k=2).method.startswith(
        "EDLM-NCE [ebm] k=2")


def test_reference_rows_need_their_sources(sweep_cfg):
    cfg = sweep_cfg("grid.energy=[none]")
    cfg.energies = {}
    with pytest.raises(ConfigError, match="needs an AR model"):
        expand_cells(cfg)
    cfg.reference.ar_samples = cfg.reference.real_text = False
    assert all(c.kind == "diffusion" for c in expand_cells(cfg))
    cfg = sweep_cfg("reference.corpus=null")
    cfg.denoiser = "/nonexistent"  # the training corpus cannot be read from the checkpoint either
    with pytest.raises(ConfigError, match="reference.corpus"):
        expand_cells(cfg, corpus=None)


def test_resolve_shard(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_shard(None) == (0, 1)
    assert resolve_shard("1/3") == (1, 3)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert resolve_shard(None) == (2, 4)
    for bad in ("3/3", "x", "1-2"):
        with pytest.raises(ValueError):
            resolve_shard(bad)


def test_relative_model_paths_are_found_beside_the_config(micro_models, tmp_path, monkeypatch):
    """A config kept next to its models runs from any directory; names not found beside it stay as written
    (relative to the cwd), as in benchmarks/configs/*.yaml."""
    import shutil

    from edlm.loading import load_denoiser_bundle

    folder = tmp_path / "experiment"
    folder.mkdir()
    shutil.copytree(micro_models["denoiser"], folder / "mdlm")
    shutil.copytree(micro_models["ar"], folder / "ar")
    (folder / "sweep.yaml").write_text(
        "denoiser: mdlm\n"
        "energies:\n  ar: ar:ar,carry_over=false\n  far: ar:runs/tiny-ar\n"
        "reference:\n  ar_model: ar:ar\n  corpus: tinyshakespeare\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_sweep_config("../experiment/sweep.yaml")
    assert cfg.denoiser == str(folder / "mdlm")
    assert cfg.energies == {"ar": f"ar:{folder / 'ar'},carry_over=false", "far": "ar:runs/tiny-ar"}
    assert cfg.reference.ar_model == f"ar:{folder / 'ar'}" and cfg.reference.corpus == "tinyshakespeare"
    assert load_denoiser_bundle(cfg.denoiser).length == 16
    # an override is typed in a shell: relative to the current directory
    assert load_sweep_config(folder / "sweep.yaml", ["denoiser=mdlm"]).denoiser == "mdlm"


def test_repo_configs_keep_their_repo_root_paths():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cfg = load_sweep_config(root / "benchmarks" / "configs" / "tiny_cpu.yaml")
    assert cfg.denoiser == "runs/tiny-mdlm" and cfg.energies == {"ar": "ar:runs/tiny-ar"}
