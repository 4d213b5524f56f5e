"""``HFMaskedLM``: any Hugging Face masked LM (BERT, RoBERTa, ModernBERT, ...) as the MDLM denoiser's backbone.

A ``transformers.AutoModelForMaskedLM`` behind the DiT interface: ``forward(x, sigma=None) -> raw logits
(B, L, vocab_size)``, with ``vocab_size``, ``length`` and ``time_conditioned = False``. The network never sees the
diffusion time, as when MDLM fine-tunes BERT-style encoders (Sahoo et al. 2024): σ is accepted and ignored, so the
cached sampler applies (SPEC 1.6). The tokenizer's ``[MASK]`` is the diffusion mask id, and SUBS (SPEC 1.3) is
applied by ``edlm.diffusion.subs``, as for the DiT: ``Denoiser(HFMaskedLM(...), schedule, tok.mask_token_id)``.

Special tokens:

- the logits are cut to the tokenizer's size: hub models often pad their output layer to a round number of rows
  beyond it, and those rows are no tokens;
- ``pad_id``, the tokenizer's own ``[PAD]`` (one that is not also a separator, ``[MASK]`` or ``[UNK]``), is not
  attended to (an attention mask) and never predicted (its logit is −∞). Padding is never masked by the forward
  process (SPEC 1.2), so no target is ever ``[PAD]``;
- the separators (``[CLS]``/``[SEP]``, ``<s>``/``</s>``) are the document boundaries of packed rows
  (``edlm.data.separator_ids``), real targets like any token.

Saved by ``save_pretrained`` as model type ``hf_mlm`` (the HF config in config.json, the weights in safetensors,
tied matrices once); ``from_pretrained`` rebuilds it with ``transformers``. Hub and local HF models are read
from safetensors only. ``transformers`` is imported only when a model is built.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from edlm.errors import CheckpointError, first_line
from edlm.models.checkpoints import looks_local, register_model_type
from edlm.models.dit import check_length, check_tokens
from edlm.models.hf import refuse_pickled_weights

__all__ = ["HFMaskedLM", "build_hf_masked_lm", "check_source", "own_pad_id"]

# where, with what and in which dtype a config was made, not what it is: the weights are float32 here
_DROPPED_CONFIG_KEYS = ("transformers_version", "dtype", "torch_dtype")


def _portable(hf_config: dict) -> dict:
    """The config's architecture, without private keys ("_name_or_path", ...) or ``_DROPPED_CONFIG_KEYS``."""
    return {k: v for k, v in hf_config.items() if not k.startswith("_") and k not in _DROPPED_CONFIG_KEYS}


def own_pad_id(tokenizer) -> int | None:
    """The tokenizer's padding id if it is a token of its own; None when it doubles as a separator, ``[MASK]`` or
    ``[UNK]`` (edlm pads a tokenizer without one with its EOS), which must stay predictable and attended to."""
    pad = getattr(tokenizer, "pad_token_id", None)
    others = {getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "cls", "sep", "mask", "unk")}
    return None if pad is None or pad in others else int(pad)


