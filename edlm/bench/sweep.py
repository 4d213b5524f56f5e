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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import resource
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from edlm.atomic import atomic_write_text
from edlm.errors import ConfigError, DataError

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
# Row fields that depend on the machine, the moment or the invocation, not on the cell's settings:
# a re-run or another sharding of the same cells changes only these.
TIMING_FIELDS = (
    "seconds_per_sample", "tokens_per_s", "generation_seconds", "score_seconds", "peak_memory_bytes",
    "process_max_rss_bytes", "hardware", "scored_on", "torch_version", "date", "generated_date", "command",
)
_RESULTS = "results.jsonl"
_RANK_RESULTS = re.compile(r"^results\.rank(\d+)\.jsonl$")
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


@dataclass
class ReferenceConfig:
    """The reference rows drawn as horizontal lines: real text and AR-model samples."""

    real_text: bool = True  # chunks of held-out text, `length` tokens each, num_samples of them
    corpus: str | None = None  # a corpus preset or path; None = the denoiser's training corpus (its config)
    split: str = "valid"  # never the training split
    ar_samples: bool = True  # left-to-right samples of an AR model (edlm.baselines.ar_sampler)
    ar_model: str | None = None  # a name in `energies` or an ar:/hf: spec; None = the first AR energy
    seed: int = 0  # the AR samples' random stream


@dataclass
class SweepConfig:
    """One sweep: a denoiser, named energies, the grid and the fixed per-cell sizes."""

    name: str = "sweep"  # used in plot titles and the default output directory
    denoiser: str = MISSING  # checkpoint dir or training run dir (edlm.pipeline.load_denoiser_bundle)
    energies: dict[str, str] = field(default_factory=dict)  # name -> spec (ar:PATH | hf:NAME | nce:PATH)
    grid: GridConfig = field(default_factory=GridConfig)
    num_samples: int = 64  # per cell; gen-PPL pools all their judge tokens
    batch_size: int = 64  # sequences per generate() call
    length: int | None = None  # tokens per sample; None = the denoiser's context length
    cache: bool = True  # MDLM's cached sampler (SPEC 1.6)
    judge: str = "smollm2"  # smollm2 | none | a Hugging Face causal LM id or folder | a .gguf file
    judge_batch_size: int = 16  # texts per judge forward pass (does not change the result)
    device: str = "auto"  # generation and scoring device: auto | cpu | cuda | cuda:N
    out: str | None = None  # output directory; None = runs/bench/<name>
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)

    def __post_init__(self) -> None:
        g = self.grid
        for name, values in (("grid.steps", g.steps), ("grid.k", g.k)):
            if not values or any(v <= 0 for v in values):
                raise ConfigError(f"{name} must be a non-empty list of positive integers, got {list(values)}.")
        for name, values in (("grid.energy", g.energy), ("grid.window", g.window),
                             ("grid.temperature", g.temperature), ("grid.seed", g.seed)):
            if not values:
                raise ConfigError(f"{name} must not be empty.")
        for w in g.window:
            if len(w) != 2 or not 0.0 <= w[0] <= w[1] <= 1.0:
                raise ConfigError(f"each grid.window must be [t_lo, t_hi] with 0 <= t_lo <= t_hi <= 1, got {list(w)}.")
        if any(not tau > 0.0 for tau in g.temperature):
            raise ConfigError(f"grid.temperature values must be > 0, got {list(g.temperature)}.")
        if any(s < 0 for s in g.seed):
            raise ConfigError(f"grid.seed values must be >= 0, got {list(g.seed)}.")
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


