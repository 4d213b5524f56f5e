"""The unigram baseline: the perplexity of a model that ignores all context.

A trained model's PPL (or PPL bound) is only meaningful next to this number; ``edlm train`` logs both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["unigram_perplexity"]


def unigram_perplexity(
    train_ids: Tensor,
    val_ids: Tensor,
    num_classes: int,
    train_mask: Tensor | None = None,
    val_mask: Tensor | None = None,
    exclude_ids: tuple[int, ...] = (),
) -> float:
    """exp of the cross-entropy of the validation tokens under the train tokens' unigram frequencies.

    Frequencies are add-one smoothed over the ``num_classes`` ids less ``exclude_ids`` (e.g. ``[MASK]``,
    which never occurs in text), so an id unseen in training still gets a finite cost.

    Args:
        train_ids, val_ids: token ids, any shape.
        num_classes: size of the id space (``len(tokenizer)``).
        train_mask, val_mask: optional, same shapes, 1 at real tokens (padding is not counted).
        exclude_ids: ids that are not part of the text distribution.
    """
    def counts(ids: Tensor, mask: Tensor | None) -> Tensor:
        ids = ids.reshape(-1) if mask is None else ids.reshape(-1)[mask.reshape(-1).bool()]
        return torch.bincount(ids.long(), minlength=num_classes).double()  # (num_classes,)

    support = torch.ones(num_classes, dtype=torch.float64)
    support[list(exclude_ids)] = 0.0
    train_counts = counts(train_ids, train_mask) * support + support  # add-one on the support
    log_p = torch.log(train_counts / train_counts.sum())
    val_counts = counts(val_ids, val_mask)
    if val_counts.sum() == 0:
        raise ValueError("the validation split has no tokens to score.")
    if (val_counts * (1 - support)).sum() > 0:
        raise ValueError(f"validation tokens include excluded ids {exclude_ids}.")
    cross_entropy = -(val_counts * torch.where(support > 0, log_p, 0.0)).sum() / val_counts.sum()
    return math.exp(float(cross_entropy))
