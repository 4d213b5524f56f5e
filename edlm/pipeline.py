"""Glue for users and the ``edlm sample`` command: load a denoiser and an energy, sample, write JSONL.

    bundle = load_denoiser_bundle("runs/mdlm_tiny")            # DiT + tokenizer (+ [MASK], V, L)
    energy = load_energy("ar:runs/ar_tiny", bundle)             # or "hf:NAME", "nce:PATH", "none"
    records = sample(bundle, num_samples=8, batch_size=8, length=None, steps=64, energy=energy, k=4)
    write_jsonl(records, "samples.jsonl")                       # atomic: all records or no file

Energy specs (``load_energy``)::

    none                      plain MDLM (SPEC 1.6)
    ar:PATH                   a toolkit ARTransformer checkpoint -> AREnergy (SPEC 2.3)
    hf:NAME_OR_PATH           any Hugging Face causal LM (HFCausalLM) -> AREnergy (SPEC 2.3)
    nce:PATH                  a trained NCE energy (model type "nce_energy", SPEC 2.4)
    ...,carry_over=false      AR energies only: the exact energy instead of the paper's carry-over

Every energy must share the denoiser's tokenizer (``[MASK]`` aside); a mismatch is an error, never
patched up. A PATH may also be a training run directory (``edlm train``), whose ``model/`` is used.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edlm.atomic import atomic_write
from edlm.diffusion.categorical import compile_draws
from edlm.energy.ar_energy import AREnergy, check_same_tokenizer
from edlm.errors import CheckpointError, ConfigError, EdlmError
from edlm.models.checkpoints import (
    CONFIG_NAME,
    MODEL_TYPES,
    check_vocab,
    from_pretrained,
    load_denoiser,
    load_tokenizer_from,
    read_checkpoint_config,
    resolve_checkpoint_dir,
)
from edlm.models.compiling import _target, compile_networks
from edlm.models.dit import Denoiser
from edlm.samplers.loop import generate
from edlm.samplers.semi_ar import generate_semi_ar

__all__ = [
    "DenoiserBundle",
    "EnergySpec",
    "SampleSettings",
    "SampleRecord",
    "load_denoiser_bundle",
    "parse_energy_spec",
    "load_energy",
    "resolve_device",
    "sample",
    "format_records",
    "check_output_path",
    "write_jsonl",
]

ENERGY_KINDS = {"ar": "ar", "hf": None, "nce": "nce_energy"}  # spec prefix -> checkpoint model_type
_REGISTERED_BY = {"nce_energy": "edlm.energy.nce_energy"}  # model_type -> module that registers it
_AR_KINDS = ("ar", "hf")  # energies built as AREnergy (carry_over applies)
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


# ----------------------------------------------------------------------------- locating checkpoints
def _checkpoint_dir(path: str | os.PathLike) -> Path:
    """A checkpoint directory; a training run directory (``edlm train``) resolves to its exported ``model/``."""
    p = Path(path).expanduser()
    if p.is_dir() and not (p / CONFIG_NAME).is_file() and (p / "model" / CONFIG_NAME).is_file():
        return p / "model"
    return resolve_checkpoint_dir(p if p.exists() else str(path))  # a hub id is downloaded here


def _suggest(model_type: str, path) -> str:
    if model_type == "ar":
        return f"; an AR model serves as an energy: --energy ar:{path}"
    if model_type == "nce_energy":
        return f"; an NCE energy is passed as --energy nce:{path}"
    return ""


# ----------------------------------------------------------------------------- the denoiser
@dataclass
class DenoiserBundle:
    """A loaded denoiser and what sampling needs to know about it."""

    denoiser: Denoiser  # eval mode; ``denoiser(x_t (B, L), t (B,)) -> logits (B, L, V+1)``
    tokenizer: object  # PreTrainedTokenizerFast with a ``[MASK]`` token
    vocab_size: int  # V, real tokens (the logits have V + 1 classes)
    mask_id: int  # the ``[MASK]`` id
    length: int  # L, the longest sequence one forward pass takes
    path: Path  # the checkpoint directory it came from


def load_denoiser_bundle(path: str | os.PathLike, *, tokenizer=None,
                         map_location: str | torch.device = "cpu") -> DenoiserBundle:
    """Load a DiT denoiser checkpoint and its tokenizer.

    Args:
        path: a directory written by ``save_pretrained`` (with the tokenizer beside it), a training run
            directory, or a Hugging Face hub id in MDLM's layout.
        tokenizer: None = the one saved with the checkpoint; else a tokenizer object or a spec for
            ``edlm.data.tokenizers.load_tokenizer`` (e.g. "gpt2" for ``kuleshov-group/mdlm-owt``).
        map_location: device for the denoiser.

    Raises:
        CheckpointError: no checkpoint, a checkpoint of another type (e.g. an AR model), no tokenizer, or a
            tokenizer that does not fit the model (size or ``[MASK]`` id).
    """
    directory = _checkpoint_dir(path)
    model_type = read_checkpoint_config(directory)["model_type"]
    if model_type not in ("dit", "mdlm"):
        raise CheckpointError(f"{path} holds a model of type {model_type!r}, not a diffusion denoiser (DiT)"
                              f"{_suggest(model_type, path)}.")
    if tokenizer is None:
        tokenizer = load_tokenizer_from(directory)
        if tokenizer is None:
            raise CheckpointError(f"no tokenizer saved with the denoiser in {directory}; save it with "
                                  "save_pretrained(model, dir, tokenizer=tok) or pass one (--tokenizer).")
    elif isinstance(tokenizer, (str, os.PathLike)):
        from edlm.data.tokenizers import load_tokenizer  # heavy (transformers); only when asked

        tokenizer = load_tokenizer(tokenizer)
    denoiser = load_denoiser(directory, map_location=map_location).eval()
    check_vocab(denoiser, tokenizer)
    if getattr(tokenizer, "mask_token_id", None) != denoiser.mask_id:
        raise CheckpointError(f"the denoiser in {directory} uses [MASK] id {denoiser.mask_id} but its tokenizer's "
                              f"mask token id is {getattr(tokenizer, 'mask_token_id', None)}; they do not belong "
                              "together.")
    return DenoiserBundle(denoiser=denoiser, tokenizer=tokenizer, vocab_size=denoiser.vocab_size - 1,
                          mask_id=denoiser.mask_id, length=denoiser.length, path=directory)


# ----------------------------------------------------------------------------- energies
@dataclass(frozen=True)
class EnergySpec:
    """A parsed ``--energy`` value: ``kind`` ("ar", "hf", "nce"), ``target`` (path or hub name), options."""

    kind: str
    target: str
    carry_over: bool = True  # SPEC 2.3, the paper's default; AR energies only

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}" + ("" if self.carry_over else ",carry_over=false")


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"energy option {key} must be true or false, got {value!r}.")


def parse_energy_spec(spec: str | None) -> EnergySpec | None:
    """``none`` -> None; ``KIND:TARGET[,carry_over=true|false]`` -> ``EnergySpec`` (KIND in ar, hf, nce)."""
    grammar = "expected none, ar:PATH, hf:NAME_OR_PATH or nce:PATH, optionally followed by ,carry_over=false"
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in ENERGY_KINDS:
        raise ConfigError(f"bad energy spec {spec!r}: {grammar}.")
    options: dict[str, bool] = {}
    while True:  # trailing ",key=value" options; a path may hold commas, but not ",key=value"
        head, comma, tail = rest.rpartition(",")
        if not comma or "=" not in tail:
            break
        key, _, value = (s.strip() for s in tail.partition("="))
        if key != "carry_over":
            raise ConfigError(f"unknown energy option {key!r} in {spec!r}; the only option is carry_over.")
        if key in options:
            raise ConfigError(f"energy option {key} is given twice in {spec!r}.")
        options[key] = _parse_bool(key, value)
        rest = head
    target = rest.strip()
    if not target:
        raise ConfigError(f"bad energy spec {spec!r}: {kind}: needs a path or name after the colon.")
    if options and kind not in _AR_KINDS:
        raise ConfigError(f"carry_over applies to AR energies (ar:, hf:) only, not to {kind}: ({spec!r}).")
    return EnergySpec(kind, target, **options)


def _load_hf(target: str, device) -> tuple[torch.nn.Module, object]:
    from edlm.models.hf import HFCausalLM

    try:
        model = HFCausalLM.from_pretrained(target)
    except Exception as exc:  # OSError, hub errors, bad configs: one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"cannot load the Hugging Face causal LM {target!r}: {type(exc).__name__}: "
                              f"{first}") from exc
    return model.to(device).eval(), model.tokenizer


def _ensure_registered(model_type: str) -> None:
    """Import the module that registers ``model_type`` (the NCE energy registers itself on import)."""
    if model_type in MODEL_TYPES:
        return
    try:
        importlib.import_module(_REGISTERED_BY[model_type])
    except ModuleNotFoundError as exc:
        raise EdlmError(f"model type {model_type!r} is not available in this installation of edlm "
                        f"({exc}).") from exc
    if model_type not in MODEL_TYPES:
        raise EdlmError(f"model type {model_type!r} is not registered; known: {sorted(MODEL_TYPES)}.")


def _load_checkpoint_energy(spec: EnergySpec, bundle: DenoiserBundle, device) -> torch.nn.Module:
    model_type = ENERGY_KINDS[spec.kind]
    _ensure_registered(model_type)
    directory = _checkpoint_dir(spec.target)
    found = read_checkpoint_config(directory)["model_type"]
    if found != model_type:
        hint = " (a diffusion denoiser is passed with --denoiser)" if found in ("dit", "mdlm") else ""
        raise CheckpointError(f"{spec.target} holds a model of type {found!r}, but the energy {spec.kind}: needs "
                              f"type {model_type!r}{hint}.")
    tokenizer = load_tokenizer_from(directory)
    if tokenizer is None:
        raise CheckpointError(f"no tokenizer saved with the energy in {directory}; it must share the denoiser's "
                              "tokenizer: save it with save_pretrained(model, dir, tokenizer=tok).")
    check_same_tokenizer(bundle.tokenizer, tokenizer, names=("denoiser", f"energy {spec}"))  # before the weights
    model = from_pretrained(directory, expected_type=model_type, map_location=device)
    check_vocab(model, tokenizer)
    return model


def load_energy(spec: str | EnergySpec | None, bundle: DenoiserBundle,
                device: str | torch.device = "cpu"):
    """Build the energy an ``--energy`` spec names, checked against the denoiser; None for ``none``.

    The energy's tokenizer (saved beside it, or the Hugging Face model's own) must map every string to
    the same id as the denoiser's (``[MASK]`` aside), and its vocabulary must cover the V real tokens.
    The returned energy has the energy call signature and carries ``.spec`` (the spec as a string) for
    the sample records.

    Raises:
        ConfigError: a malformed spec. CheckpointError: a missing or wrong checkpoint.
        ValueError: a tokenizer or vocabulary mismatch.
    """
    parsed = spec if isinstance(spec, EnergySpec) or spec is None else parse_energy_spec(spec)
    if parsed is None:
        return None
    device = torch.device(device)
    if parsed.kind == "hf":
        model, tokenizer = _load_hf(parsed.target, device)
        if tokenizer is None:
            raise CheckpointError(f"the Hugging Face model {parsed.target!r} has no tokenizer to check against "
                                  "the denoiser's.")
        check_same_tokenizer(bundle.tokenizer, tokenizer, names=("denoiser", f"energy {parsed}"))
    else:
        model = _load_checkpoint_energy(parsed, bundle, device)
    V = bundle.vocab_size
    model_vocab = getattr(model, "vocab_size", None)
    if not isinstance(model_vocab, int) or model_vocab < V or (parsed.kind != "hf" and model_vocab > V + 1):
        raise ValueError(f"tokenizer mismatch: the energy {parsed} has {model_vocab} ids but the denoiser has "
                         f"{V} real tokens (+1 for [MASK]); both must use the same tokenizer.")
    model_mask = getattr(model, "mask_id", None)
    if isinstance(model_mask, int) and model_mask != bundle.mask_id:
        raise ValueError(f"the energy {parsed} uses [MASK] id {model_mask} but the denoiser uses {bundle.mask_id}; "
                         "they were not made with the same tokenizer.")
    if parsed.kind in _AR_KINDS:
        # An HF model may pad its embedding beyond the tokenizer; the padded rows are never read, since the
        # tokenizers match, so the energy reports the shared size to generate()'s vocabulary check.
        energy = AREnergy(model, bundle.mask_id, carry_over=parsed.carry_over,
                          vocab_size=min(model_vocab, V + 1))
    else:
        energy = model
    energy.spec = str(parsed)
    return energy


# ----------------------------------------------------------------------------- sampling
def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else CPU; ``cpu``; ``cuda`` / ``cuda:N`` (an error if unavailable)."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EdlmError(f"device {name!r} was asked for, but CUDA is not available here; use --device cpu.")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N.")
    return device


DTYPES = {"checkpoint": None, "float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``checkpoint`` / None -> None (the networks keep the dtype they were saved in); ``float32``; ``bfloat16``."""
    if name is None or isinstance(name, torch.dtype) and name in DTYPES.values():
        return name
    if isinstance(name, str) and name.strip().lower() in DTYPES:
        return DTYPES[name.strip().lower()]
    raise ValueError(f"unsupported dtype {name!r}; use one of {', '.join(DTYPES)}.")


