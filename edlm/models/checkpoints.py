"""Save and load models as ``config.json`` + ``model.safetensors``, including MDLM's hub layout.

An edlm checkpoint directory holds::

    config.json         {"model_type": "dit", "config": {constructor args}, "extra": {...}, ...}
    model.safetensors   the state dict (weights only; pickles are never read)
    tokenizer.json ...  optional, written by the tokenizer's own ``save_pretrained``

``from_pretrained`` also reads MDLM's Hugging Face hub layout (``kuleshov-group/mdlm-owt``: ``model_type``
"mdlm", fields ``hidden_dim``/``model_length``/..., weights under ``backbone.``) through explicit maps
(``MDLM_HUB_CONFIG_MAP``, ``MDLM_HUB_KEY_MAP`` in ``edlm.models.mdlm_layout``), as torchtune's
``convert_weights.py`` does, with its keys under ``backbone.`` or bare. MDLM's Lightning ``.ckpt`` is converted
once by ``edlm.models.mdlm_release`` (``edlm convert``). Every failure is a ``CheckpointError`` that says what is
wrong and where.

New model kinds (e.g. an NCE energy network) join with ``register_model_type(name, cls)``; a registered
class must offer ``get_config() -> dict`` of JSON-able constructor arguments, so that
``cls(**model.get_config())`` rebuilds it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edlm.atomic import atomic_write, atomic_write_text
from edlm.diffusion.schedules import NoiseSchedule, get_schedule
from edlm.errors import CheckpointError
from edlm.models.ar import ARTransformer
from edlm.models.dit import Denoiser, DiT
from edlm.models.mdlm_layout import MDLM_HUB_CONFIG_MAP, MDLM_HUB_KEY_MAP, convert_mdlm_hub
from edlm.models.quantize import FORMATS, dequantize, quantize
from edlm.models.tied import tied_parameters, untie

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "MODEL_TYPES",
    "DENOISER_TYPES",
    "MDLM_HUB_CONFIG_MAP",
    "MDLM_HUB_KEY_MAP",
    "register_model_type",
    "save_pretrained",
    "from_pretrained",
    "build_model",
    "load_denoiser",
    "resolve_checkpoint_dir",
    "looks_local",
    "read_checkpoint_config",
    "convert_mdlm_hub",
    "load_tokenizer_from",
    "check_vocab",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"  # sharded safetensors (Hugging Face convention)
FORMAT_VERSION = 1  # bump when the config.json layout changes

MODEL_TYPES: dict[str, type[nn.Module]] = {"dit": DiT, "ar": ARTransformer}
# Backbones that `load_denoiser` wraps as a Denoiser: MDLM's DiT and a Hugging Face masked LM (edlm.models.hf_mlm,
# which registers "hf_mlm" when edlm.models is imported).
DENOISER_TYPES = ("dit", "hf_mlm")

# Keys a checkpoint may omit: buffers that the model recomputes from its config.
_OPTIONAL_KEYS = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model"]  # config, weights, tokenizer; never pickles


# ----------------------------------------------------------------------------- registry
def register_model_type(name: str, cls: type[nn.Module]) -> None:
    """Make ``cls`` saveable and loadable under ``model_type = name``.

    ``cls`` must define ``get_config() -> dict`` such that ``cls(**model.get_config())`` rebuilds the
    model. Registering the same class twice is a no-op; another class under a taken name is an error.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model type name must be a non-empty string, got {name!r}.")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or not callable(getattr(cls, "get_config", None)):
        raise TypeError(f"{cls!r} must be an nn.Module subclass with a `get_config() -> dict` method.")
    if name in MODEL_TYPES and MODEL_TYPES[name] is not cls:
        raise ValueError(f"model type {name!r} is already registered to {MODEL_TYPES[name].__qualname__}.")
    MODEL_TYPES[name] = cls


def _model_type_of(model: nn.Module) -> str:
    for name, cls in MODEL_TYPES.items():
        if type(model) is cls:
            return name
    raise CheckpointError(f"cannot save a {type(model).__qualname__}: it is not a registered model type "
                          f"({sorted(MODEL_TYPES)}); call edlm.models.register_model_type(name, cls) first.")


# ----------------------------------------------------------------------------- saving
def _schedule_record(schedule: NoiseSchedule) -> dict:
    return {"name": schedule.name, **{k: v for k, v in vars(schedule).items() if isinstance(v, (int, float))}}


