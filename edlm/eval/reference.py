"""Real-text reference rows for benchmarks (SPEC 4).

A benchmark reports gen-PPL and entropy of model samples; the same measures on held-out real text
of the same token length tell the reader what "good" looks like under the same judge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from edlm.errors import DataError

__all__ = ["ReferenceOutput", "real_text_reference"]


@dataclass
class ReferenceOutput:
    """n held-out real text chunks, each exactly ``length_tokens`` tokens of the model's tokenizer."""

    texts: list[str]  # the chunks decoded back to text (feed these to generative_perplexity)
    tokens: Tensor  # (n, length_tokens) LongTensor: the chunks as ids (feed these to entropy_report)
    source_index: list[int]  # which input text each chunk came from


def real_text_reference(texts: Iterable[str], length_tokens: int, tokenizer, n: int,
                        chunks_per_text: int = 1) -> ReferenceOutput:
    """Cut n chunks of exactly ``length_tokens`` tokens out of held-out texts, in order.

    Each chunk is a contiguous run of one text's tokens (chunks never cross documents), taken from
    the start of the text; at most ``chunks_per_text`` consecutive chunks per text, so the reference
    spans many documents. Texts shorter than ``length_tokens`` are passed over. Deterministic: the
    same texts give the same chunks. ``texts`` may be a lazy iterator; it is read only until n chunks
    are found.

    Args:
        texts: held-out documents (never the training split).
        length_tokens: the token length of the model samples being compared (e.g. 1024).
        tokenizer: the *model's* tokenizer (the one the samples were generated in), not the judge's.
        n: number of chunks, usually the number of samples.
        chunks_per_text: most chunks taken from one document.

    Raises:
        DataError: the texts hold fewer than n chunks of that length.
    """
    for name, value in (("length_tokens", length_tokens), ("n", n), ("chunks_per_text", chunks_per_text)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if isinstance(texts, str):
        raise TypeError("`texts` must be an iterable of documents, got one string; wrap it in a list.")
    chunks: list[list[int]] = []
    sources: list[int] = []
    n_texts = 0
    for i, text in enumerate(texts):
        n_texts += 1
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        for c in range(min(chunks_per_text, len(ids) // length_tokens)):
            chunks.append(list(ids[c * length_tokens:(c + 1) * length_tokens]))
            sources.append(i)
            if len(chunks) == n:
                tokens = torch.tensor(chunks, dtype=torch.long)  # (n, length_tokens)
                decoded = tokenizer.batch_decode(tokens.tolist(), skip_special_tokens=False)
                return ReferenceOutput(texts=decoded, tokens=tokens, source_index=sources)
    raise DataError(f"only {len(chunks)} chunks of {length_tokens} tokens in {n_texts} texts, need {n}; "
                    "pass more held-out texts, a larger chunks_per_text, or a shorter length_tokens.")