def _cast(energy, dtype: torch.dtype) -> None:
    """Cast an energy's network in place (the module `compile_networks` compiles: an ``AREnergy``'s AR model)."""
    net = _target(energy)
    if isinstance(net, torch.nn.Module):
        net.to(dtype=dtype)


def _positive_int(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


@dataclass(frozen=True)
class SampleSettings:
    """Everything ``sample`` needs besides the models, checked on construction (before anything loads)."""

    num_samples: int
    batch_size: int
    length: int | None  # None = the denoiser's length L; > L needs ``stride`` (semi-autoregressive)
    steps: int  # T reverse steps per block
    k: int = 1  # proposals per importance-sampled step (SPEC 2.5); 1 = MDLM
    window: tuple[float, float] = (0.0, 1.0)  # (t_lo, t_hi): steps starting inside are importance-sampled
    temperature: float = 1.0  # τ in w ∝ exp(−E/τ)
    seed: int = 0  # seeds one torch.Generator for the whole run
    top_p: float = 1.0  # nucleus filtering of the proposals (1 = off)
    noise_removal: bool = True  # argmax any mask left at the end (MDLM)
    cache: bool = True  # reuse x_θ when nothing was revealed (SPEC 1.6)
    stride: int | None = None  # S new tokens per semi-autoregressive block

    def __post_init__(self):
        for name in ("num_samples", "batch_size", "steps", "k"):
            _positive_int(name, getattr(self, name))
        _positive_int("length", self.length, allow_none=True)
        _positive_int("stride", self.stride, allow_none=True)
        window = tuple(float(w) for w in self.window)
        if len(window) != 2 or not 0.0 <= window[0] <= window[1] <= 1.0:
            raise ValueError(f"window must be (t_lo, t_hi) with 0 <= t_lo <= t_hi <= 1, got {tuple(self.window)}.")
        object.__setattr__(self, "window", window)
        if not self.temperature > 0.0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}.")

    def resolve_length(self, bundle: DenoiserBundle) -> int:
        """The length to sample; fails if it exceeds the model's without a stride (or a stride is useless)."""
        length = bundle.length if self.length is None else self.length
        if length > bundle.length:
            if self.stride is None:
                raise ValueError(f"length {length} exceeds the denoiser's context of {bundle.length} tokens; pass "
                                 f"a stride (--stride S, 0 < S <= {bundle.length}) for semi-autoregressive sampling.")
            if self.stride > bundle.length:
                raise ValueError(f"stride must be at most the denoiser's context of {bundle.length}, got "
                                 f"{self.stride}.")
        elif self.stride is not None:
            raise ValueError(f"stride applies only when length exceeds the denoiser's context ({bundle.length}); "
                             f"length is {length}.")
        return length


