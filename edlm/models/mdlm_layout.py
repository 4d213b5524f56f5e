"""MDLM's own names for the DiT: its Hugging Face config fields and state-dict keys, mapped to ours.

MDLM (kuleshov-group/mdlm) releases one model in three forms, all with the same tensors:

- the hub port (``kuleshov-group/mdlm-owt``): ``config.json`` with ``model_type`` "mdlm" and the fields of
  ``MDLM_HUB_CONFIG_MAP``, weights in ``model.safetensors`` under ``backbone.`` (its ``MDLM.backbone``);
- the same config with unprefixed keys: a state dict saved from MDLM's ``DIT`` itself;
- the Lightning checkpoint of its training (``mdlm.ckpt``), whose ``state_dict`` holds the
  ``Diffusion`` LightningModule's keys, again ``backbone.…``, and whose ``ema`` holds the EMA weights
  as a list in parameter order (`edlm.models.mdlm_release` reads it).

The maps are explicit, as torchtune's ``convert_weights.py``: "{}" stands for a block index.
"""

from __future__ import annotations

import re

import torch

from edlm.errors import CheckpointError

__all__ = ["MDLM_HUB_CONFIG_MAP", "MDLM_HUB_KEY_MAP", "MDLM_PREFIX", "mdlm_keys", "mdlm_parameter_keys",
           "with_mdlm_prefix", "convert_mdlm_hub", "mdlm_hub_config"]

MDLM_PREFIX = "backbone."  # MDLM's LightningModule and its hub port both hold the DiT as `backbone`

# MDLM's Hugging Face config (``configuration_mdlm.py``) -> DiT constructor argument.
MDLM_HUB_CONFIG_MAP: dict[str, str] = {
    "vocab_size": "vocab_size",
    "model_length": "length",
    "hidden_dim": "hidden_size",
    "n_blocks": "n_blocks",
    "n_heads": "n_heads",
    "cond_dim": "cond_dim",
    "dropout": "dropout",
    "time_conditioning": "time_conditioning",
}
_MDLM_HUB_OPTIONAL = {"dropout": 0.1, "time_conditioning": False}  # MDLMConfig defaults

# MDLM's state dict (``backbone`` = its ``DIT``) -> ours, in MDLM's registration order; "{}" is the block index.
MDLM_HUB_KEY_MAP: dict[str, str] = {
    "backbone.vocab_embed.embedding": "vocab_embed.embedding",
    "backbone.sigma_map.mlp.0.weight": "sigma_map.mlp.0.weight",
    "backbone.sigma_map.mlp.0.bias": "sigma_map.mlp.0.bias",
    "backbone.sigma_map.mlp.2.weight": "sigma_map.mlp.2.weight",
    "backbone.sigma_map.mlp.2.bias": "sigma_map.mlp.2.bias",
    "backbone.rotary_emb.inv_freq": "rotary_emb.inv_freq",
    "backbone.blocks.{}.norm1.weight": "blocks.{}.norm1.weight",
    "backbone.blocks.{}.attn_qkv.weight": "blocks.{}.attn_qkv.weight",
    "backbone.blocks.{}.attn_out.weight": "blocks.{}.attn_out.weight",
    "backbone.blocks.{}.norm2.weight": "blocks.{}.norm2.weight",
    "backbone.blocks.{}.mlp.0.weight": "blocks.{}.mlp.0.weight",
    "backbone.blocks.{}.mlp.0.bias": "blocks.{}.mlp.0.bias",
    "backbone.blocks.{}.mlp.2.weight": "blocks.{}.mlp.2.weight",
    "backbone.blocks.{}.mlp.2.bias": "blocks.{}.mlp.2.bias",
    "backbone.blocks.{}.adaLN_modulation.weight": "blocks.{}.adaLN_modulation.weight",
    "backbone.blocks.{}.adaLN_modulation.bias": "blocks.{}.adaLN_modulation.bias",
    "backbone.output_layer.norm_final.weight": "output_layer.norm_final.weight",
    "backbone.output_layer.linear.weight": "output_layer.linear.weight",
    "backbone.output_layer.linear.bias": "output_layer.linear.bias",
    "backbone.output_layer.adaLN_modulation.weight": "output_layer.adaLN_modulation.weight",
    "backbone.output_layer.adaLN_modulation.bias": "output_layer.adaLN_modulation.bias",
}
_BUFFERS = ("backbone.rotary_emb.inv_freq",)  # in the state dict, not among the parameters (nor in the EMA)


