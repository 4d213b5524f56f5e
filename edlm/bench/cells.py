"""Sweep configuration and cells (SPEC 4): the YAML schema, its loading, the grid's expansion into cells.

    cfg = load_sweep_config("benchmarks/configs/tiny_cpu.yaml", ["num_samples=64"])
    cells = expand_cells(cfg)                                 # edlm.bench.grid: the reference rows, then the grid
    rank, world = resolve_shard("0/2")                        # this process takes cells[i], i % world == rank

A ``Cell`` holds everything that determines its samples, and its key is a stable hash of those settings,
so a re-run finds what is already done (``edlm.bench.sweep`` explains the collapses of the grid).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from edlm.errors import ConfigError
from edlm.samplers.settings import (
    DEFAULT_BUDGET,
    DEFAULT_ESS_THRESHOLD,
    DEFAULT_K,
    DEFAULT_PARTICLES,
    DEFAULT_REMASK_ETA,
    DEFAULT_SAMPLER,
    DEFAULT_TEMPERATURE,
    DEFAULT_WINDOW,
    check_budget,
    check_ess_threshold,
    check_k,
    check_particles,
    check_remask_eta,
    check_sampler,
    check_seed,
    check_steps,
    check_temperature,
    check_window,
)

__all__ = ["GridConfig", "ReferenceConfig", "SweepConfig", "Cell", "load_sweep_config", "resolve_shard"]

_AR_SPEC_KINDS = ("ar", "hf")  # energy spec prefixes that are autoregressive LMs (EDLM-AR, SPEC 2.3)


# ----------------------------------------------------------------------------- config
@dataclass
class GridConfig:
    """The axes of the sweep; every combination is one cell (after the collapses in the module doc)."""

    steps: list[int] = field(default_factory=lambda: [4, 8, 16, 32])  # T reverse steps
    energy: list[str] = field(default_factory=lambda: ["none"])  # "none" or names from `energies`
    k: list[int] = field(default_factory=lambda: [1])  # proposals per importance-sampled step (SPEC 2.5)
    window: list[list[float]] = field(default_factory=lambda: [[0.0, 1.0]])  # [t_lo, t_hi]; [0, 1] = every step
    temperature: list[float] = field(default_factory=lambda: [1.0])  # τ in w ∝ exp(−E/τ)
    seed: list[int] = field(default_factory=lambda: [0])  # one torch.Generator per cell, seeded with this
    # the sampler (edlm.samplers): each reads its own axes below; the others collapse (module doc)
    sampler: list[str] = field(default_factory=lambda: ["importance"])  # importance | smc | adaptive | remask
    particles: list[int] = field(default_factory=lambda: [DEFAULT_PARTICLES])  # smc
    ess_threshold: list[float] = field(default_factory=lambda: [DEFAULT_ESS_THRESHOLD])  # smc
    budget: list[int] = field(default_factory=lambda: [DEFAULT_BUDGET])  # adaptive: evaluations per sequence
    remask_eta: list[float] = field(default_factory=lambda: [DEFAULT_REMASK_ETA])  # remask


@dataclass
class ReferenceConfig:
    """The reference rows drawn as horizontal lines: real text and AR-model samples."""

    real_text: bool = True  # chunks of held-out text, `length` tokens each, num_samples of them
    shuffled_text: bool = False  # the same chunks with their words shuffled: fluent-looking nonsense, a floor to clear
    corpus: str | None = None  # a corpus preset or path; None = the denoiser's training corpus (its config)
    split: str = "valid"  # never the training split
    ar_samples: bool = True  # left-to-right samples of an AR model (edlm.baselines.ar_sampler)
    ar_model: str | None = None  # a name in `energies` or an ar:/hf: spec; None = the first AR energy
    seed: int = 0  # the AR samples' random stream


@dataclass
class SweepConfig:
    """One sweep: a denoiser, named energies, the grid and the fixed per-cell sizes.

    Paths: a relative model path in the YAML file (``denoiser``, an ``energies`` spec's PATH,
    ``reference.ar_model``, ``reference.corpus``) is looked up beside the YAML file first; if nothing of that
    name is there, it is relative to the directory the command runs in. So a config next to its models works
    from anywhere, and the configs in ``benchmarks/configs/`` (paths like ``runs/tiny-mdlm``) run from the repo
    root. ``key=value`` overrides are always relative to the current directory.
    """

    name: str = "sweep"  # used in plot titles and the default output directory
    denoiser: str = MISSING  # checkpoint dir or training run dir (edlm.loading.load_denoiser_bundle)
    energies: dict[str, str] = field(default_factory=dict)  # name -> spec (ar:PATH | hf:NAME | nce:PATH)
    grid: GridConfig = field(default_factory=GridConfig)
    num_samples: int = 64  # per cell; gen-PPL pools all their judge tokens
    batch_size: int = 64  # sequences per generate() call
    length: int | None = None  # tokens per sample; None = the denoiser's context length
    cache: bool = True  # MDLM's cached sampler (SPEC 1.6)
    prompt_tokens: int = 0  # > 0: prefix completion: each sample continues the first N tokens of a held-out window
    judge: str = "smollm2"  # smollm2 | gemma3 | none | a HF causal LM id or folder | a .gguf file; or a comma list
    judge_batch_size: int = 16  # texts per judge forward pass (does not change the result)
    device: str = "auto"  # generation and scoring device: auto | cpu | cuda | cuda:N
    out: str | None = None  # output directory; None = runs/bench/<name>
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    # DNA models: score every cell also with edlm.eval.dna (GC, k-mer JS to the held-out reference.split of
    # reference.corpus or the training corpus, ORFs), dna_* columns with 95 % bootstrap bounds
    dna: bool = False

    def __post_init__(self) -> None:
        g = self.grid
        for name, values in (("grid.energy", g.energy), ("grid.steps", g.steps), ("grid.k", g.k),
                             ("grid.window", g.window), ("grid.temperature", g.temperature), ("grid.seed", g.seed)):
            if not values:
                raise ConfigError(f"{name} must not be empty.")
        sampler_checks = (("grid.steps", g.steps, check_steps), ("grid.k", g.k, check_k),
                          ("grid.window", g.window, lambda w: check_window(list(w))),
                          ("grid.temperature", g.temperature, check_temperature), ("grid.seed", g.seed, check_seed),
                          ("reference.seed", [self.reference.seed], check_seed),
                          ("grid.sampler", g.sampler, check_sampler), ("grid.particles", g.particles, check_particles),
                          ("grid.ess_threshold", g.ess_threshold, check_ess_threshold),
                          ("grid.budget", g.budget, check_budget), ("grid.remask_eta", g.remask_eta, check_remask_eta))
        for name, values, check in sampler_checks:  # each value: the sampler's own check (edlm.samplers.settings)
            for value in values:
                try:
                    check(value)
                except ValueError as exc:
                    raise ConfigError(f"{name}: {exc}") from None
        for e in g.energy:
            if e != "none" and e not in self.energies:
                raise ConfigError(f"grid.energy names {e!r}, which is not 'none' nor a key of energies "
                                  f"({sorted(self.energies) or 'none defined'}).")
        for name, spec in self.energies.items():
            if name == "none":
                raise ConfigError("'none' is reserved for plain MDLM; give the energy another name.")
            if _spec_kind(spec) not in ("ar", "hf", "nce"):
                raise ConfigError(f"energies.{name} = {spec!r} is not an energy spec; expected ar:PATH, "
                                  "hf:NAME_OR_PATH or nce:PATH.")
        for name, value in (("num_samples", self.num_samples), ("batch_size", self.batch_size),
                            ("judge_batch_size", self.judge_batch_size)):
            if value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}.")
        if self.length is not None and self.length <= 0:
            raise ConfigError(f"length must be positive or null, got {self.length}.")
        if self.prompt_tokens < 0 or (self.length is not None and self.prompt_tokens >= self.length):
            raise ConfigError(f"prompt_tokens must be in [0, length) (0 = unconditional samples), got "
                              f"{self.prompt_tokens} with length {self.length}.")
        if not self.judge:
            raise ConfigError("judge must be smollm2, none, or a causal LM id/path.")
        ref = self.reference
        if ref.ar_samples and ref.ar_model is not None and ref.ar_model not in self.energies \
                and _spec_kind(ref.ar_model) not in _AR_SPEC_KINDS:
            raise ConfigError(f"reference.ar_model = {ref.ar_model!r} is neither a name in energies nor an "
                              "ar:PATH / hf:NAME spec.")

    def ar_reference_spec(self) -> str | None:
        """The AR model (as an energy spec) of the AR-samples reference row; None if there is none."""
        ref = self.reference
        if not ref.ar_samples:
            return None
        if ref.ar_model is not None:
            return self.energies.get(ref.ar_model, ref.ar_model)
        return next((s for s in self.energies.values() if _spec_kind(s) in _AR_SPEC_KINDS), None)


def _spec_kind(spec: str) -> str:
    return spec.strip().partition(":")[0].strip().lower()


def _config_error(exc: OmegaConfBaseException) -> ConfigError:
    msg = str(exc).strip().splitlines()[0]
    key = getattr(exc, "full_key", None) or ""
    if "not in" in msg:
        return ConfigError(f"unknown sweep config key {key!r}; valid keys: {', '.join(_keys(SweepConfig))}")
    if "missing mandatory value" in msg.lower():
        return ConfigError(f"the sweep config must set {key!r}")
    return ConfigError(f"bad sweep config value for {key!r}: {msg}" if key else f"bad sweep config: {msg}")


def _keys(cls, prefix: str = "") -> list[str]:
    from dataclasses import fields, is_dataclass

    out = []
    for f in fields(cls):
        sub = f.default_factory if is_dataclass(f.default_factory) else None  # type: ignore[misc]
        out += _keys(sub, f"{prefix}{f.name}.") if sub else [prefix + f.name]
    return out


def _rebased(target: str, base: Path) -> str:
    """``target`` beside the config file (``base``) when it exists there, else ``target`` as written (the cwd's)."""
    t = target.strip()
    if not t or os.path.isabs(t) or t.startswith("~"):
        return target
    beside = base / t
    return os.path.normpath(os.path.abspath(beside)) if beside.exists() else target


def _rebased_spec(spec: str, base: Path) -> str:
    """An energy spec (``ar:PATH[,carry_over=false]``) with its PATH rebased (``_rebased``); others unchanged."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind.strip().lower() not in ("ar", "hf", "nce"):
        return spec
    options = ""
    while True:  # trailing ",key=value" options, as edlm.loading.parse_energy_spec reads them
        head, comma, tail = rest.rpartition(",")
        if not comma or "=" not in tail:
            break
        options, rest = comma + tail + options, head
    return f"{kind}:{_rebased(rest, base)}{options}"


def _rebase_paths(layer, base: Path):
    """The YAML layer with its relative model paths (``denoiser``, ``energies.*``, ``reference.ar_model``,
    ``reference.corpus``) looked up beside the config file first (see ``SweepConfig``)."""
    data = OmegaConf.to_container(layer) if isinstance(layer, DictConfig) else None
    if not isinstance(data, dict):
        return layer  # not a mapping: the merge reports it
    if isinstance(data.get("denoiser"), str):
        data["denoiser"] = _rebased(data["denoiser"], base)
    if isinstance(data.get("energies"), dict):
        data["energies"] = {k: _rebased_spec(v, base) if isinstance(v, str) else v
                            for k, v in data["energies"].items()}
    ref = data.get("reference")
    if isinstance(ref, dict):
        if isinstance(ref.get("ar_model"), str) and ":" in ref["ar_model"]:  # a spec, not a name in energies
            ref["ar_model"] = _rebased_spec(ref["ar_model"], base)
        if isinstance(ref.get("corpus"), str):
            ref["corpus"] = _rebased(ref["corpus"], base)
    return OmegaConf.create(data)


def load_sweep_config(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> SweepConfig:
    """Parse a sweep YAML file and ``key=value`` overrides into a ``SweepConfig``.

    Relative paths in the file (``denoiser``, the ``energies`` specs, ``reference.ar_model``,
    ``reference.corpus``) are taken beside the config file when they exist there, else relative to the current
    directory; paths in ``overrides`` are relative to the current directory.

    Raises:
        ConfigError: a missing file, an unknown key, a value of the wrong type or an invalid setting.
    """
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. num_samples=32).")
    layers = [OmegaConf.structured(SweepConfig)]
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"sweep config {str(path)!r} does not exist.")
        layers.append(OmegaConf.create({"name": p.stem}))  # the file's own `name:` (next layer) wins
        try:
            layer = OmegaConf.create(p.read_text(encoding="utf-8"))
        except Exception as exc:  # YAML syntax errors come from yaml, not OmegaConf
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        layers.append(_rebase_paths(layer, p.parent))  # overrides (typed in a shell) stay relative to the cwd
    try:
        merged = OmegaConf.merge(*layers, OmegaConf.from_dotlist(overrides))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _config_error(exc) from None
    assert isinstance(cfg, SweepConfig)
    return cfg


# ----------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One point of the sweep (or a reference row): everything that determines its samples."""

    kind: str  # "diffusion" | "ar_samples" | "real_text" | "shuffled_text"
    num_samples: int
    length: int | None  # None = the denoiser's L (resolved when the models load; part of the key as null)
    denoiser: str
    steps: int | None = None
    energy: str = "none"  # a name in SweepConfig.energies, or "none"
    energy_spec: str = "none"
    k: int = DEFAULT_K
    window: tuple[float, float] = DEFAULT_WINDOW
    temperature: float = DEFAULT_TEMPERATURE
    seed: int = 0
    batch_size: int | None = None  # diffusion and AR samples: sequences per call (it fixes the random stream)
    cache: bool = True
    source: str | None = None  # real / shuffled text: "corpus:split"; AR samples: the AR model's spec
    sampler: str = DEFAULT_SAMPLER  # importance | smc | adaptive | remask
    particles: int = DEFAULT_PARTICLES  # smc
    ess_threshold: float = DEFAULT_ESS_THRESHOLD  # smc
    budget: int = DEFAULT_BUDGET  # adaptive
    remask_eta: float = DEFAULT_REMASK_ETA  # remask
    prompt_tokens: int = 0  # > 0: every sample continues the first prompt_tokens tokens of a held-out window
    prompts: str | None = None  # "corpus:split" of those windows (with prompt_tokens > 0)

    def settings(self) -> dict:
        """JSON-able settings; the cell key hashes exactly these. An importance cell leaves the other samplers'
        settings out, and an unconditional cell the prompt fields, so their keys are those of sweeps before these
        existed (finished files stay valid)."""
        d = asdict(self)
        d["window"] = list(self.window)
        if not self.prompt_tokens:
            del d["prompt_tokens"], d["prompts"]
        extra = {"sampler", "particles", "ess_threshold", "budget", "remask_eta"}
        if self.sampler == DEFAULT_SAMPLER:
            return {k: v for k, v in d.items() if k not in extra}
        reads = {"smc": {"particles", "ess_threshold"}, "adaptive": {"budget"}, "remask": {"remask_eta"}}[self.sampler]
        return {k: v for k, v in d.items() if k not in extra - reads - {"sampler"}}

    def sampler_settings(self) -> dict:
        """The keywords of ``edlm.pipeline.sample`` for this cell's sampler (none for importance sampling)."""
        if self.sampler == DEFAULT_SAMPLER:
            return {}
        d = {"sampler": self.sampler}
        d.update({"smc": dict(particles=self.particles, ess_threshold=self.ess_threshold),
                  "adaptive": dict(budget=self.budget), "remask": dict(remask_eta=self.remask_eta)}[self.sampler])
        return d

    @property
    def key(self) -> str:
        """A readable, stable id: ``<slug>-<10 hex digits of sha256(settings)>``."""
        blob = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return f"{self.slug}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    @property
    def slug(self) -> str:
        prompt = f"-p{self.prompt_tokens}" if self.prompt_tokens else ""
        if self.kind == "real_text":
            return f"ref-real-text{prompt}"
        if self.kind == "shuffled_text":
            return f"ref-shuffled-text-s{self.seed}"
        if self.kind == "ar_samples":
            return f"ref-ar-samples{prompt}-s{self.seed}"
        name = re.sub(r"[^A-Za-z0-9]+", "_", self.energy)
        if self.sampler == "smc":
            return f"smc-{name}{prompt}-N{self.particles}-ess{self.ess_threshold:g}-T{self.steps}-s{self.seed}"
        if self.sampler == "adaptive":
            return f"adaptive-{name}{prompt}-b{self.budget}-T{self.steps}-s{self.seed}"
        if self.sampler == "remask":
            lo, hi = self.window
            return (f"remask-{name}{prompt}-eta{self.remask_eta:g}-k{self.k}-w{lo:g}_{hi:g}-T{self.steps}"
                    f"-s{self.seed}")
        if self.energy == "none":
            return f"mdlm{prompt}-T{self.steps}-s{self.seed}"
        lo, hi = self.window
        name = re.sub(r"[^A-Za-z0-9]+", "_", self.energy)
        return f"edlm-{name}{prompt}-k{self.k}-w{lo:g}_{hi:g}-tau{self.temperature:g}-T{self.steps}-s{self.seed}"

    @property
    def method(self) -> str:
        """The line this cell belongs to in plots and tables (every setting but steps and seed)."""
        if self.kind == "real_text":
            return f"real text ({self.source})"
        if self.kind == "shuffled_text":
            return f"real text, words shuffled ({self.source})"
        if self.kind == "ar_samples":
            return "AR samples"
        if self.sampler == "remask":
            energy = "no energy" if self.energy == "none" else self.energy
            return f"remask η={self.remask_eta:g} ({energy}, k={self.k})"
        if self.energy == "none":
            return "MDLM"
        kind = _spec_kind(self.energy_spec)
        base = "EDLM-NCE" if kind == "nce" else "EDLM-AR"
        if self.energy.lower() not in ("ar", "hf", "nce"):
            base += f" [{self.energy}]"
        if self.sampler == "smc":
            return f"{base} SMC N={self.particles}, ESS<{self.ess_threshold:g}N, τ={self.temperature:g}"
        if self.sampler == "adaptive":
            return f"{base} adaptive budget={self.budget}, τ={self.temperature:g}"
        lo, hi = self.window
        return f"{base} k={self.k}, window=[{lo:g}, {hi:g}], τ={self.temperature:g}"


def resolve_shard(shard: str | tuple[int, int] | None = None) -> tuple[int, int]:
    """(rank, world size): from ``"i/n"`` or a tuple; else ``RANK``/``WORLD_SIZE`` (torchrun); else (0, 1)."""
    if shard is None:
        if "WORLD_SIZE" in os.environ:
            rank, world = int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
        else:
            return 0, 1
    elif isinstance(shard, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if m is None:
            raise ValueError(f"--shard must look like i/n (e.g. 0/2), got {shard!r}.")
        rank, world = int(m.group(1)), int(m.group(2))
    else:
        rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard {rank}/{world}: need 0 <= i < n.")
    return rank, world