@dataclass
class SampleRecord:
    """One generated sequence; ``seconds`` and the NFEs describe the batch that made it."""

    index: int  # position in the run (0 … num_samples − 1)
    text: str  # decoded, special tokens stripped
    tokens: list[int]
    settings: dict = field(default_factory=dict)  # JSON-able: models, sampler settings, device
    seconds: float = 0.0  # wall-clock time of its batch / batch size
    nfe_denoiser: int = 0  # denoiser calls of its batch
    nfe_energy: int = 0  # energy calls of its batch

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _energy_length(energy) -> int | None:
    for obj in (energy, getattr(energy, "ar_model", None)):
        value = getattr(obj, "length", None)
        if isinstance(value, int):
            return value
    return None


def sample(bundle: DenoiserBundle, *, num_samples: int, batch_size: int, length: int | None, steps: int,
           energy=None, k: int = 1, window: tuple[float, float] = (0.0, 1.0), temperature: float = 1.0,
           seed: int = 0, top_p: float = 1.0, noise_removal: bool = True, cache: bool = True,
           device: str | torch.device = "cpu", progress: bool = True, stride: int | None = None,
           compile: bool = False, freeze: bool = True, cuda_graphs: bool = True,
           dtype: str | torch.dtype | None = None) -> list[SampleRecord]:
    """Generate ``num_samples`` sequences, ``batch_size`` at a time, with MDLM or EDLM (SPEC 1.6, 2.5).

    One ``torch.Generator(device).manual_seed(seed)`` drives the whole run, so the same settings (batch size
    included) and seed give the same tokens. ``length`` > the model's L samples semi-autoregressively with
    ``stride`` new tokens per block; ``length=None`` means L. ``k``, ``window`` and ``temperature`` need an
    energy: without one they would be ignored, so they are refused. ``compile`` torch.compiles the denoiser
    and energy networks in place first (`edlm.models.compile_networks`; with ``freeze`` the compiled graphs keep
    these weights as constants and hold a second copy of them: faster calls, more memory; with ``cuda_graphs`` each
    energy call on a GPU replays a CUDA graph, its outputs being small), and the exact proposal draw
    (`edlm.diffusion.categorical.compile_draws`, process-wide): worth it on a GPU for long runs; the samples
    are the same up to floating-point rounding. ``dtype`` (``bfloat16``, ``float32``; None: as saved) casts the
    denoiser and the energy network in place first; bf16 is what `benchmarks/speed.py` measures on a GPU, and its
    samples differ from float32's by the networks' rounding (the draws stay exact: float64, and on a GPU an IS step's
    k proposals come from float32 block bounds with an exact float64 accept / redraw, `categorical._draw_fast`).
    """
    dtype = resolve_dtype(dtype)
    settings = SampleSettings(num_samples=num_samples, batch_size=batch_size, length=length, steps=steps, k=k,
                              window=window, temperature=temperature, seed=seed, top_p=top_p,
                              noise_removal=noise_removal, cache=cache, stride=stride)
    length = settings.resolve_length(bundle)
    if energy is None and (k != 1 or settings.window != (0.0, 1.0) or temperature != 1.0):
        raise ValueError(f"k, window and temperature only apply with an energy (--energy); got k={k}, "
                         f"window={settings.window}, temperature={temperature} and no energy.")
    if not freeze and not compile:
        raise ValueError("freeze=False (--no-freeze) only applies with compile=True (--compile).")
    if not cuda_graphs and not compile:
        raise ValueError("cuda_graphs=False (--no-cuda-graphs) only applies with compile=True (--compile).")
    block = min(length, bundle.length)
    energy_len = _energy_length(energy)
    if energy_len is not None and energy_len < block:
        raise ValueError(f"the energy reads at most {energy_len} tokens but is asked to score blocks of {block}.")
    device = torch.device(device)
    denoiser = bundle.denoiser.to(device).eval()
    if dtype is not None:
        denoiser.to(dtype=dtype)
        _cast(energy, dtype)
    if compile:
        compile_networks(denoiser, energy, freeze=freeze, cuda_graphs=cuda_graphs)  # the weights never change while sampling
        compile_draws()  # the exact proposal draw too (fused; same draws)
    generator = torch.Generator(device).manual_seed(seed)
    record_settings = {"denoiser": str(bundle.path), "energy": getattr(energy, "spec", None) if energy is not None
                       else "none", **dataclasses.asdict(settings), "length": length, "device": str(device),
                       "dtype": str(next(denoiser.parameters()).dtype).removeprefix("torch.")}
    record_settings["window"] = list(settings.window)
    kwargs = dict(energy=energy, k=k, window=settings.window, temperature=temperature, cache=cache,
                  generator=generator, noise_removal=noise_removal, top_p=top_p, device=device, progress=progress)
    records: list[SampleRecord] = []
    while len(records) < num_samples:
        n = min(batch_size, num_samples - len(records))
        if length > bundle.length:  # SPEC 1.6, semi-autoregressive
            out = generate_semi_ar(denoiser, length, bundle.length, stride, n, bundle.vocab_size, bundle.mask_id,
                                   steps, **kwargs)
        else:
            out = generate(denoiser, length, n, bundle.vocab_size, bundle.mask_id, steps, **kwargs)
        for row in out.tokens.cpu().tolist():
            records.append(SampleRecord(
                index=len(records), text=bundle.tokenizer.decode(row, skip_special_tokens=True), tokens=row,
                settings=dict(record_settings), seconds=out.seconds / n, nfe_denoiser=out.nfe_denoiser,
                nfe_energy=out.nfe_energy))
    return records