def save_pretrained(model: nn.Module, directory: str | os.PathLike, *, tokenizer=None,
                    extra: dict | None = None, dtype: torch.dtype | str | None = None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (each atomically) and, if given, the tokenizer.

    ``dtype`` stores floating-point weights in that type (e.g. ``torch.float16`` halves a shipped
    model; buffers keep theirs); `from_pretrained` casts them back to the model's own dtype (float32) on load.
    ``"int8"`` (or ``torch.int8``) stores each weight matrix as int8 with row-wise scales, ``"int4"`` as packed
    int4 with a scale per 64 entries of a row (`edlm.models.quantize`); the other parameters go as float16.

    A ``Denoiser`` is saved as its backbone plus its ``mask_id`` and schedule, which ``load_denoiser``
    restores. ``extra`` is any JSON-able metadata (training config, step, ...), stored under "extra".

    Returns:
        The directory.
    """
    directory = Path(directory)
    denoiser = None
    if isinstance(model, Denoiser):
        denoiser = {"mask_id": model.mask_id, "schedule": _schedule_record(model.schedule)}
        model = model.backbone
    model_type = _model_type_of(model)
    if tokenizer is not None:
        check_vocab(model, tokenizer)
    config = {
        "model_type": model_type,
        "format_version": FORMAT_VERSION,
        "config": model.get_config(),
        "extra": dict(extra or {}),
    }
    if denoiser is not None:
        config["denoiser"] = denoiser
    tied = tied_parameters(model)
    if tied:
        config["tied"] = tied  # stored once, under the first name; from_pretrained fills the others in
    try:
        text = json.dumps(config, indent=2, sort_keys=False) + "\n"
    except TypeError as exc:
        raise CheckpointError(f"config for {directory} is not JSON-serialisable ({exc}); "
                              "pass only plain numbers, strings, lists and dicts in `extra`.") from exc

    fmt = "int8" if isinstance(dtype, torch.dtype) and dtype == torch.int8 else dtype  # torch has no int4 dtype
    if isinstance(fmt, str) and fmt not in FORMATS:
        raise CheckpointError(f"dtype must be a torch floating dtype or one of {', '.join(FORMATS)}, got {fmt!r}.")
    params = {name for name, _ in model.named_parameters()}  # buffers (e.g. rotary frequencies) stay exact
    stored = torch.float16 if isinstance(fmt, str) else dtype
    state = {k: v.detach().to("cpu", stored if stored is not None and k in params else v.dtype).contiguous()
             for k, v in model.state_dict().items() if k not in tied}
    if isinstance(fmt, str):
        try:
            state = quantize(state, params, fmt)
        except ValueError as exc:  # weights int4's float16 scales cannot hold
            raise CheckpointError(f"cannot store {directory} as {fmt}: {exc}") from exc
    directory.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    except RuntimeError as exc:  # e.g. tied (shared) tensors, which safetensors refuses
        raise CheckpointError(f"could not write {directory / WEIGHTS_NAME}: {exc}") from exc
    atomic_write_text(directory / CONFIG_NAME, text)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


# ----------------------------------------------------------------------------- locating and reading
def _looks_like_hub_id(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name) is not None and not name.endswith((".ckpt", ".pt"))


LOCAL_ROOTS = ("runs",)  # where `edlm train` writes its run dirs: runs/<name> is a path, never a hub id


def looks_local(name: str) -> bool:
    """A name that can only be a local path, never a hub id (exactly ``owner/name``): it starts with ``.``,
    ``/`` or ``~``; it has more than one path separator; or its first component is a directory here or
    ``runs`` (where ``edlm train`` writes)."""
    if name.startswith((".", "/", "~")) or (os.sep == "\\" and "\\" in name):
        return True
    if name.count("/") > 1:
        return True
    first = name.split("/", 1)[0]
    return first in LOCAL_ROOTS or Path(first).is_dir()


def _run_dir_model(path: Path) -> Path | None:
    """A training run directory (`edlm train`) holds its exported model in ``model/``: that folder, else None."""
    if path.is_dir() and not (path / CONFIG_NAME).is_file() and (path / "model" / CONFIG_NAME).is_file():
        return path / "model"
    return None


def missing_checkpoint_message(name: str, train_kind: str | None = None) -> str:
    """What to say about a local-looking path that does not exist, with the command that would make it."""
    if train_kind == "energy":
        how = f"`edlm train energy --denoiser DENOISER --run-dir {name}`"
    elif train_kind is not None:
        how = f"`edlm train {train_kind} --run-dir {name}`"
    else:
        how = f"`edlm train mdlm|ar|energy --run-dir {name}`"
    return f"no such checkpoint directory: {name} (train one with {how}, or give a model directory / hub id)"


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike, *, train_kind: str | None = None) -> Path:
    """A local checkpoint directory (a training run directory resolves to its ``model/``), or a hub id
    (exactly ``owner/name``) downloaded with ``huggingface_hub.snapshot_download``.

    A name that looks local (``looks_local``) and does not exist is a ``CheckpointError`` that says how to
    make it (``train_kind``: the `edlm train` kind that would, e.g. "mdlm"), with no network access.
    """
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return _run_dir_model(path) or path
    if path.exists():
        hint = (" A .ckpt/.pt file is a pickle and is not loaded as a model; convert MDLM's released checkpoint "
                "once with `edlm convert SRC DST` (edlm.models.mdlm_release)."
                if path.suffix in (".ckpt", ".pt", ".pth", ".bin") else "")
        raise CheckpointError(f"{path} is a file; expected a checkpoint directory with {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME}.{hint}")
    name = str(path_or_hub_id)
    if isinstance(path_or_hub_id, Path) or looks_local(name) or not _looks_like_hub_id(name):
        raise CheckpointError(missing_checkpoint_message(name, train_kind))
    try:
        from huggingface_hub import snapshot_download  # network only when actually needed

        return Path(snapshot_download(repo_id=name, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # offline, unknown repo, auth: all end the same way for the user
        raise CheckpointError(f"no checkpoint directory at {name!r}, and downloading it from the Hugging Face "
                              f"hub failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                              ) from exc


def read_checkpoint_config(path_or_hub_id: str | os.PathLike) -> dict:
    """The parsed ``config.json`` of a checkpoint (edlm or MDLM hub layout)."""
    return _read_config(resolve_checkpoint_dir(path_or_hub_id))


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_NAME}; is it a checkpoint written by save_pretrained?")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the checkpoint is corrupt.") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise CheckpointError(f"{path} has no \"model_type\"; known types: {sorted(MODEL_TYPES)} (or MDLM's "
                              "\"mdlm\").")
    return config


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    single, index = directory / WEIGHTS_NAME, directory / WEIGHTS_INDEX_NAME
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index ({exc}).") from exc
        files = [directory / s for s in shards]
    else:
        pickles = [p.name for p in directory.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        hint = (f" It holds only pickled weights ({', '.join(sorted(pickles))}), which edlm never loads "
                "(pickles can run code); convert them to safetensors." if pickles else "")
        raise CheckpointError(f"{directory} has no {WEIGHTS_NAME}.{hint}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"missing weights shard {f}.")
        try:
            state.update(load_file(str(f), device="cpu"))
        except Exception as exc:  # safetensors raises its own SafetensorError for bad headers/truncation
            raise CheckpointError(f"{f} is truncated or corrupt and cannot be read as safetensors "
                                  f"({type(exc).__name__}: {exc}); re-save or re-download it.") from exc
    try:
        return dequantize(state)  # int8 / int4 matrices stored with their scales; a no-op for other checkpoints
    except ValueError as exc:
        raise CheckpointError(f"the weights in {directory}: {exc}") from exc


# ----------------------------------------------------------------------------- loading
def _check_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """Compare the checkpoint's keys and shapes with the model's; fill recomputable buffers that are missing."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not _OPTIONAL_KEYS.search(k)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:5]})")
        raise CheckpointError(f"weights in {where} do not match the config's {type(model).__name__}: "
                              f"{'; '.join(parts)}.")
    bad = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
           for k, v in expected.items() if k in state and state[k].shape != v.shape]  # in the model's order
    if bad:
        raise CheckpointError(f"shape mismatch in {where} ({len(bad)} tensors), e.g. {bad[:3]}; the weights "
                              "belong to a model of another size than its config.json says.")
    for k, v in state.items():
        if _OPTIONAL_KEYS.search(k) and not torch.allclose(v.float(), expected[k].float(), rtol=1e-6, atol=0.0):
            raise CheckpointError(f"{k} in {where} differs from the standard rotary frequencies (base 10000) "
                                  "that this model computes; the checkpoint was made with another rotary base.")
    return {**{k: expected[k] for k in expected if k not in state}, **state}


