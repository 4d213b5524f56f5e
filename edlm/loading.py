"""Loading for users and the ``edlm sample`` command: a denoiser bundle, an energy, the device and dtype.

    bundle = load_denoiser_bundle("runs/tiny-mdlm")            # DiT + tokenizer (+ [MASK], V, L)
    energy = load_energy("ar:runs/tiny-ar", bundle)             # or "hf:NAME", "nce:PATH", "none"
    device = resolve_device("auto")                             # CUDA if available, else CPU

Energy specs (``load_energy``)::

    none                      plain MDLM (SPEC 1.6)
    ar:PATH                   a toolkit ARTransformer checkpoint -> AREnergy (SPEC 2.3)
    hf:NAME_OR_PATH           any Hugging Face causal LM (SPEC 2.3): AREnergy over the diffusion ids when it
                              shares the denoiser's tokenizer, else TextLMEnergy (decode, retokenise, score);
                              NAME_OR_PATH: a hub name, a folder, DIR/model.gguf, smollm2 or gemma3
    nce:PATH                  a trained NCE energy (model type "nce_energy", SPEC 2.4)
    ...,carry_over=false      AR energies only: the exact energy instead of the paper's carry-over

``ar:`` and ``nce:`` energies must share the denoiser's tokenizer (``[MASK]`` aside); a mismatch is an error, never
patched up. A PATH may also be a training run directory (``edlm train``), whose ``model/`` is used.
Sampling with what this loads is ``edlm.pipeline``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from edlm.energy.ar_energy import AREnergy, check_same_tokenizer, same_tokenizer
from edlm.energy.text_energy import TextLMEnergy
from edlm.errors import CheckpointError, ConfigError, EdlmError, first_line
from edlm.models.checkpoints import (
    DENOISER_TYPES,
    MODEL_TYPES,
    check_vocab,
    from_pretrained,
    load_denoiser,
    load_tokenizer_from,
    looks_local,
    read_checkpoint_config,
    resolve_checkpoint_dir,
)
from edlm.models.dit import Denoiser

__all__ = [
    "DTYPES",
    "ENERGY_KINDS",
    "DenoiserBundle",
    "EnergySpec",
    "load_denoiser_bundle",
    "parse_energy_spec",
    "load_energy",
    "resolve_device",
    "resolve_dtype",
]

ENERGY_KINDS = {"ar": "ar", "hf": None, "nce": "nce_energy"}  # spec prefix -> checkpoint model_type
_REGISTERED_BY = {"nce_energy": "edlm.energy.nce_energy"}  # model_type -> module that registers it
_AR_KINDS = ("ar", "hf")  # energies built as AREnergy (carry_over applies)
ENERGY_DTYPES = ("float32", "bfloat16", "float16")  # the dtype= option of hf: energies
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")  # any one will do
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


# ----------------------------------------------------------------------------- locating checkpoints
def _checkpoint_dir(path: str | os.PathLike, train_kind: str | None = None) -> Path:
    """A checkpoint directory; a training run directory (``edlm train``) resolves to its exported ``model/``; a
    missing local-looking path says which ``edlm train {train_kind}`` would make it (no hub request)."""
    return resolve_checkpoint_dir(str(path), train_kind=train_kind)  # a hub id (owner/name) is downloaded here


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
    """Load a denoiser checkpoint (a DiT, or a Hugging Face masked LM trained by ``edlm train mdlm``) and its
    tokenizer.

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
    directory = _checkpoint_dir(path, "mdlm")
    model_type = read_checkpoint_config(directory)["model_type"]
    if model_type not in (*DENOISER_TYPES, "mdlm"):
        raise CheckpointError(f"{path} holds a model of type {model_type!r}, not a diffusion denoiser (DiT or "
                              f"Hugging Face masked LM){_suggest(model_type, path)}.")
    if tokenizer is None:
        tokenizer = load_tokenizer_from(directory)
        if tokenizer is None:
            raise CheckpointError(f"no tokenizer saved with the denoiser in {directory}; pass the one it was "
                                  "trained with (--tokenizer, e.g. gpt2 for MDLM's OpenWebText model).")
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
    dtype: str | None = None  # hf: energies only: the LM's weights and activations (None: as loaded, float32)

    def __str__(self) -> str:
        return (f"{self.kind}:{self.target}" + ("" if self.carry_over else ",carry_over=false")
                + (f",dtype={self.dtype}" if self.dtype else ""))


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"energy option {key} must be true or false, got {value!r}.")


def parse_energy_spec(spec: str | None) -> EnergySpec | None:
    """``none`` -> None; ``KIND:TARGET[,carry_over=true|false][,dtype=D]`` -> ``EnergySpec`` (KIND in ar, hf, nce).

    ``dtype`` (hf: only; float32, bfloat16 or float16) runs the LM in that precision: bfloat16 is ~3× faster on a
    CPU with AVX512-BF16 and on any GPU, at a few hundredths of a nat per sequence (docs/hf_energy.md)."""
    grammar = ("expected none, ar:PATH, hf:NAME_OR_PATH or nce:PATH, optionally followed by ,carry_over=false "
               "(and ,dtype=bfloat16 for hf:)")
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in ENERGY_KINDS:
        raise ConfigError(f"bad energy spec {spec!r}: {grammar}.")
    options: dict[str, object] = {}
    while True:  # trailing ",key=value" options; a path may hold commas, but not ",key=value"
        head, comma, tail = rest.rpartition(",")
        if not comma or "=" not in tail:
            break
        key, _, value = (s.strip() for s in tail.partition("="))
        if key not in ("carry_over", "dtype"):
            raise ConfigError(f"unknown energy option {key!r} in {spec!r}; the options are carry_over and dtype.")
        if key in options:
            raise ConfigError(f"energy option {key} is given twice in {spec!r}.")
        if key == "dtype" and value.lower() not in ENERGY_DTYPES:
            raise ConfigError(f"energy option dtype must be one of {', '.join(ENERGY_DTYPES)}, got {value!r}.")
        options[key] = value.lower() if key == "dtype" else _parse_bool(key, value)
        rest = head
    target = rest.strip()
    if not target:
        raise ConfigError(f"bad energy spec {spec!r}: {kind}: needs a path or name after the colon.")
    if "carry_over" in options and kind not in _AR_KINDS:
        raise ConfigError(f"carry_over applies to AR energies (ar:, hf:) only, not to {kind}: ({spec!r}).")
    if "dtype" in options and kind != "hf":
        raise ConfigError(f"dtype applies to hf: energies only, not to {kind}: ({spec!r}).")
    return EnergySpec(kind, target, **options)


