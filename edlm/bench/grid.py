"""The grid of a sweep expanded into cells (``edlm.bench.cells`` holds the config and the ``Cell``).

    cells = expand_cells(cfg)      # the reference rows, then the importance-sampling grid, then the other samplers'

Collapses: with no energy, or k = 1, importance sampling is one MDLM cell per (steps, seed); each other sampler
(``grid.sampler``) reads its own axes (smc: particles, ess_threshold; adaptive: budget; remask: remask_eta, k,
window) and ignores the rest, so equal cells appear once.
"""

from __future__ import annotations

from edlm.bench.cells import Cell, SweepConfig
from edlm.errors import ConfigError
from edlm.samplers.settings import DEFAULT_K, DEFAULT_SAMPLER, DEFAULT_TEMPERATURE, DEFAULT_WINDOW

__all__ = ["expand_cells"]


def expand_cells(cfg: SweepConfig, corpus: str | None = None) -> list[Cell]:
    """All cells of a sweep in a fixed order: the reference rows, then steps × energy × k × window × τ × seed.

    Cells with no energy, or with k = 1, collapse to one MDLM cell per (steps, seed) (module doc).
    ``corpus`` names the real-text corpus when ``cfg.reference.corpus`` is None.
    """
    common = dict(num_samples=cfg.num_samples, length=cfg.length, denoiser=str(cfg.denoiser))
    cells: list[Cell] = []
    ref = cfg.reference
    src = ref.corpus or corpus
    if ref.shuffled_text and cfg.prompt_tokens:
        raise ConfigError("reference.shuffled_text applies to unconditional sweeps; set it false with prompt_tokens.")
    wanted = [name for name, on in (("reference.real_text", ref.real_text), ("reference.shuffled_text",
                                                                             ref.shuffled_text),
                                    ("prompt_tokens", cfg.prompt_tokens)) if on]
    if src is None and wanted:
        raise ConfigError(f"{wanted[0]} needs reference.corpus: the denoiser's checkpoint does not name its training "
                          "corpus (or is not on this machine); set reference.corpus=NAME_OR_PATH.")
    if cfg.prompt_tokens:  # prefix completion: every cell continues the same held-out prompts
        common.update(prompt_tokens=cfg.prompt_tokens, prompts=f"{src}:{ref.split}")
    if ref.real_text:
        cells.append(Cell("real_text", **common, source=f"{src}:{ref.split}"))
    if ref.shuffled_text:
        cells.append(Cell("shuffled_text", **common, seed=ref.seed, source=f"{src}:{ref.split}"))
    ar_spec = cfg.ar_reference_spec()
    if ref.ar_samples:
        if ar_spec is None:
            raise ConfigError("reference.ar_samples needs an AR model: set reference.ar_model or add an ar:PATH "
                              "energy (or set reference.ar_samples=false).")
        cells.append(Cell("ar_samples", **common, seed=ref.seed, batch_size=cfg.batch_size, source=ar_spec))
    g = cfg.grid
    seen: set[Cell] = set()

    def add(cell: Cell) -> None:
        if cell not in seen:
            seen.add(cell)
            cells.append(cell)

    for steps in g.steps if DEFAULT_SAMPLER in g.sampler else []:
        for energy in g.energy:
            for k in g.k:
                for window in g.window:
                    for tau in g.temperature:
                        for seed in g.seed:
                            if energy == "none" or k == 1:  # SPEC 2.5: k = 1 is MDLM exactly
                                cell = Cell("diffusion", **common, steps=steps, seed=seed,
                                            batch_size=cfg.batch_size, cache=cfg.cache)
                            else:
                                cell = Cell("diffusion", **common, steps=steps, energy=energy,
                                            energy_spec=cfg.energies[energy], k=k,
                                            window=(float(window[0]), float(window[1])), temperature=float(tau),
                                            seed=seed, batch_size=cfg.batch_size, cache=cfg.cache)
                            add(cell)
    for sampler in g.sampler:
        if sampler != DEFAULT_SAMPLER:
            _expand_sampler(cfg, sampler, common, add)
    return cells


def _expand_sampler(cfg: SweepConfig, sampler: str, common: dict, add) -> None:
    """The cells of one of the other samplers: steps × energy × its own axes × τ × seed (smc and adaptive need an
    energy; remask runs without one too, and reads k and window)."""
    g = cfg.grid
    axes = {"smc": [dict(particles=n, ess_threshold=float(e)) for n in g.particles for e in g.ess_threshold],
            "adaptive": [dict(budget=b) for b in g.budget],
            "remask": [dict(remask_eta=float(eta), k=k, window=(float(w[0]), float(w[1])))
                       for eta in g.remask_eta for k in g.k for w in g.window]}[sampler]
    for steps in g.steps:
        for energy in g.energy:
            if energy == "none" and sampler != "remask":
                continue
            for axis in axes:
                axis = dict(axis)
                if energy == "none":  # k, window and τ need an energy
                    axis.update(k=DEFAULT_K, window=DEFAULT_WINDOW)
                for tau in (g.temperature if energy != "none" else [DEFAULT_TEMPERATURE]):
                    for seed in g.seed:
                        add(Cell("diffusion", **common, steps=steps, energy=energy,
                                 energy_spec=cfg.energies[energy] if energy != "none" else "none",
                                 temperature=float(tau), seed=seed, batch_size=cfg.batch_size, cache=cfg.cache,
                                 sampler=sampler, **axis))
