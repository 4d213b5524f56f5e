"""MDLM's released checkpoints, in any of their forms, converted into an edlm model folder (``edlm convert``).

    convert_mdlm_checkpoint("mdlm.ckpt", "models/mdlm-owt")           # the Lightning checkpoint, EMA weights
    convert_mdlm_checkpoint("mdlm-owt-hub/", "models/mdlm-owt")        # the hub port: config.json + safetensors

The sources (see `edlm.models.mdlm_layout` for the key layout):

- the Lightning checkpoint of MDLM's training (``mdlm.ckpt``): a pickle of ``{"state_dict": {"backbone.…":
  tensor}, "ema": {"decay", "num_updates", "shadow_params": [tensor, …]}, "hyper_parameters": {"config":
  an OmegaConf DictConfig, "tokenizer": a transformers tokenizer}, "optimizer_states", "loops", …}``;
- a bare state dict saved with ``torch.save`` (keys with or without ``backbone.``);
- a folder in the hub layout (prefixed or bare keys), which `from_pretrained` also loads as it is.

Pickles are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, never code. The
hyper-parameters of a Lightning checkpoint are pickled objects (a config, a tokenizer); the classes they
name, when they come from the packages such metadata comes from (`METADATA_PACKAGES`), are bound to
`Opaque`, an inert stand-in that keeps the pickled state as plain data, so nothing they name is imported or
run. A pickle that names any other callable (``os.system``, ``builtins.eval``, a class of its own with
``__reduce__``) is refused before it is read. The conversion happens once, by ``edlm convert``; a ``.ckpt``
given where a model is loaded is refused with a pointer to it (loading a 2 GB pickle on every run would
be slow, and the safetensors folder is what every other command reads).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from edlm.diffusion.schedules import get_schedule
from edlm.errors import CheckpointError, first_line
from edlm.models.checkpoints import CONFIG_NAME, build_model, check_vocab, from_pretrained, save_pretrained
from edlm.models.dit import Denoiser, DiT
from edlm.models.mdlm_layout import (
    MDLM_PREFIX,
    convert_mdlm_hub,
    mdlm_hub_config,
    mdlm_parameter_keys,
    with_mdlm_prefix,
)

__all__ = ["METADATA_PACKAGES", "WEIGHTS_CHOICES", "Opaque", "read_plain_checkpoint", "lightning_weights",
           "mdlm_dit_from_checkpoint", "convert_mdlm_checkpoint"]

# where the objects in a Lightning checkpoint's hyper-parameters come from (MDLM's config and tokenizer)
METADATA_PACKAGES = ("omegaconf", "transformers", "tokenizers", "lightning", "pytorch_lightning",
                     "lightning_fabric", "typing", "collections", "numpy")
_PLAIN_BUILTINS = {f"builtins.{name}" for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float",
                                                   "str", "bool", "bytes", "complex", "object")}
WEIGHTS_CHOICES = ("ema", "raw")  # MDLM evaluates and samples with its EMA weights
MDLM_SMALL_LENGTH = 1024  # MDLM-small's context (configs/model/small.yaml); no tensor holds it


class Opaque:
    """An inert stand-in for a class or function that a checkpoint's metadata names: it keeps the pickled
    arguments (``args``) and state (``state``) as data and runs nothing of what the pickle names."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state


def _is_metadata(name: str) -> bool:
    return name.split(".", 1)[0] in METADATA_PACKAGES or name in _PLAIN_BUILTINS