def _load_hf(target: str, device) -> tuple[torch.nn.Module, object, str]:
    """An ``hf:`` target -> (HFCausalLM on ``device``, its tokenizer or None, a display name).

    ``smollm2`` / ``gemma3`` are the packaged GGUF judges' weights; a ``.gguf`` file, or a folder whose only weights
    are one ``.gguf`` file, loads through ``from_pretrained(folder, gguf_file=...)``; anything else is a hub name or a
    ``save_pretrained`` folder (safetensors only)."""
    from edlm.models.hf import HFCausalLM, refuse_pickled_weights
    from edlm.models.hf_sources import resolve_hf_source

    local = looks_local(target) or target.endswith(".gguf")
    if local and not Path(target).expanduser().exists():  # a path, not a hub name: no hub request
        raise CheckpointError(f"no such model directory: {target} (hf: takes a Hugging Face causal LM: a hub name "
                              "such as gpt2, a local folder, a .gguf file, smollm2 or gemma3)")
    source = resolve_hf_source(target)
    refuse_pickled_weights(source.folder, "energy")  # and use_safetensors=True: never unpickle a download either
    weights = {"gguf_file": source.gguf_file} if source.gguf_file else {"use_safetensors": True}
    try:
        model = HFCausalLM.from_pretrained(source.folder, load_tokenizer=False, **weights)
    except Exception as exc:  # OSError, hub errors, bad configs: one line for the user
        where = "" if local or Path(source.folder).exists() else " (not a local folder, and the hub could not provide it)"
        raise CheckpointError(f"cannot load the Hugging Face causal LM {target!r}{where}: {type(exc).__name__}: "
                              f"{first_line(exc, default='')}") from exc
    return model.to(device).eval(), _load_hf_tokenizer(source), source.name


def _load_hf_tokenizer(source):
    """The LM's own tokenizer (from the GGUF file where the weights are one), or None where it has none."""
    from transformers import AutoTokenizer

    folder = Path(source.folder).expanduser()
    if not source.gguf_file and folder.is_dir() and not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        return None  # transformers would make an empty tokenizer of the config's class here
    try:
        return AutoTokenizer.from_pretrained(source.folder, **({"gguf_file": source.gguf_file} if source.gguf_file
                                                               else {}))
    except (OSError, ValueError, TypeError):
        return None


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
    directory = _checkpoint_dir(spec.target, "ar" if spec.kind == "ar" else "energy")
    found = read_checkpoint_config(directory)["model_type"]
    if found != model_type:
        hint = " (a diffusion denoiser is passed with --denoiser)" if found in ("dit", "mdlm") else ""
        raise CheckpointError(f"{spec.target} holds a model of type {found!r}, but the energy {spec.kind}: needs "
                              f"type {model_type!r}{hint}.")
    tokenizer = load_tokenizer_from(directory)
    if tokenizer is None:
        raise CheckpointError(f"no tokenizer saved with the energy in {directory}; an energy is checked against "
                              "the denoiser's tokenizer, so it must be saved with it (as `edlm train` does).")
    check_same_tokenizer(bundle.tokenizer, tokenizer, names=("denoiser", f"energy {spec}"))  # before the weights
    model = from_pretrained(directory, expected_type=model_type, map_location=device)
    check_vocab(model, tokenizer)
    return model


def load_energy(spec: str | EnergySpec | None, bundle: DenoiserBundle,
                device: str | torch.device = "cpu"):
    """Build the energy an ``--energy`` spec names, checked against the denoiser; None for ``none``.

    An ``ar:``/``nce:`` energy's tokenizer (saved beside it) must map every string to the same id as the
    denoiser's (``[MASK]`` aside), and its vocabulary must cover the V real tokens. An ``hf:`` LM with that same
    tokenizer reads the ids directly (``AREnergy``); one with another tokenizer scores decoded text
    (``TextLMEnergy``, docs/hf_energy.md).
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
        model, tokenizer, name = _load_hf(parsed.target, device)
        if parsed.dtype:
            model = model.to(getattr(torch, parsed.dtype))
        if tokenizer is None:
            raise CheckpointError(f"the Hugging Face model {parsed.target!r} has no tokenizer: an energy LM reads text "
                                  "through its own tokenizer, so save it beside the weights.")
        if not same_tokenizer(bundle.tokenizer, tokenizer):  # SPEC 2.3 through text: decode, retokenise, score
            energy = TextLMEnergy(model, tokenizer, bundle.tokenizer, bundle.mask_id, name=f"the energy LM {name}")
            energy.spec = str(parsed)
            return energy
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


# ----------------------------------------------------------------------------- device and dtype
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
