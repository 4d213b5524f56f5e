"""MAUVE (Pillutla et al., NeurIPS 2021) between generated and reference texts, on features from a judge LM.

Features: the judge's final-layer hidden state at the last token of each text (BOS prepended as in gen-PPL,
at most ``max_length`` tokens). This is MAUVE's reference featurisation (GPT-2's last-token hidden state): a
causal LM's last position has read the whole text. ``pooling="mean"`` averages the final layer over the text's
tokens instead, steadier for small judges. The judge is any ``edlm.eval.Judge`` (``load_judge("smollm2")``,
``load_judge("gemma3")``: no download), so MAUVE and gen-PPL can share one. ``mauve.compute_mauve`` comes from
the ``mauve-text`` package (the ``[judge]`` extra), imported only when a score is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from edlm.errors import EdlmError

__all__ = ["MauveOutput", "judge_features", "mauve_from_features", "mauve_score", "POOLINGS"]

POOLINGS = ("last", "mean")


@dataclass
class MauveOutput:
    """MAUVE of a set of texts against references under one judge's features."""

    mauve: float  # in (0, 1]; 1 = indistinguishable
    num_p: int  # generated texts
    num_q: int  # reference texts
    judge: str
    pooling: str
    num_buckets: int | str

    def __str__(self) -> str:
        return (f"MAUVE {self.mauve:.4f} ({self.num_p} texts vs {self.num_q} references; judge {self.judge}, "
                f"{self.pooling}-token features)")


@torch.inference_mode()
def judge_features(texts: Sequence[str], judge, pooling: str = "last", max_length: int = 256,
                   batch_size: int = 16) -> np.ndarray:
    """One feature vector per text from the judge's final hidden layer: (N, d) float32.

    Args:
        texts: non-empty strings.
        judge: an ``edlm.eval.Judge`` (model and its own tokenizer).
        pooling: "last" (the last token's state) or "mean" (mean over the text's tokens, BOS included).
        max_length: tokens per text at most (BOS included); longer texts are cut.
        batch_size: texts per forward pass.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}, got {pooling!r}.")
    if not texts or any(not t for t in texts):
        raise ValueError("`texts` must be a non-empty list of non-empty strings.")
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"`max_length` must be an integer >= 2, got {max_length!r}.")
    max_length = min(max_length, judge.context_length)
    bos = [] if judge.bos_id is None else [judge.bos_id]
    ids = [(bos + list(x))[:max_length] for x in judge.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    out = []
    for b in range(0, len(ids), batch_size):
        chunk = ids[b: b + batch_size]
        width = max(map(len, chunk))
        x = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, W) right-padded
        attn = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, row in enumerate(chunk):
            x[r, : len(row)] = torch.tensor(row)
            attn[r, : len(row)] = 1
        x, attn = x.to(judge.device), attn.to(judge.device)
        trunk = getattr(judge.model, getattr(judge.model, "base_model_prefix", ""), None)
        if isinstance(trunk, torch.nn.Module) and trunk is not judge.model:  # no LM head: no (B, W, V) logits
            hidden = trunk(input_ids=x, attention_mask=attn).last_hidden_state  # (B, W, d), after the final norm
        else:
            hidden = judge.model(input_ids=x, attention_mask=attn, output_hidden_states=True).hidden_states[-1]
        hidden = hidden.float()
        if pooling == "last":
            feats = hidden[torch.arange(len(chunk), device=x.device), attn.sum(-1) - 1]  # (B, d)
        else:
            feats = (hidden * attn[..., None]).sum(1) / attn.sum(-1, keepdim=True)  # (B, d)
        out.append(feats.cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def mauve_score(texts: Sequence[str], references: Sequence[str], judge, *, pooling: str = "last",
                max_length: int = 256, batch_size: int = 16, num_buckets: int | str = "auto", seed: int = 25,
                scaling_factor: float = 5.0) -> MauveOutput:
    """MAUVE of ``texts`` (p, e.g. samples) against ``references`` (q, e.g. held-out valid text).

    Args:
        texts, references: non-empty strings (empty samples: drop them first and say how many).
        judge, pooling, max_length, batch_size: as ``judge_features``.
        num_buckets: k-means clusters of the quantised features ("auto": max(2, N / 10), the package's rule).
        seed: the k-means seed (MAUVE varies a little with it: average seeds for a tighter figure).
        scaling_factor: MAUVE's c in exp(−c · divergence) (5, the package default).
    """
    p = judge_features(texts, judge, pooling, max_length, batch_size)
    q = judge_features(references, judge, pooling, max_length, batch_size)
    value = mauve_from_features(p, q, num_buckets=num_buckets, seed=seed, scaling_factor=scaling_factor)
    return MauveOutput(mauve=value, num_p=len(texts), num_q=len(references),
                       judge=getattr(judge, "name", "judge"), pooling=pooling, num_buckets=num_buckets)


def mauve_from_features(p: np.ndarray, q: np.ndarray, *, num_buckets: int | str = "auto", seed: int = 25,
                        scaling_factor: float = 5.0) -> float:
    """MAUVE of feature sets p (N, d) and q (M, d) (``judge_features``): reuse q's features across many p."""
    try:
        import mauve
    except ImportError as e:
        raise EdlmError('MAUVE needs the mauve-text package: pip install -e ".[judge]" (or pip install '
                        'mauve-text).') from e
    result = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=num_buckets, seed=seed,
                                 mauve_scaling_factor=scaling_factor, verbose=False, device_id=-1)
    return float(result.mauve)