def load_sweep_config(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> SweepConfig:
    """Parse a sweep YAML file and ``key=value`` overrides into a ``SweepConfig``.

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
            layers.append(OmegaConf.create(p.read_text(encoding="utf-8")))
        except Exception as exc:  # YAML syntax errors come from yaml, not OmegaConf
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
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

    kind: str  # "diffusion" | "ar_samples" | "real_text"
    num_samples: int
    length: int | None  # None = the denoiser's L (resolved when the models load; part of the key as null)
    denoiser: str
    steps: int | None = None
    energy: str = "none"  # a name in SweepConfig.energies, or "none"
    energy_spec: str = "none"
    k: int = 1
    window: tuple[float, float] = (0.0, 1.0)
    temperature: float = 1.0
    seed: int = 0
    batch_size: int | None = None  # diffusion and AR samples: sequences per call (it fixes the random stream)
    cache: bool = True
    source: str | None = None  # real text: "corpus:split"; AR samples: the AR model's spec

    def settings(self) -> dict:
        """JSON-able settings; the cell key hashes exactly these."""
        d = asdict(self)
        d["window"] = list(self.window)
        return d

    @property
    def key(self) -> str:
        """A readable, stable id: ``<slug>-<10 hex digits of sha256(settings)>``."""
        blob = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return f"{self.slug}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    @property
    def slug(self) -> str:
        if self.kind == "real_text":
            return "ref-real-text"
        if self.kind == "ar_samples":
            return f"ref-ar-samples-s{self.seed}"
        if self.energy == "none":
            return f"mdlm-T{self.steps}-s{self.seed}"
        lo, hi = self.window
        name = re.sub(r"[^A-Za-z0-9]+", "_", self.energy)
        return f"edlm-{name}-k{self.k}-w{lo:g}_{hi:g}-tau{self.temperature:g}-T{self.steps}-s{self.seed}"

    @property
    def method(self) -> str:
        """The line this cell belongs to in plots and tables (every setting but steps and seed)."""
        if self.kind == "real_text":
            return f"real text ({self.source})"
        if self.kind == "ar_samples":
            return "AR samples"
        if self.energy == "none":
            return "MDLM"
        kind = _spec_kind(self.energy_spec)
        base = "EDLM-NCE" if kind == "nce" else "EDLM-AR"
        if self.energy.lower() not in ("ar", "hf", "nce"):
            base += f" [{self.energy}]"
        lo, hi = self.window
        return f"{base} k={self.k}, window=[{lo:g}, {hi:g}], τ={self.temperature:g}"


def expand_cells(cfg: SweepConfig, corpus: str | None = None) -> list[Cell]:
    """All cells of a sweep in a fixed order: the reference rows, then steps × energy × k × window × τ × seed.

    Cells with no energy, or with k = 1, collapse to one MDLM cell per (steps, seed) (module doc).
    ``corpus`` names the real-text corpus when ``cfg.reference.corpus`` is None.
    """
    common = dict(num_samples=cfg.num_samples, length=cfg.length, denoiser=str(cfg.denoiser))
    cells: list[Cell] = []
    ref = cfg.reference
    if ref.real_text:
        src = ref.corpus or corpus
        if src is None:
            raise ConfigError("reference.real_text needs reference.corpus: the denoiser's checkpoint does not name "
                              "its training corpus (or is not on this machine); set reference.corpus=NAME_OR_PATH.")
        cells.append(Cell("real_text", **common, source=f"{src}:{ref.split}"))
    ar_spec = cfg.ar_reference_spec()
    if ref.ar_samples:
        if ar_spec is None:
            raise ConfigError("reference.ar_samples needs an AR model: set reference.ar_model or add an ar:PATH "
                              "energy (or set reference.ar_samples=false).")
        cells.append(Cell("ar_samples", **common, seed=ref.seed, batch_size=cfg.batch_size, source=ar_spec))
    g = cfg.grid
    seen: set[Cell] = set()
    for steps in g.steps:
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
                            if cell not in seen:
                                seen.add(cell)
                                cells.append(cell)
    return cells


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


# ----------------------------------------------------------------------------- files
def _append_jsonl(path: Path, record: dict) -> None:
    """Append one line durably (flush + fsync). A torn last line from a crash is cut off first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":  # a line torn by a crash: drop it (its cell is redone)
                f.seek(0)
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
        f.seek(0, os.SEEK_END)
        f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file; a torn last line (a crash mid-append) is skipped."""
    if not path.is_file():
        return []
    # split on "\n" only: str.splitlines() also breaks at U+2028, \x85, \x0b, ... which json.dumps(ensure_ascii=False)
    # leaves raw inside strings, and byte-level BPE samples do contain them
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue  # torn by a crash; that cell is simply not finished
            raise DataError(f"{path}, line {i + 1}, is not valid JSON; the file is corrupt.") from None
    return out


def _results_files(out: Path) -> list[Path]:
    """results.jsonl first, then results.rank{r}.jsonl by r."""
    ranked = sorted(((int(m.group(1)), p) for p in out.glob("results.rank*.jsonl")
                     if (m := _RANK_RESULTS.match(p.name))), key=lambda rp: rp[0])
    return [out / _RESULTS] + [p for _, p in ranked]


def read_results(out: str | os.PathLike, judge: str | None = None) -> list[dict]:
    """Every result row of a sweep directory (merged and per-rank files), one per (cell, judge), by cell key.

    A row in a later file (a rank file, or later in the same file) replaces an earlier one for the same
    cell and judge. ``judge`` keeps only that judge's rows.
    """
    rows: dict[tuple[str, str], dict] = {}
    for path in _results_files(Path(out)):
        for row in _read_jsonl(path):
            rows[(row["cell_key"], row["judge"])] = row
    picked = [rows[k] for k in sorted(rows)]
    return [r for r in picked if judge is None or r["judge"] == judge]


def merge_results(out: str | os.PathLike) -> Path:
    """Join results.jsonl and every results.rank{r}.jsonl into results.jsonl, sorted by (cell key, judge).

    Deterministic (same rows, same bytes) and idempotent; the rank files are kept.
    """
    out = Path(out)
    rows = read_results(out)
    atomic_write_text(out / _RESULTS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out / _RESULTS


def _samples_path(out: Path, cell: Cell) -> Path:
    return out / "samples" / f"{cell.key}.jsonl"


def read_samples(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(header, samples) of one cell's samples file: the header has the settings and speed of the cell."""
    records = _read_jsonl(Path(path))
    if not records or records[0].get("record") != "cell":
        raise DataError(f"{path} is not a sweep samples file (no header record).")
    return records[0], records[1:]


def read_sample_texts(path: str | os.PathLike) -> tuple[list[str], list[list[int]] | None]:
    """(texts, token lists or None) of a samples JSONL: ``edlm sample --out`` records or a sweep samples file."""
    records = [r for r in _read_jsonl(Path(path)) if r.get("record") != "cell"]
    if not records:
        raise DataError(f"{path} holds no sample records.")
    if any("text" not in r for r in records):
        raise DataError(f"{path}: every record needs a `text` field (as `edlm sample --out` writes).")
    tokens = [r["tokens"] for r in records] if all("tokens" in r for r in records) else None
    return [r["text"] for r in records], tokens


def _finished_samples(out: Path, cell: Cell) -> bool:
    path = _samples_path(out, cell)
    if not path.is_file():
        return False
    try:
        header, samples = read_samples(path)
    except DataError:
        return False
    return header.get("cell_key") == cell.key and len(samples) == cell.num_samples


# ----------------------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_string(device: str | torch.device = "cpu") -> str:
    """The machine that did the work: the GPU's name on CUDA, else the CPU model and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{_cpu_model()}, {torch.get_num_threads()} threads, {os.cpu_count()} logical CPUs"


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _command() -> str:
    argv = [Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)]
    return " ".join(shlex.quote(a) for a in argv)


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


# ----------------------------------------------------------------------------- the models (loaded lazily)
class _Models:
    """The denoiser bundle, energies and the AR reference model, each loaded on first use."""

    def __init__(self, cfg: SweepConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self._bundle = None
        self._energies: dict[str, object] = {}
        self._warm: set[str] = set()

    @property
    def bundle(self):
        if self._bundle is None:
            from edlm.pipeline import load_denoiser_bundle

            self._bundle = load_denoiser_bundle(self.cfg.denoiser, map_location=self.device)
        return self._bundle

    def energy(self, spec: str):
        if spec == "none":
            return None
        if spec not in self._energies:
            from edlm.pipeline import load_energy

            self._energies[spec] = load_energy(spec, self.bundle, self.device)
        return self._energies[spec]

    def warm_up(self, cell: Cell) -> None:
        """One small untimed run per energy, so one-time costs (allocator, thread pools) are not timed."""
        if cell.energy_spec in self._warm:
            return
        from edlm.pipeline import sample

        energy = self.energy(cell.energy_spec)
        k = 2 if energy is not None else 1
        sample(self.bundle, num_samples=1, batch_size=1, length=cell.length, steps=2, energy=energy, k=k,
               seed=0, device=self.device, progress=False)
        self._warm.add(cell.energy_spec)


def _training_corpus(cfg: SweepConfig) -> str | None:
    """data.corpus of the denoiser's training run, as ``edlm train`` records it in config.json."""
    if cfg.reference.corpus is not None or not cfg.reference.real_text:
        return cfg.reference.corpus
    from edlm.models.checkpoints import CONFIG_NAME

    path = Path(cfg.denoiser)
    for candidate in (path / CONFIG_NAME, path / "model" / CONFIG_NAME):  # a checkpoint or a training run dir
        if candidate.is_file():
            try:
                extra = json.loads(candidate.read_text()).get("extra") or {}
            except (json.JSONDecodeError, AttributeError):
                return None
            break
    else:
        return None
    return ((extra.get("run_config") or {}).get("data") or {}).get("corpus")


# ----------------------------------------------------------------------------- generation
def _generate_cell(cell: Cell, models: _Models) -> tuple[list[dict], dict]:
    """(samples, speed record) of one cell."""
    from edlm.eval.speed import peak_memory, reset_peak_memory

    bundle, device = models.bundle, models.device
    length = bundle.length if cell.length is None else cell.length
    reset_peak_memory(device)
    if cell.kind == "real_text":
        tokens, seconds, nfe_d, nfe_e = _real_text(cell, bundle, length), None, 0, 0
    elif cell.kind == "ar_samples":
        tokens, seconds, nfe_d = _ar_samples(cell, models, length)
        nfe_e = 0
    else:
        from edlm.pipeline import sample

        models.warm_up(cell)
        records = sample(bundle, num_samples=cell.num_samples, batch_size=cell.batch_size, length=length,
                         steps=cell.steps, energy=models.energy(cell.energy_spec), k=cell.k, window=cell.window,
                         temperature=cell.temperature, seed=cell.seed, cache=cell.cache, device=device,
                         progress=False)
        tokens = [r.tokens for r in records]
        seconds = sum(r.seconds for r in records)  # each record holds its batch's time / batch size
        batches = math.ceil(cell.num_samples / cell.batch_size)
        firsts = records[:: cell.batch_size]  # one record per batch carries that batch's NFEs
        nfe_d = sum(r.nfe_denoiser for r in firsts) / batches
        nfe_e = sum(r.nfe_energy for r in firsts) / batches
    texts = [bundle.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]  # as `edlm sample` decodes
    speed = {
        "length": length,
        "generation_seconds": seconds,
        "seconds_per_sample": None if seconds is None else seconds / cell.num_samples,
        "tokens_per_s": None if not seconds else cell.num_samples * length / seconds,
        "nfe_denoiser": nfe_d,  # network calls per batch (per generate() call), averaged over batches
        "nfe_energy": nfe_e,
        "peak_memory_bytes": peak_memory(device),
        "process_max_rss_bytes": _max_rss_bytes(),
        "hardware": hardware_string(device),
        "device": str(device),
        "torch_version": torch.__version__,
        "generated_date": _now(),
    }
    samples = [{"record": "sample", "index": i, "text": x, "tokens": t} for i, (x, t) in enumerate(zip(texts, tokens))]
    return samples, speed


def _real_text(cell: Cell, bundle, length: int) -> list[list[int]]:
    from edlm.data import load_corpus
    from edlm.eval.reference import real_text_reference

    corpus, _, split = cell.source.rpartition(":")
    texts = load_corpus(corpus, split)["text"]
    # one long document (tinyshakespeare's valid split is one stream) must give all chunks
    ref = real_text_reference(texts, length, bundle.tokenizer, cell.num_samples, chunks_per_text=cell.num_samples)
    return ref.tokens.tolist()


def _ar_samples(cell: Cell, models: _Models, length: int) -> tuple[list[list[int]], float, float]:
    """AR-model samples of ``length`` tokens; the first token is drawn from the denoiser's position-0 marginal.

    An AR model conditions on its first token and never predicts it, and rows packed by "wrap" start
    anywhere in the stream, so the first token comes from x_θ⁰(· | all masked): the denoiser's estimate
    of the marginal of a row's first token (exact float64 draw, SPEC 1.6). The AR model does the rest.
    """
    from edlm.baselines.ar_sampler import ar_sample
    from edlm.diffusion.categorical import sample_categorical, uniform64
    from edlm.diffusion.subs import subs_log_probs
    from edlm.eval.speed import Timer

    bundle, device = models.bundle, models.device
    ar_model = getattr(models.energy(cell.source), "ar_model", None)
    if ar_model is None:
        raise ConfigError(f"the AR reference model {cell.source!r} is not an autoregressive LM.")
    exclude = tuple(i for i in (bundle.mask_id, bundle.tokenizer.pad_token_id) if i is not None)
    generator = torch.Generator(device).manual_seed(cell.seed)
    tokens: list[list[int]] = []
    seconds, nfe = 0.0, 0
    for start in range(0, cell.num_samples, cell.batch_size):
        n = min(cell.batch_size, cell.num_samples - start)
        with Timer(device) as timer:
            x_t = torch.full((n, length), bundle.mask_id, dtype=torch.long, device=device)  # (n, L) all masked
            with torch.no_grad():
                logits = bundle.denoiser(x_t, torch.ones(n, device=device))  # (n, L, V+1)
            log_p0 = subs_log_probs(logits, x_t, bundle.mask_id)[:, 0]  # (n, V+1)
            if exclude:
                log_p0 = log_p0.index_fill(-1, torch.tensor(exclude, device=device), float("-inf"))
            first = sample_categorical(log_p0, uniform64((n,), generator, device))  # (n,)
            out = ar_sample(ar_model, first[:, None], length, generator, exclude_ids=exclude)
        tokens += out.tokens.cpu().tolist()
        seconds += timer.seconds
        nfe += out.nfe
    batches = math.ceil(cell.num_samples / cell.batch_size)
    return tokens, seconds, nfe / batches


# ----------------------------------------------------------------------------- scoring
def _score_cell(header: dict, samples: list[dict], judge, judge_batch_size: int) -> dict:
    """Quality of one cell's samples: gen-PPL under the judge (or None) and unigram entropy (SPEC 4)."""
    from edlm.eval.entropy import entropy_report

    start = time.perf_counter()
    ent = entropy_report([s["tokens"] for s in samples])
    quality = {"gen_ppl": None, "gen_ppl_se": None, "mean_nll_nats": None, "judge_tokens": None,
               "judge_skipped": None}
    if judge is not None:
        from edlm.eval.gen_ppl import generative_perplexity

        g = generative_perplexity([s["text"] for s in samples], judge, batch_size=judge_batch_size)
        per = [x for x in g.per_sample_nll if not math.isnan(x)]
        # spread over samples: standard error of the per-sample mean NLL, carried to gen-PPL by the delta method
        se = statistics.stdev(per) / math.sqrt(len(per)) if len(per) > 1 else None
        quality = {"gen_ppl": g.gen_ppl, "gen_ppl_se": None if se is None else g.gen_ppl * se,
                   "mean_nll_nats": g.mean_nll, "judge_tokens": g.num_tokens, "judge_skipped": g.num_skipped}
    n = ent.num_samples
    ent_se = statistics.stdev(ent.per_sample_bits) / math.sqrt(n) if n > 1 else None  # over samples
    quality.update(entropy_bits=ent.mean_bits, entropy_bits_se=ent_se, entropy_nats=ent.mean_nats,
                   score_seconds=time.perf_counter() - start)
    return quality


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
        "date": _now(),
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
        from edlm.eval.gen_ppl import DEFAULT_JUDGE, _resolve_source

        return "SmolLM2-135M-Instruct" if judge == DEFAULT_JUDGE else _resolve_source(judge)[2]
    return judge.name


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
    from edlm.pipeline import resolve_device

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
        judge: a ``Judge``, a judge name (``load_judge``), "none" (entropy only), or None = ``cfg.judge``.
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
    out.mkdir(parents=True, exist_ok=True)
    rank, world = resolve_shard(shard)
    device = _device(cfg.device)
    judge = cfg.judge if judge is None else judge
    judge_name = _judge_name(judge)
    command = command or _command()
    cells = expand_cells(cfg, corpus=_training_corpus(cfg))
    mine = [c for i, c in enumerate(cells) if i % world == rank]
    results_path = out / (_RESULTS if world == 1 else f"results.rank{rank}.jsonl")
    report = SweepReport(out=out, rank=rank, world_size=world, cells_total=len(cells), cells_mine=len(mine),
                         results_path=results_path)
    if rank == 0:
        atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))

    scored = {r["cell_key"] for r in read_results(out, judge=judge_name)}
    models = _Models(cfg, device)
    judge_obj = None
    scoring_hw = hardware_string(device)
    iterator = mine
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(mine, desc=f"sweep{f' {rank}/{world}' if world > 1 else ''}", unit="cell")
    for cell in iterator:
        did = False
        path = _samples_path(out, cell)
        if stage in ("generate", "all") and not _finished_samples(out, cell):
            samples, speed = _generate_cell(cell, models)
            header = {"record": "cell", "cell_key": cell.key, "method": cell.method, "settings": cell.settings(),
                      "speed": speed, "command": command}
            from edlm.pipeline import write_jsonl

            write_jsonl([header, *samples], path)  # atomic: a kill mid-cell leaves no file
            report.generated += 1
            did = True
            if on_cell_done is not None:
                on_cell_done(cell, "generate")
        if stage in ("score", "all") and cell.key not in scored:
            if not _finished_samples(out, cell):
                report.missing_samples.append(cell.key)
                continue
            if judge_obj is None:
                judge_obj = _load_judge(judge, device)  # once per process (load_judge caches it too)
            header, samples = read_samples(path)
            quality = _score_cell(header, samples, judge_obj, cfg.judge_batch_size)
            _append_jsonl(results_path, _row(header, quality, judge_name, scoring_hw, command))
            scored.add(cell.key)
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

            report.plots = plot_sweep(out, judge=judge_name)
        _write_meta(out, cfg, report, device, command)
    report.seconds = time.perf_counter() - started
    return report


def _write_meta(out: Path, cfg: SweepConfig, report: SweepReport, device: torch.device, command: str) -> None:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    meta = {
        "name": cfg.name,
        "hardware": hardware_string(device),
        "device": str(device),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _now(),
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