def _logit_width(model: nn.Module) -> int:
    """Rows of the masked LM's output layer (else ``config.vocab_size``)."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None and getattr(out, "weight", None) is not None:
        return int(out.weight.shape[0])
    return int(model.config.vocab_size)


def _model_from_config(hf_config: dict) -> nn.Module:
    from transformers import AutoConfig, AutoModelForMaskedLM  # heavy; only when a model is built

    args = _portable(hf_config)
    model_type = args.pop("model_type", None)
    if not model_type:
        raise CheckpointError("the Hugging Face config has no \"model_type\" (e.g. bert, roberta, modernbert).")
    try:
        config = AutoConfig.for_model(model_type, **args)
        return AutoModelForMaskedLM.from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot build a Hugging Face masked LM of type {model_type!r}: "
                              f"{first_line(exc)}") from exc


class HFMaskedLM(nn.Module):
    """Adapter: ``forward(x, sigma=None) -> raw logits (B, L, vocab_size)``, time-unconditioned.

    Args:
        hf_config: a Hugging Face config as a dict (``config.to_dict()``, ``model_type`` included): the masked
            LM is built from it with random weights (``AutoModelForMaskedLM.from_config``). Or pass ``model``.
        vocab_size: ids of the tokenizer (``len(tokenizer)``, ``[MASK]`` included); the logits are cut to it.
            Default: the width of the model's output layer.
        length: longest sequence accepted; default the model's ``max_position_embeddings``, and never above it.
        pad_id: the padding id that is neither attended to nor predicted (``own_pad_id(tokenizer)``); None: none.
        model: an already built ``transformers`` masked LM (what ``from_pretrained`` passes), instead of
            ``hf_config``.
    """

    def __init__(self, hf_config: dict | None = None, vocab_size: int | None = None, length: int | None = None,
                 pad_id: int | None = None, *, model: nn.Module | None = None):
        super().__init__()
        if (hf_config is None) == (model is None):
            raise ValueError("HFMaskedLM takes either `hf_config` (a random init) or `model` (a built masked LM).")
        self.model = _model_from_config(hf_config) if model is None else model
        width = _logit_width(self.model)
        self.vocab_size = width if vocab_size is None else int(vocab_size)
        if not 0 < self.vocab_size <= width:
            raise CheckpointError(f"the tokenizer has {self.vocab_size} ids but the masked LM predicts {width}; a "
                                  "pretrained masked LM needs its own tokenizer (drop data.tokenizer), or train "
                                  "its config from scratch (model.hf_pretrained=false).")
        max_len = getattr(self.model.config, "max_position_embeddings", None)
        if length is None and not isinstance(max_len, int):
            raise ValueError("pass `length`: the masked LM's config states no max_position_embeddings.")
        self.length = int(max_len if length is None else length)
        if self.length <= 0 or isinstance(max_len, int) and self.length > max_len:
            raise ValueError(f"`length`={self.length} must be positive and within the masked LM's {max_len} "
                             "positions (max_position_embeddings).")
        if pad_id is not None and not 0 <= pad_id < self.vocab_size:
            raise ValueError(f"`pad_id` must be None or in [0, {self.vocab_size}), got {pad_id}.")
        self.pad_id = None if pad_id is None else int(pad_id)
        self.time_conditioned = False  # the network never sees t (SPEC 1.3): σ is ignored

    # ------------------------------------------------------------------------- building
    @classmethod
    def from_pretrained(cls, name_or_path: str, *, tokenizer=None, length: int | None = None,
                        **kwargs) -> HFMaskedLM:
        """``AutoModelForMaskedLM.from_pretrained(name_or_path, use_safetensors=True, **kwargs)``, float32, eval mode, cut
        to ``tokenizer``'s size, padding from ``own_pad_id(tokenizer)``. A local folder with pickled weights only
        is refused, and so is a local-looking path that does not exist (no hub request)."""
        check_source(name_or_path)
        from transformers import AutoModelForMaskedLM  # heavy; only when used

        try:
            model = AutoModelForMaskedLM.from_pretrained(name_or_path, use_safetensors=True, **kwargs)
        except Exception as exc:  # OSError, hub errors, unknown architectures: one line for the user
            raise CheckpointError(f"cannot load the Hugging Face masked LM {name_or_path!r}: {type(exc).__name__}: "
                                  f"{first_line(exc, default='')}") from exc
        return cls.wrap(model.float(), tokenizer, length).eval()

    @classmethod
    def from_config(cls, config, *, tokenizer=None, length: int | None = None) -> HFMaskedLM:
        """A randomly initialised masked LM of ``config`` (a ``PretrainedConfig``, a dict, or a hub name / folder
        holding a config.json). With ``tokenizer``, its vocabulary size and padding id replace the config's, so
        any tokenizer with a ``[MASK]`` fits the architecture."""
        if isinstance(config, (str, os.PathLike)):
            config = _read_hf_config(str(config))
        hf_config = dict(config if isinstance(config, dict) else config.to_dict())
        if tokenizer is not None:
            hf_config["vocab_size"] = len(tokenizer)
            hf_config["pad_token_id"] = tokenizer.pad_token_id  # e.g. RoBERTa counts positions from it
            for name in ("bos", "eos", "cls", "sep"):  # the config's own ids may lie outside this vocabulary
                if f"{name}_token_id" in hf_config:
                    hf_config[f"{name}_token_id"] = getattr(tokenizer, f"{name}_token_id", None)
        if tokenizer is None:
            return cls(hf_config, length=length)
        return cls(hf_config, vocab_size=len(tokenizer), length=length, pad_id=own_pad_id(tokenizer))

    @classmethod
    def wrap(cls, model: nn.Module, tokenizer=None, length: int | None = None) -> HFMaskedLM:
        """Wrap a built ``transformers`` masked LM; ``tokenizer`` (optional) sets ``vocab_size`` and ``pad_id``."""
        if tokenizer is None:
            return cls(model=model, length=length)
        return cls(model=model, vocab_size=len(tokenizer), length=length, pad_id=own_pad_id(tokenizer))

    def get_config(self) -> dict:
        """The constructor arguments (what ``save_pretrained`` writes to config.json)."""
        return dict(hf_config=_portable(self.model.config.to_dict()), vocab_size=self.vocab_size, length=self.length, pad_id=self.pad_id)

    # ------------------------------------------------------------------------- forward
    def forward(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        """Raw logits (B, L, vocab_size) for tokens ``x`` (B, L); ``sigma`` is ignored (time-unconditioned)."""
        check_tokens(x)
        check_length(x.shape[1], self.length)  # ids are not range-checked here (a host sync): generate checks them
        attention_mask = None if self.pad_id is None else (x != self.pad_id).long()  # (B, L), 0 at [PAD]
        logits = self.model(input_ids=x, attention_mask=attention_mask).logits  # (B, L, width)
        if logits.shape[-1] != self.vocab_size:
            logits = logits[..., : self.vocab_size]  # (B, L, vocab_size): padded output rows are no tokens
        if self.pad_id is not None:
            pad_col = torch.tensor([self.pad_id], device=logits.device)
            logits = logits.index_fill(-1, pad_col, float("-inf"))  # [PAD] is never a target
        return logits


register_model_type("hf_mlm", HFMaskedLM)


# ----------------------------------------------------------------------------- training entry point
def check_source(name_or_path: str) -> None:
    """A local-looking path that does not exist is an error here, not a hub request; pickles are refused."""
    if looks_local(name_or_path) and not Path(name_or_path).expanduser().exists():
        raise CheckpointError(f"no such model directory: {name_or_path} (model.hf_name takes a Hugging Face masked "
                              "LM: a hub name such as answerdotai/ModernBERT-base, or a local folder)")
    refuse_pickled_weights(name_or_path, "masked LM")


def _read_hf_config(name_or_path: str):
    check_source(name_or_path)
    from transformers import AutoConfig  # heavy; only when used

    try:
        return AutoConfig.from_pretrained(name_or_path)
    except Exception as exc:
        raise CheckpointError(f"cannot read the Hugging Face config of {name_or_path!r}: {type(exc).__name__}: "
                              f"{first_line(exc, default='')}") from exc


def build_hf_masked_lm(name_or_path: str, tokenizer, length: int, *, pretrained: bool = True) -> HFMaskedLM:
    """The backbone ``edlm train mdlm model.backbone=hf`` trains: ``name_or_path``'s weights (``pretrained``), or
    a random init of its config sized to ``tokenizer``; ``length`` = the training rows' length (``data.length``).

    Raises:
        CheckpointError: no such model, pickled weights only, a tokenizer that does not fit pretrained weights,
            or ``length`` beyond the model's positions.
    """
    try:
        if not pretrained:
            return HFMaskedLM.from_config(name_or_path, tokenizer=tokenizer, length=length).train()
        return HFMaskedLM.from_pretrained(name_or_path, tokenizer=tokenizer, length=length).train()  # loaded in eval
    except CheckpointError:
        raise
    except ValueError as exc:  # a length beyond the model's positions: named as the setting that chose it
        raise CheckpointError(f"model.hf_name={name_or_path}: {first_line(exc)} (data.length sets `length`)") from exc
