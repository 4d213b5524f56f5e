"""Shapes and networks of the speed benchmark (`edlm.bench.speed`): presets, a shipped model set, model FLOPs.

The ``small`` preset is MDLM-small on OpenWebText (Sahoo et al. 2024): a 12 × 768 DiT over L = 1024 tokens of
GPT-2's vocabulary plus [MASK] (50 258 ids), with an AR transformer and an NCE energy of the same size.
``tiny`` has the same structure at sizes a CPU runs in seconds, on one intra-op thread (its tensors are so
small that threads spend more time waiting for each other than computing, the more so on cores shared with
other work). Random weights are drawn with std 0.02 everywhere except the LayerNorm scales (kept at 1): a
fresh DiT's zero output layer and adaLN-Zero maps would multiply zeros, which some kernels do faster than real
weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from edlm.eval.speed import transformer_flops

__all__ = ["SpeedConfig", "PRESETS", "Networks", "speed_config", "build_networks", "non_embedding_params",
           "flops_per_token", "randomize_"]


@dataclass(frozen=True)
class SpeedConfig:
    """What one benchmark run measures: network shapes, batch size, sampler settings, repeats."""

    vocab_size: int = 50258  # V + 1 ids: real tokens and [MASK] (the last id)
    length: int = 1024  # L
    hidden_size: int = 768
    n_blocks: int = 12
    n_heads: int = 12
    cond_dim: int = 128
    batch_size: int = 32  # B of the end-to-end runs, sequences per energy call, and a forward-row size
    steps: tuple[int, ...] = (32, 128)  # T of every end-to-end method
    ks: tuple[int, ...] = (2, 8)  # proposals per importance-sampled step of the EDLM runs
    window: tuple[float, float] = (0.0, 1.0)  # the EDLM runs importance-sample the steps starting in it
    warmup: int = 3  # untimed calls before a forward row
    repeats: int = 10  # timed calls of a forward row
    cpu_threads: int | None = None  # torch's intra-op threads on a CPU while measuring (None: as they are)

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    @property
    def forward_batch_sizes(self) -> tuple[int, ...]:
        """Forward rows: one sequence per call (how an energy is called at small batch), B, and 2B."""
        return tuple(sorted({1, self.batch_size, 2 * self.batch_size}))


PRESETS: dict[str, SpeedConfig] = {
    "small": SpeedConfig(),
    "tiny": SpeedConfig(vocab_size=258, length=64, hidden_size=64, n_blocks=2, n_heads=2, cond_dim=32,
                        batch_size=4, steps=(4, 8), warmup=1, repeats=3, cpu_threads=1),
}

TOKENS_PER_CALL = 32768
"""A shipped model set's default B makes B · L this many tokens per call, as B = 32 at L = 1024 does."""


def speed_config(preset: str = "small", models: str | Path | None = None, **overrides) -> SpeedConfig:
    """A preset's configuration, or a shipped model set's shapes (``models``: a folder with ``mdlm/``, ``ar/``
    and optionally ``nce/``, e.g. edlm/assets/wikipedia_en) with B · L = `TOKENS_PER_CALL`; then ``overrides``
    that are not None."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}.")
    cfg = PRESETS[preset]
    if models is not None:
        from edlm.models import read_checkpoint_config

        c = read_checkpoint_config(Path(models) / "mdlm")["config"]
        cfg = replace(cfg, vocab_size=c["vocab_size"], length=c["length"], hidden_size=c["hidden_size"],
                      n_blocks=c["n_blocks"], n_heads=c["n_heads"], cond_dim=c["cond_dim"],
                      batch_size=max(1, TOKENS_PER_CALL // c["length"]))
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    for name, flag in (("length", "--length"), ("batch_size", "--batch-size"), ("repeats", "repeats")):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{flag} must be positive, got {getattr(cfg, name)}.")
    if not cfg.steps or min(cfg.steps) <= 0 or not cfg.ks or min(cfg.ks) < 2:
        raise ValueError(f"need --steps > 0 and --k >= 2 (k = 1 is MDLM), got --steps {cfg.steps} and --k {cfg.ks}.")
    lo, hi = cfg.window
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"--window T_LO T_HI must satisfy 0 <= T_LO < T_HI <= 1, got {cfg.window}.")
    return cfg


def randomize_(model: nn.Module, seed: int, std: float = 0.02) -> nn.Module:
    """Normal(0, std²) weights and biases in place; LayerNorm scales (1-d, not biases) keep their ones."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 or name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def non_embedding_params(model: nn.Module) -> int:
    """N of `transformer_flops`: the weights each token multiplies in the blocks (QKV, attention output, MLP)
    and, for the NCE energy, its (2H → H) input projection. The adaLN maps act once per sequence, not per
    token, and the output layer is counted through ``vocab_size``."""
    n = sum(p.numel() for block in model.blocks for mod in (block.attn_qkv, block.attn_out, block.mlp)
            for p in mod.parameters())
    if hasattr(model, "input_proj"):
        n += sum(p.numel() for p in model.input_proj.parameters())
    return n