def read_plain_checkpoint(path: str | os.PathLike) -> object:
    """The object pickled in ``path`` (a ``torch.save`` file), read with ``torch.load(weights_only=True)`` on the
    CPU; the metadata classes it names become `Opaque` objects; a pickle that would call anything else is a
    one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    if not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        raise CheckpointError(f"reading {path} as plain data needs torch >= 2.6 (this is {torch.__version__}).")
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # not a zip archive, no pickle inside
        raise CheckpointError(f"{path} is not a torch.save checkpoint ({first_line(exc)[:160]}).") from None
    code = [name for name in names if not _is_metadata(name)]
    if code:
        raise CheckpointError(f"refusing {path}: its pickle would call {', '.join(sorted(code)[:3])} while loading "
                              "(code, not data); edlm reads checkpoints as tensors and plain containers only.")
    try:
        with torch.serialization.safe_globals([(Opaque, name) for name in names]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"refusing {path}: it is not a plain-data checkpoint (torch.load weights_only=True "
                              f"failed: {first_line(exc)[:160]})") from None


def _plain(obj):
    """An OmegaConf config read as `Opaque` objects -> plain dicts, lists and values (its pickled state
    keeps the children under ``_content`` and a leaf's value under ``_val``); anything else opaque -> None."""
    if isinstance(obj, Opaque):
        state = obj.state if isinstance(obj.state, dict) else {}
        return _plain(state["_content"]) if "_content" in state else _plain(state.get("_val"))
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _training_config(ckpt: dict) -> dict:
    """MDLM's Hydra config from a Lightning checkpoint's hyper-parameters, as plain data ({} if absent)."""
    hparams = ckpt.get("hyper_parameters")
    config = _plain(hparams.get("config")) if isinstance(hparams, dict) else None
    return config if isinstance(config, dict) else {}


def lightning_weights(ckpt: dict, weights: str = "ema") -> dict[str, torch.Tensor]:
    """The DiT weights of a loaded MDLM checkpoint under MDLM's prefixed keys: ``"raw"`` = its ``state_dict``
    (the weights the optimizer left), ``"ema"`` = the EMA's ``shadow_params``, named by MDLM's parameter order.
    A bare state dict (every value a tensor) is taken as it is, for either choice."""
    if weights not in WEIGHTS_CHOICES:
        raise CheckpointError(f"weights must be one of {', '.join(WEIGHTS_CHOICES)}, got {weights!r}.")
    if "state_dict" not in ckpt:
        if not ckpt or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise CheckpointError(f"the checkpoint has no 'state_dict' and is not a state dict itself (top-level "
                                  f"keys: {list(ckpt)[:6]}).")
        return with_mdlm_prefix(ckpt)
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(MDLM_PREFIX)}
    if not state:
        raise CheckpointError(f"the checkpoint's state_dict has no '{MDLM_PREFIX}' keys (e.g. "
                              f"{list(ckpt['state_dict'])[:3]}); it is not an MDLM Diffusion checkpoint.")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"the checkpoint's {not_tensors[0]} is not a tensor; it is not a weights checkpoint.")
    if weights == "raw":
        return state
    ema = ckpt.get("ema")
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    if not isinstance(shadow, list):
        raise CheckpointError("the checkpoint holds no EMA weights (no ema.shadow_params; it was trained with "
                              "training.ema=0): convert its raw weights with --weights raw.")
    n_blocks = len({k.split(".")[2] for k in state if k.startswith(MDLM_PREFIX + "blocks.")})
    names = mdlm_parameter_keys(n_blocks)
    if len(shadow) != len(names):
        raise CheckpointError(f"the EMA holds {len(shadow)} tensors but MDLM's DiT with {n_blocks} blocks has "
                              f"{len(names)} parameters; the checkpoint is not of this architecture.")
    for name, tensor in zip(names, shadow):
        if name not in state or not isinstance(tensor, torch.Tensor) or tensor.shape != state[name].shape:
            raise CheckpointError(f"EMA tensor for {name} does not match the state_dict's (shape "
                                  f"{tuple(getattr(tensor, 'shape', ()))}); the EMA is not in MDLM's order.")
    return {**state, **dict(zip(names, shadow))}  # buffers (rotary frequencies) from the state_dict


def mdlm_dit_from_checkpoint(path: str | os.PathLike, *, weights: str = "ema", length: int | None = None,
                             time_conditioning: bool | None = None) -> DiT:
    """The DiT of an MDLM Lightning checkpoint or ``torch.save``'d state dict (see the module docstring).

    Sizes come from the tensors; ``length``, ``time_conditioning`` (and the heads, dropout) from the checkpoint's
    config when it holds one, else MDLM-small's (L = 1024, not time-conditioned); a value given here wins.
    """
    ckpt = read_plain_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict.")
    config = _training_config(ckpt)
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    for key, want in (("backbone", "dit"), ("parameterization", "subs")):
        if config.get(key, want) != want:
            raise CheckpointError(f"{path} was trained with {key}={config[key]!r}; only MDLM's DiT denoiser "
                                  f"({key}={want!r}) converts to an edlm denoiser.")
    prefixed = lightning_weights(ckpt, weights)
    hub = mdlm_hub_config(
        prefixed,
        length=length if length is not None else model.get("length", MDLM_SMALL_LENGTH),
        dropout=model.get("dropout", 0.1),
        time_conditioning=time_conditioning if time_conditioning is not None
        else config.get("time_conditioning", False),
        n_heads=model.get("n_heads"))
    args, state = convert_mdlm_hub(hub, prefixed)
    return build_model("dit", args, state, path)


def convert_mdlm_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, weights: str = "ema",
                            length: int | None = None, time_conditioning: bool | None = None,
                            tokenizer=None) -> Path:
    """Write MDLM's DiT from ``src`` (a Lightning ``.ckpt``, a ``torch.save``'d state dict, or a hub-layout
    folder) into ``dst`` as an edlm model folder (``config.json`` + ``model.safetensors``, each written
    atomically), as a denoiser with the log-linear schedule and ``[MASK]`` = the last id (MDLM: 50257), and
    ``tokenizer`` beside it when given (checked against the vocabulary). Returns ``dst``.

    ``weights``, ``length`` and ``time_conditioning`` apply to pickled sources (`mdlm_dit_from_checkpoint`); a
    folder carries its own config.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and (dst.resolve() == src.resolve() or (dst / CONFIG_NAME).exists()):
        raise CheckpointError(f"{dst} already holds a model; give DST a new folder.")
    if src.is_dir():
        dit = from_pretrained(src, expected_type="dit")
    else:
        dit = mdlm_dit_from_checkpoint(src, weights=weights, length=length, time_conditioning=time_conditioning)
    if tokenizer is not None:
        check_vocab(dit, tokenizer)
        if getattr(tokenizer, "mask_token_id", None) != dit.vocab_size - 1:
            raise CheckpointError(f"the tokenizer's [MASK] id is {getattr(tokenizer, 'mask_token_id', None)}, "
                                  f"MDLM's is the last id {dit.vocab_size - 1}; load it with edlm's load_tokenizer.")
    denoiser = Denoiser(dit, get_schedule("loglinear"), mask_id=dit.vocab_size - 1)
    source = {"converted_from": src.name, "weights": weights if not src.is_dir() else "as saved"}
    return save_pretrained(denoiser, dst, tokenizer=tokenizer, extra=source)
