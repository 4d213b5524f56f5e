"""Shared fixtures: the corpus slices (tests/corpora, read through `find_data_dir`), one trained BPE, isolated
caches."""

import gzip
import json

import pytest

from edlm.data import find_data_dir, train_bpe_tokenizer


@pytest.fixture
def cache(tmp_path):
    """A fresh cache root per test, so no test reads another's packed data."""
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def wiki_docs():
    """The documents of wikipedia_en/train (the slice's 40; at most 200), read directly (independent of
    load_corpus)."""
    docs = []
    with gzip.open(find_data_dir("wikipedia_en") / "wikipedia_en" / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"])
            if len(docs) == 200:
                break
    return docs


@pytest.fixture(scope="session")
def bpe(wiki_docs):
    """Byte-level BPE with 1000 ids trained on the wikipedia documents of `wiki_docs` (~1 s)."""
    return train_bpe_tokenizer(wiki_docs, vocab_size=1000)


@pytest.fixture(scope="session")
def shakespeare_text():
    return (find_data_dir("tinyshakespeare") / "tinyshakespeare" / "train.txt").read_text(encoding="utf-8")
