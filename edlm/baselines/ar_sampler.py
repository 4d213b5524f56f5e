"""Left-to-right ancestral sampling from an autoregressive LM: the "AR samples" reference row of benchmarks.

x^{i} ~ p_AR(· | x^{<i}) for i = P … L − 1 after a given prefix x^{<P}, each draw exact in float64
(``edlm.diffusion.categorical``, SPEC 1.6), so the reference is not biased by the float32 Gumbel
truncation that the SPEC forbids for the diffusion samplers either.

The model has no KV cache, so each new token re-reads the whole prefix: L − P forward passes of
growing length (O(L²) attention work). That is fine for the reference rows of a sweep; it is not a
speed baseline for AR decoding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from edlm.diffusion.categorical import sample_categorical, uniform64

__all__ = ["ARSampleOutput", "ar_sample"]


@dataclass
class ARSampleOutput:
    """What ``ar_sample`` returns."""

    tokens: Tensor  # (B, length) LongTensor, the prefix included
    nfe: int  # forward passes of the AR model (= length − prefix length)
    seconds: float  # wall-clock time of the loop


@torch.no_grad()
def ar_sample(
    model,
    prefix: Tensor,
    length: int,
    generator: torch.Generator | None = None,
    *,
    temperature: float = 1.0,
    exclude_ids: tuple[int, ...] = (),
) -> ARSampleOutput:
    """Sample continuations of ``prefix`` up to ``length`` tokens, one token per forward pass.

    Args:
        model: a causal LM, ``model(x (B, n)) -> logits (B, n, V)`` where ``logits[:, i]`` predicts
            ``x[:, i + 1]`` (``ARTransformer``, ``HFCausalLM``).
        prefix: (B, P) LongTensor with P >= 1 given tokens (e.g. one ``<|endoftext|>`` per row: an AR
            model conditions on its first token and never predicts it).
        length: total length L of the returned rows, prefix included (L >= P).
        generator: the random stream (one float64 uniform per row and position); on the model's device.
        temperature: sample from softmax(logits / temperature); 1.0 = the model's distribution.
        exclude_ids: ids never drawn (e.g. ``[MASK]`` and ``[PAD]``); their logits are set to −∞.

    Returns:
        ``ARSampleOutput`` with ``tokens`` (B, L).
    """
    if prefix.dim() != 2 or prefix.shape[1] < 1:
        raise ValueError(f"`prefix` must be (B, P) with P >= 1 given tokens, got shape {tuple(prefix.shape)}.")
    B, P = prefix.shape
    if not isinstance(length, int) or length < P:
        raise ValueError(f"`length` must be an int >= the prefix length {P}, got {length!r}.")
    if not temperature > 0.0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    max_len = getattr(model, "length", None)
    if isinstance(max_len, int) and length > max_len:
        raise ValueError(f"`length` {length} exceeds the AR model's maximum length {max_len}.")

    start = time.perf_counter()
    x = prefix.to(dtype=torch.long)  # (B, P)
    excluded = torch.tensor(sorted(set(exclude_ids)), dtype=torch.long, device=x.device)
    for _ in range(length - P):
        logits = model(x)[:, -1].double() / temperature  # (B, V): p(x^{n} | x^{<n}) for the next position n
        if excluded.numel():
            logits = logits.index_fill(-1, excluded, float("-inf"))
        u = uniform64((B,), generator, x.device)  # (B,)
        nxt = sample_categorical(torch.log_softmax(logits, dim=-1), u)  # (B,) exact float64 draw (SPEC 1.6)
        x = torch.cat([x, nxt[:, None]], dim=1)  # (B, n + 1)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return ARSampleOutput(tokens=x, nfe=length - P, seconds=time.perf_counter() - start)
