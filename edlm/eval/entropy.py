"""Unigram entropy of samples (SPEC 4), reported beside generative perplexity.

Per sample: the entropy of the empirical distribution of token ids within that one sample,
H = −Σ_v p_v log p_v with p_v = count(v) / length; then averaged over samples. This is the
"entropy" column of MDLM/DUO/EDLM tables, which is in **nats** (OWT samples of 1024 GPT-2 tokens:
≈ 5.6 nats; the maximum is ln 1024 ≈ 6.93). Repetitive text has low entropy, and can fool gen-PPL.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["EntropyOutput", "unigram_entropy", "mean_unigram_entropy", "entropy_report"]

Base = Literal["bits", "nats"]


@dataclass
class EntropyOutput:
    """Unigram entropy of a batch of samples, in both units."""

    mean_nats: float  # mean over samples of the per-sample entropy, natural log
    mean_bits: float  # the same in bits (= mean_nats / ln 2)
    per_sample_nats: list[float]
    num_samples: int

    @property
    def per_sample_bits(self) -> list[float]:
        return [h / math.log(2) for h in self.per_sample_nats]

    def __str__(self) -> str:
        return (f"unigram entropy {self.mean_nats:.3f} nats ({self.mean_bits:.3f} bits), "
                f"mean over {self.num_samples} samples")


def unigram_entropy(tokens: Sequence[int] | Tensor, base: Base = "nats", ignore_ids: Iterable[int] = ()) -> float:
    """Entropy of the empirical token distribution within one sample.

    Args:
        tokens: one sample's token ids (a 1-D tensor or a sequence of ints).
        base: ``"nats"`` (natural log, what the papers report) or ``"bits"`` (log 2).
        ignore_ids: ids not counted (e.g. padding after the end of a sample).

    Returns:
        H = −Σ_v p_v log p_v (SPEC 4) in the chosen unit; 0 for a sample of one repeated token.
    """
    x = torch.as_tensor(tokens).reshape(-1) if not isinstance(tokens, Tensor) else tokens
    if x.dim() != 1:
        raise ValueError(f"`tokens` must be one sample (1-D), got shape {tuple(x.shape)}; "
                         "use mean_unigram_entropy for a batch.")
    ignore = torch.as_tensor(list(ignore_ids), dtype=x.dtype, device=x.device)
    if ignore.numel():
        x = x[~torch.isin(x, ignore)]
    if x.numel() == 0:
        raise ValueError("cannot take the entropy of an empty sample (all tokens empty or ignored).")
    _, counts = torch.unique(x, return_counts=True)
    p = counts.double() / x.numel()  # (distinct tokens,)
    h = float(-(p * p.log()).sum())  # nats
    return _convert(h, base)


def mean_unigram_entropy(batch: Tensor | Sequence[Sequence[int]], base: Base = "nats",
                         ignore_ids: Iterable[int] = ()) -> float:
    """Per-sample unigram entropy, averaged over samples (rows of a (B, L) tensor or a list of lists)."""
    return _convert(entropy_report(batch, ignore_ids).mean_nats, base)


def entropy_report(batch: Tensor | Sequence[Sequence[int]], ignore_ids: Iterable[int] = ()) -> EntropyOutput:
    """Per-sample and mean unigram entropy of a batch, in nats and bits."""
    ignore_ids = list(ignore_ids)
    if isinstance(batch, Tensor) and batch.dim() != 2:
        raise ValueError(f"`batch` must be (B, L), got shape {tuple(batch.shape)}; "
                         "use unigram_entropy for one sample.")
    rows = list(batch)
    if not rows:
        raise ValueError("`batch` has no samples.")
    if isinstance(rows[0], numbers.Integral):
        raise ValueError("`batch` must be a list of samples (lists of ids), got a flat list; "
                         "use unigram_entropy for one sample.")
    per = [unigram_entropy(r, "nats", ignore_ids) for r in rows]
    mean = sum(per) / len(per)
    return EntropyOutput(mean_nats=mean, mean_bits=mean / math.log(2), per_sample_nats=per, num_samples=len(per))


def _convert(h_nats: float, base: Base) -> float:
    if base == "nats":
        return h_nats
    elif base == "bits":
        return h_nats / math.log(2)
    else:
        raise ValueError(f"`base` must be 'bits' or 'nats', got {base!r}.")