# ----------------------------------------------------------------------------- output
def format_records(records: list[SampleRecord], show_text: bool = True) -> str:
    """A settings header, a speed line, then each sample's text under a separator."""
    if not records:
        return "(no samples)"
    s = records[0].settings
    n = len(records)
    header = (f"# edlm sample: denoiser={s['denoiser']} energy={s['energy']} steps={s['steps']} k={s['k']} "
              f"window={tuple(s['window'])} temperature={s['temperature']} top_p={s['top_p']} seed={s['seed']} "
              f"length={s['length']}" + (f" stride={s['stride']}" if s.get("stride") else "") +
              f" device={s['device']}")
    speed = (f"# {n} samples: {sum(r.seconds for r in records) / n:.4f} s/sample, denoiser NFE "
             f"{sum(r.nfe_denoiser for r in records) / n:.1f}, energy NFE {sum(r.nfe_energy for r in records) / n:.1f}"
             " (per batch, averaged over samples)")
    lines = [header, speed]
    if show_text:
        for r in records:
            lines += [f"----- sample {r.index} -----", r.text]
    return "\n".join(lines)


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail before sampling, not after, if ``path`` cannot be an output file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output path {path} is a directory; give a file name such as {path / 'samples.jsonl'}.")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write {path}: {parent} is not a writable directory.")
    return path


def write_jsonl(records: Iterable[SampleRecord | dict], path: str | os.PathLike) -> Path:
    """Write one JSON object per line, atomically: a temporary file renamed over ``path`` when complete.

    An error or Ctrl-C while writing leaves no file (and no half-written one) behind; the parent
    directory is created if needed.
    """
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r.to_json() if isinstance(r, SampleRecord) else r, ensure_ascii=False) + "\n")

    return atomic_write(check_output_path(path), write)