def mdlm_keys(n_blocks: int) -> list[str]:
    """Every state-dict key of MDLM's DiT with ``n_blocks`` blocks, prefixed, in its registration order
    (MDLM-small, 12 blocks: 131 keys = 6 + 12 x 10 + 5)."""
    keys = []
    block_keys = [k for k in MDLM_HUB_KEY_MAP if "{}" in k]
    for key in MDLM_HUB_KEY_MAP:
        if key.startswith("backbone.blocks."):
            if key == block_keys[0]:  # all blocks at the place of the first block key
                keys += [k.format(i) for i in range(n_blocks) for k in block_keys]
        else:
            keys.append(key)
    return keys


def mdlm_parameter_keys(n_blocks: int) -> list[str]:
    """The keys of MDLM's DiT parameters in ``parameters()`` order: the order of its EMA's ``shadow_params``."""
    return [k for k in mdlm_keys(n_blocks) if k not in _BUFFERS]


def with_mdlm_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with MDLM's ``backbone.`` prefix on every key: a state dict saved from MDLM's DIT itself has
    none. Keys are left as they are when any already has it (an odd mix is then reported as unmapped)."""
    if any(k.startswith(MDLM_PREFIX) for k in state):
        return state
    return {MDLM_PREFIX + k: v for k, v in state.items()}


def _map_key(key: str, key_map: dict[str, str]) -> str | None:
    """torchtune-style lookup: a block index in ``key`` matches "{}" in the map."""
    if key in key_map:
        return key_map[key]
    m = re.search(r"\.(\d+)\.", key)
    if m is None:
        return None
    generic = key[: m.start()] + ".{}." + key[m.end():]
    target = key_map.get(generic)
    return None if target is None else target.format(m.group(1))


def convert_mdlm_hub(config: dict, state: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """MDLM hub config + state dict (keys with or without ``backbone.``) -> (DiT constructor args, our state
    dict). Unknown keys are an error."""
    args = {}
    for theirs, ours in MDLM_HUB_CONFIG_MAP.items():
        if theirs in config:
            args[ours] = config[theirs]
        elif theirs in _MDLM_HUB_OPTIONAL:
            args[ours] = _MDLM_HUB_OPTIONAL[theirs]
        else:
            raise CheckpointError(f"MDLM hub config lacks the field {theirs!r}; it needs "
                                  f"{sorted(set(MDLM_HUB_CONFIG_MAP) - set(_MDLM_HUB_OPTIONAL))}.")
    converted, unknown = {}, []
    for key, value in with_mdlm_prefix(state).items():
        ours = _map_key(key, MDLM_HUB_KEY_MAP)
        if ours is None:
            unknown.append(key)
        else:
            converted[ours] = value
    if unknown:
        raise CheckpointError(f"MDLM checkpoint has {len(unknown)} keys with no mapping, e.g. "
                              f"{unknown[:5]}; expected the keys of MDLM's DIT, bare or under 'backbone.'.")
    return args, converted


def mdlm_hub_config(state: dict[str, torch.Tensor], *, length: int, dropout: float, time_conditioning: bool,
                    n_heads: int | None = None) -> dict:
    """The hub config (``MDLM_HUB_CONFIG_MAP`` fields) of a prefixed MDLM state dict: the sizes read from the
    tensors' shapes (heads from the rotary frequencies: head_dim = 2 x their count, unless ``n_heads`` is
    given); the length, dropout and time conditioning, which no tensor holds, as given."""
    need = ["backbone.vocab_embed.embedding", "backbone.sigma_map.mlp.2.weight"]
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"the weights lack {missing[0]!r}: not MDLM's DiT (keys seen: {list(state)[:3]}).")
    vocab_size, hidden = state["backbone.vocab_embed.embedding"].shape
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))}
    if n_heads is None:
        inv_freq = state.get("backbone.rotary_emb.inv_freq")
        if inv_freq is None:
            raise CheckpointError("the weights hold no backbone.rotary_emb.inv_freq and the checkpoint no "
                                  "config: the number of attention heads is unknown.")
        n_heads = int(hidden) // (2 * inv_freq.numel())
    return {"vocab_size": int(vocab_size), "model_length": int(length), "hidden_dim": int(hidden),
            "n_blocks": len(blocks), "n_heads": int(n_heads),
            "cond_dim": int(state["backbone.sigma_map.mlp.2.weight"].shape[0]), "dropout": float(dropout),
            "time_conditioning": bool(time_conditioning)}
