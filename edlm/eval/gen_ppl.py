"""Generative perplexity under an independent judge LM (SPEC 4).

Samples are decoded to text, re-tokenised with the judge's own tokenizer and scored by the judge:
gen-PPL = exp(Σ NLL / Σ tokens) over all judge tokens of all samples (token-weighted, not a mean of
per-sample perplexities). Always report unigram entropy beside it (``edlm.eval.entropy``): low
gen-PPL with low entropy means repetitive text, not quality.

The judge (``Judge``, ``load_judge``, the independence check ``judge_is_energy``) comes from
``edlm.eval.judge``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from edlm.errors import DataError
from edlm.eval.judge import (
    DEFAULT_JUDGE,
    DEFAULT_JUDGE_NAME,
    GEMMA3_JUDGE,
    GEMMA3_JUDGE_NAME,
    Judge,
    check_judge_independent,
    clear_judge_cache,
    judge_is_energy,
    judge_name,
    load_judge,
    parse_judges,
)

__all__ = ["DEFAULT_JUDGE", "DEFAULT_JUDGE_NAME", "GEMMA3_JUDGE", "GEMMA3_JUDGE_NAME", "Judge", "GenPPLOutput",
           "load_judge", "judge_name", "judge_is_energy", "check_judge_independent", "parse_judges",
           "generative_perplexity", "clear_judge_cache"]

_LOGITS_BUDGET = 2**25  # float32 logits elements per chunk (128 MiB): bounds the (rows, V) log-softmax


@dataclass
class GenPPLOutput:
    """Generative perplexity of a set of texts under one judge."""

    gen_ppl: float  # exp(mean_nll)
    mean_nll: float  # nats per judge token, token-weighted over all texts
    num_tokens: int  # judge tokens scored (BOS excluded)
    per_sample_nll: list[float]  # nats per token of each input text; NaN for skipped (empty) texts
    num_skipped: int = 0  # empty texts (nothing to score)
    judge: str = ""
    per_sample_tokens: list[int] = field(default_factory=list)  # judge tokens scored per text (bootstrap weights)

    def __str__(self) -> str:
        skipped = f", {self.num_skipped} empty texts skipped" if self.num_skipped else ""
        return (f"gen-PPL {self.gen_ppl:.2f} (judge {self.judge}; {self.mean_nll:.4f} nats/token "
                f"over {self.num_tokens} tokens{skipped})")


# ----------------------------------------------------------------------------- scoring
def generative_perplexity(texts: list[str], judge: Judge, batch_size: int = 8, max_length: int | None = None,
                          add_bos: bool = True, stride: int | None = None,
                          chunk_size: int | None = None, progress: bool = False,
                          contexts: list[str] | None = None) -> GenPPLOutput:
    """Score texts with the judge: exp of the token-weighted mean NLL over all judge tokens (SPEC 4).

    Each text is tokenised with the judge's tokenizer (no special tokens) and, with ``add_bos``,
    prefixed with ``judge.bos_id`` so its first token is scored too; without it the first token is
    only context. A text longer than ``max_length`` is scored in sliding windows: each window holds
    at most ``max_length`` tokens and scores the ``stride`` tokens after the previous window's end,
    so every later token keeps at least ``max_length − stride`` tokens of context.

    Args:
        texts: decoded samples. Empty strings are skipped (counted in ``num_skipped``).
        judge: from ``load_judge``.
        batch_size: windows per forward pass. Does not change the result beyond float rounding.
        max_length: window length in judge tokens; None: the judge's context length.
        add_bos: prefix each text with the judge's BOS/document separator.
        stride: new tokens scored per later window; None: ``max_length // 2``. Must be < max_length.
        chunk_size: rows of logits per log-softmax chunk; None: as many as fit 128 MiB of float32.
            The trunk runs once per batch and the LM head only on scored rows, chunk by chunk, so no
            (B, L, V) float32 logits exist. (A model whose head cannot be split off, e.g. one with
            logit soft-capping, falls back to full logits in its own dtype.)
        progress: a progress bar over the judge's batches (on stderr).
        contexts: one string per text (e.g. the prompt a continuation was generated from), read by the judge before
            its text and never scored: the figure is then the perplexity of the texts given their contexts. Context
            and text are tokenized each on its own (the judge sees exactly the text's own tokens).

    Returns:
        GenPPLOutput.
    """
    if isinstance(texts, str):
        raise TypeError("`texts` must be a list of strings, got one string; wrap it in a list.")
    max_length = max_length or judge.context_length
    stride = stride or max(1, max_length // 2)
    if batch_size <= 0:
        raise ValueError(f"the judge batch size (--batch-size) must be > 0, got {batch_size}.")
    if not 0 < stride < max_length:
        raise ValueError(f"the judge window (--max-length) must be longer than its stride: need 0 < stride < "
                         f"window, got stride {stride} and window {max_length}.")
    if max_length > judge.context_length:
        raise ValueError(f"the judge window (--max-length) {max_length} exceeds the judge's context length "
                         f"{judge.context_length}.")
    if add_bos and judge.bos_id is None:
        raise ValueError(f"judge {judge.name!r} has no BOS/EOS token to prepend; pass add_bos=False.")

    token_lists = _tokenize(texts, judge.tokenizer, judge.bos_id if add_bos else None)
    firsts = [1] * len(texts)  # the first scored position of each sequence
    if contexts is not None:
        if isinstance(contexts, str) or len(contexts) != len(texts):
            raise ValueError(f"`contexts` must be a list of one string per text ({len(texts)}), got "
                             f"{'one string' if isinstance(contexts, str) else len(contexts)}.")
        context_lists = _tokenize(list(contexts), judge.tokenizer, judge.bos_id if add_bos else None)
        for i, (ctx, ids) in enumerate(zip(context_lists, token_lists)):
            own = ids[1:] if (ids and add_bos) else ids  # the text's tokens without its BOS
            if own and ctx:
                token_lists[i], firsts[i] = ctx + own, len(ctx)
    windows = []  # (sample index, token ids, index of the first scored position within the window)
    for i, ids in enumerate(token_lists):
        windows.extend((i, w, first) for w, first in _windows(ids, max_length, stride, firsts[i]))
    n_skipped = sum(1 for ids, f in zip(token_lists, firsts) if len(ids) <= f)
    if not windows:
        raise DataError(f"nothing to score: all {len(texts)} texts are empty (or a single token "
                        "with add_bos=False).")

    nll_sum = torch.zeros(len(texts), dtype=torch.float64)
    n_tok = torch.zeros(len(texts), dtype=torch.long)
    windows.sort(key=lambda w: -len(w[1]))  # similar lengths share a batch: less padding
    starts = range(0, len(windows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"judging ({judge.name})", unit="batch", leave=False, dynamic_ncols=True)
    with torch.inference_mode():
        for b in starts:
            batch = windows[b:b + batch_size]
            nll, rows = _score_batch(judge, batch, chunk_size)  # (n,), (n,) sample index per scored token
            nll_sum.index_add_(0, rows, nll)
            n_tok.index_add_(0, rows, torch.ones_like(rows))

    total_tokens = int(n_tok.sum())
    mean_nll = float(nll_sum.sum()) / total_tokens  # token-weighted (SPEC 4)
    per_sample = [float(s) / int(n) if n > 0 else math.nan for s, n in zip(nll_sum, n_tok)]
    return GenPPLOutput(gen_ppl=math.exp(mean_nll), mean_nll=mean_nll, num_tokens=total_tokens,
                        per_sample_nll=per_sample, num_skipped=n_skipped, judge=judge.name,
                        per_sample_tokens=n_tok.tolist())


def _tokenize(texts: list[str], tokenizer, bos_id: int | None) -> list[list[int]]:
    """Judge token ids per text, BOS first when given; [] for an empty text."""
    nonempty = [t for t in texts if t]
    encoded = iter(tokenizer(nonempty, add_special_tokens=False, verbose=False)["input_ids"] if nonempty else [])
    out = []
    for t in texts:
        ids = list(next(encoded)) if t else []
        out.append(([bos_id] + ids) if (ids and bos_id is not None) else ids)
    return out


def _windows(ids: list[int], max_length: int, stride: int, first: int = 1):
    """Yield (window ids, first scored position) covering targets ``first`` … len(ids) − 1 exactly once."""
    n = len(ids)
    if n <= first:
        return
    end = min(n, max(max_length, first + 1))
    begin = max(0, end - max_length)
    yield ids[begin:end], first - begin
    while end < n:
        new_end = min(end + stride, n)
        begin = new_end - max_length if new_end > max_length else 0
        yield ids[begin:new_end], end - begin  # positions end … new_end − 1 are new targets
        end = new_end


def _score_batch(judge: Judge, batch, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """NLL (float64, CPU) of every scored token in a batch of windows, and its sample index."""
    device = judge.device
    B, W = len(batch), max(len(w) for _, w, _ in batch)
    ids = torch.zeros(B, W, dtype=torch.long)  # (B, W), right-padded; the pad id is never read
    attn = torch.zeros(B, W, dtype=torch.long)  # (B, W) 1 = real token
    scored = torch.zeros(B, W, dtype=torch.bool)  # (B, W) position is a target
    for r, (_, w, first) in enumerate(batch):
        ids[r, :len(w)] = torch.tensor(w)
        attn[r, :len(w)] = 1
        scored[r, first:len(w)] = True
    sample = torch.tensor([i for i, _, _ in batch]).unsqueeze(1).expand(B, W)  # (B, W)
    ids, attn = ids.to(device), attn.to(device)

    pred = scored[:, 1:].to(device)  # (B, W-1): position p-1 predicts target p
    targets = ids[:, 1:][pred]  # (n,)
    if _can_split_head(judge):
        # run the trunk once, then the LM head only on the rows we score, chunk by chunk
        hidden = _trunk(judge.model)(input_ids=ids, attention_mask=attn).last_hidden_state  # (B, W, d)
        rows_h = hidden[:, :-1][pred]  # (n, d)
        head = _head(judge.model)
        logits_of = lambda a, b: head(rows_h[a:b])  # (c, V)
    else:
        logits = judge.model(input_ids=ids, attention_mask=attn).logits  # (B, W, V), model dtype
        rows_l = logits[:, :-1][pred]  # (n, V)
        logits_of = lambda a, b: rows_l[a:b]
    n = targets.numel()
    V = judge.model.get_output_embeddings().weight.shape[0]
    chunk = chunk_size or max(1, _LOGITS_BUDGET // V)
    nll = torch.empty(n, dtype=torch.float64)
    for a in range(0, n, chunk):
        lg = logits_of(a, a + chunk)  # (c, V): log-softmax in float32 at least (float64 stays float64)
        lg = lg.to(torch.promote_types(lg.dtype, torch.float32))
        nll[a:a + chunk] = F.cross_entropy(lg, targets[a:a + chunk], reduction="none").double().cpu()
    return nll, sample[:, 1:][scored[:, 1:]]


def _trunk(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer without its LM head (``model.transformer`` for GPT-2, ``model.model`` for Llama)."""
    return getattr(model, model.base_model_prefix)


def _head(model: torch.nn.Module):
    """The LM head as a function of hidden states, with the final logit soft-capping where the config has one."""
    head = model.get_output_embeddings()
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if not cap:
        return head
    return lambda h: torch.tanh(head(h) / cap) * cap


def _can_split_head(judge: Judge) -> bool:
    """Does head(trunk(x)) reproduce model(x).logits? (Not for models with other logit scaling.)

    Checked once per judge on a 4-token input; if not, we fall back to the full logits.
    """
    if judge._split_head is None:
        model, ok = judge.model, False
        head = model.get_output_embeddings()
        trunk = getattr(model, getattr(model, "base_model_prefix", ""), None)
        if head is not None and isinstance(trunk, torch.nn.Module) and trunk is not model:
            x = torch.tensor([[judge.bos_id or 0, 1, 2, 3]], device=judge.device)
            with torch.inference_mode():
                try:
                    ref = model(input_ids=x).logits.float()
                    got = _head(model)(trunk(input_ids=x).last_hidden_state).float()
                    ok = ref.shape == got.shape and torch.allclose(ref, got, rtol=1e-3, atol=1e-3)
                except (TypeError, AttributeError):
                    ok = False
        judge._split_head = ok
    return judge._split_head