def from_pretrained(path_or_hub_id: str | os.PathLike, *, expected_type: str | tuple[str, ...] | None = None,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model a checkpoint describes and load its weights; returned in eval mode on ``map_location``.

    Args:
        path_or_hub_id: a directory written by ``save_pretrained``, a directory in MDLM's hub layout, or a
            Hugging Face hub id such as ``kuleshov-group/mdlm-owt`` (downloaded with ``snapshot_download``).
        expected_type: if given ("dit", "ar", any registered type, or a tuple of them), a checkpoint of
            another type is a ``CheckpointError`` (e.g. an AR model passed where a denoiser is expected).
        map_location: device for the returned model.
    """
    expected = (expected_type,) if isinstance(expected_type, str) else expected_type
    if expected is not None and any(t not in MODEL_TYPES for t in expected):
        raise ValueError(f"unknown expected_type {expected_type!r}; registered: {sorted(MODEL_TYPES)}.")
    directory = resolve_checkpoint_dir(path_or_hub_id)
    config = _read_config(directory)
    raw_type = config["model_type"]
    if raw_type == "mdlm":  # MDLM's own hub layout: a DiT under another naming
        model_type = "dit"
    elif raw_type in MODEL_TYPES:
        model_type = raw_type
        args = config.get("config")
        if not isinstance(args, dict):
            raise CheckpointError(f"{directory / CONFIG_NAME} has no \"config\" object with constructor arguments.")
    else:
        raise CheckpointError(f"{directory} holds a model of unknown type {raw_type!r}; known: "
                              f"{sorted(MODEL_TYPES)} and 'mdlm' (MDLM's hub layout). A custom type must be "
                              "registered with register_model_type before loading.")
    if expected is not None and model_type not in expected:
        raise CheckpointError(f"{directory} holds a model of type {model_type!r}, but type "
                              f"{' or '.join(map(repr, expected))} was expected here (e.g. an AR checkpoint given "
                              "where a diffusion denoiser is needed).")
    state = untie(_read_weights(directory), config.get("tied"), directory / CONFIG_NAME)
    if raw_type == "mdlm":
        args, state = convert_mdlm_hub(config, state)
    return build_model(model_type, args, state, directory).to(map_location).eval()


def build_model(model_type: str, args: dict, state: dict[str, torch.Tensor], where: str | os.PathLike) -> nn.Module:
    """``MODEL_TYPES[model_type](**args)`` with ``state`` loaded after the checks of every load (keys, shapes,
    rotary frequencies; ``where`` names the source in errors); in train mode, on the CPU."""
    cls = MODEL_TYPES[model_type]
    try:
        model = cls(**args)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config in {where} cannot build a {cls.__name__}: {exc}") from exc
    state = _check_state(model, state, Path(where))
    model.load_state_dict(state, strict=True)
    return model


def load_denoiser(path_or_hub_id: str | os.PathLike, *, schedule: str | NoiseSchedule | None = None,
                  mask_id: int | None = None, map_location: str | torch.device = "cpu") -> Denoiser:
    """Load a denoiser checkpoint (a DiT, or a Hugging Face masked LM) as a ``Denoiser`` (``denoiser(x_t, t) ->
    logits``).

    ``schedule`` and ``mask_id`` default to what ``save_pretrained`` stored for a ``Denoiser``; otherwise the
    log-linear schedule (SPEC 1.1) and the last id, the ``[MASK]`` convention of docs/design.md (MDLM: 50257).
    """
    backbone = from_pretrained(path_or_hub_id, expected_type=DENOISER_TYPES, map_location=map_location)
    saved = read_checkpoint_config(path_or_hub_id).get("denoiser") or {}
    if schedule is None:
        record = dict(saved.get("schedule") or {"name": "loglinear"})
        schedule = get_schedule(record.pop("name"), **record)
    else:
        schedule = get_schedule(schedule)
    if mask_id is None:
        mask_id = saved.get("mask_id", backbone.vocab_size - 1)
    return Denoiser(backbone, schedule, mask_id)


# ----------------------------------------------------------------------------- tokenizers
def load_tokenizer_from(directory: str | os.PathLike):
    """The ``PreTrainedTokenizerFast`` saved in ``directory``, or None if none was saved there.

    A checkpoint without a tokenizer of its own uses the one in its parent directory: the checkpoints of one model
    set (a denoiser and its energies, which must share a tokenizer) store it once, beside them."""
    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        if not (directory.parent / "tokenizer.json").is_file():
            return None
        directory = directory.parent
    from transformers import PreTrainedTokenizerFast  # heavy; only when used

    try:
        return PreTrainedTokenizerFast.from_pretrained(str(directory))
    except Exception as exc:
        raise CheckpointError(f"the tokenizer in {directory} cannot be loaded ({type(exc).__name__}: {exc}).") from exc


def check_vocab(model, tokenizer) -> None:
    """Raise ``CheckpointError`` unless ``model.vocab_size == len(tokenizer)`` ([MASK] included)."""
    vocab_size = getattr(model, "vocab_size", None)
    if vocab_size != len(tokenizer):
        raise CheckpointError(f"the model has {vocab_size} ids but the tokenizer has {len(tokenizer)} "
                              "([MASK] included); they were not made for each other.")