def flops_per_token(model: nn.Module, length: int, causal: bool, vocab_size: int = 0) -> float:
    """Model FLOPs of one token of a forward over ``length`` tokens (``vocab_size``: the output layer's
    width)."""
    return transformer_flops(non_embedding_params(model), model.n_blocks, model.hidden_size, length, tokens=1,
                             causal=causal, vocab_size=vocab_size)


@dataclass
class Networks:
    """The benchmark's networks on their device, in their dtype, in eval mode."""

    denoiser: nn.Module  # a Denoiser: (x_t, t) -> logits (B, L, V + 1)
    ar: nn.Module  # an ARTransformer; AREnergy scores with it
    nce: nn.Module | None  # an NCEEnergy, None when a model set has none
    flops_per_token: dict[str, float]  # "dit", "ar", "nce": model FLOPs per token of one call
    info: dict  # dtype, weights, parameter counts (for the report)


def build_networks(cfg: SpeedConfig, device: torch.device, models: str | Path | None = None) -> Networks:
    """Random-weight networks of ``cfg``'s shapes, or a shipped model set's (``models``); bf16 on CUDA, else
    float32 (weights and activations: ``.to(dtype)``)."""
    from edlm.diffusion.schedules import LogLinearSchedule
    from edlm.energy.nce_energy import NCEEnergy
    from edlm.models import ARTransformer, Denoiser, DiT, from_pretrained, load_denoiser

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = dict(vocab_size=cfg.vocab_size, length=cfg.length, hidden_size=cfg.hidden_size,
                 n_blocks=cfg.n_blocks, n_heads=cfg.n_heads, dropout=0.0)
    if models is None:
        denoiser = Denoiser(randomize_(DiT(**sizes, cond_dim=cfg.cond_dim), seed=0), LogLinearSchedule(),
                            cfg.mask_id)
        ar = randomize_(ARTransformer(**sizes, mask_id=cfg.mask_id), seed=1)
        nce = randomize_(NCEEnergy(**sizes, cond_dim=cfg.cond_dim, mask_id=cfg.mask_id), seed=2)
        weights = "random, std 0.02, LayerNorm scales 1"
    else:
        root = Path(models)
        denoiser = load_denoiser(root / "mdlm")
        ar = from_pretrained(root / "ar", expected_type="ar")
        nce = from_pretrained(root / "nce") if (root / "nce").is_dir() else None
        weights = f"shipped: {root}"
    denoiser, ar = denoiser.to(device, dtype).eval(), ar.to(device, dtype).eval()
    nce = None if nce is None else nce.to(device, dtype).eval()
    fpt = {"dit": flops_per_token(denoiser.backbone, cfg.length, causal=False, vocab_size=cfg.vocab_size),
           "ar": flops_per_token(ar, cfg.length, causal=True, vocab_size=cfg.vocab_size)}
    if nce is not None:
        fpt["nce"] = flops_per_token(nce, cfg.length, causal=False)
    named = [(n, net) for n, net in (("dit", denoiser.backbone), ("ar", ar), ("nce", nce)) if net is not None]
    info = {"dtype": str(dtype).removeprefix("torch."), "weights": weights,
            "params": {name: sum(p.numel() for p in net.parameters()) for name, net in named},
            "non_embedding_params": {name: non_embedding_params(net) for name, net in named},
            "flops_per_token": fpt}
    return Networks(denoiser, ar, nce, fpt, info)
