import numpy as np
import pytest
from datasets import Dataset

import edlm.data.packing as packing
from edlm.data import char_tokenizer_from_text, load_corpus, tokenize_and_pack
from edlm.errors import ConfigError, DataError


@pytest.fixture
def hf_cache(tmp_path):
    return str(tmp_path / "hf")


@pytest.fixture
def wiki(hf_cache):
    return load_corpus("wikipedia_en", "valid", max_docs=12, cache_dir=hf_cache)


def _stream(docs, tok):
    """The wrap stream, built independently of packing: BOS + tokens + EOS per document."""
    out = []
    for doc in docs:
        out += [tok.bos_token_id, *tok.encode(doc), tok.eos_token_id]
    return out


# ----------------------------------------------------------------------------- wrap
def test_wrap_blocks_are_a_prefix_of_the_stream(wiki, bpe, cache):
    L = 128
    packed = tokenize_and_pack(wiki, bpe, L, "wrap", cache_dir=cache)
    assert packed.column_names == ["input_ids"]
    rows = np.array(packed.with_format("numpy")["input_ids"])
    assert rows.dtype == np.int64 and rows.shape == (len(packed), L)
    stream = _stream(wiki["text"], bpe)
    assert len(packed) == len(stream) // L > 10
    assert rows.reshape(-1).tolist() == stream[: len(packed) * L]  # remainder dropped, nothing else
    n_sep = int((rows == bpe.bos_token_id).sum())
    assert 2 * len(wiki) - 2 <= n_sep <= 2 * len(wiki)  # BOS/EOS per document, last EOS may be cut
    assert rows[0, 0] == bpe.bos_token_id
    assert bpe.mask_token_id not in rows and bpe.pad_token_id not in rows


def test_wrap_on_one_document_char_level(shakespeare_text, hf_cache, cache):
    tok = char_tokenizer_from_text(shakespeare_text)
    ds = load_corpus("tinyshakespeare", max_chars=10_000, cache_dir=hf_cache)
    packed = tokenize_and_pack(ds, tok, 64, cache_dir=cache)
    assert len(packed) == (10_000 + 2) // 64
    flat = [i for row in packed["input_ids"] for i in row]
    assert tok.decode(flat) == "<|endoftext|>" + shakespeare_text[: len(flat) - 1]


# ----------------------------------------------------------------------------- pad
def test_pad_rows_and_attention_mask(bpe, cache):
    docs = ["short one", "", "a much longer document " * 40, "x"]
    ds = Dataset.from_dict({"text": docs})
    L = 32
    packed = tokenize_and_pack(ds, bpe, L, "pad", cache_dir=cache).with_format("numpy")
    ids, mask = np.array(packed["input_ids"]), np.array(packed["attention_mask"])
    assert ids.shape == mask.shape == (4, L) and ids.dtype == mask.dtype == np.int64
    for row, m, doc in zip(ids, mask, docs):
        tokens = bpe.encode(doc)[: L - 2]
        n = len(tokens) + 2
        assert m.tolist() == [1] * n + [0] * (L - n)
        assert row[:n].tolist() == [bpe.bos_token_id, *tokens, bpe.eos_token_id]
        assert (row[n:] == bpe.pad_token_id).all()
    assert mask[2].all()  # the long document is truncated to exactly L, ending in EOS


# ----------------------------------------------------------------------------- cache
def test_second_call_reads_the_cache(wiki, bpe, cache, monkeypatch):
    first = tokenize_and_pack(wiki, bpe, 64, "wrap", cache_dir=cache)
    entries = list((cache / "packed").iterdir())
    assert len(entries) == 1 and (entries[0] / "dataset_info.json").exists()

    def boom(*args, **kwargs):
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(packing, "_encode", boom)
    monkeypatch.setattr(type(bpe), "__call__", boom)
    again = tokenize_and_pack(wiki, bpe, 64, "wrap", cache_dir=cache)
    assert again["input_ids"] == first["input_ids"]
    monkeypatch.undo()

    tokenize_and_pack(wiki, bpe, 32, "wrap", cache_dir=cache)  # other length: new entry
    tokenize_and_pack(wiki, bpe, 64, "pad", cache_dir=cache)  # other mode: new entry
    tokenize_and_pack(wiki, char_tokenizer_from_text("".join(wiki["text"])), 64, cache_dir=cache)  # other tok
    assert len(list((cache / "packed").iterdir())) == 4


def test_cache_key_follows_the_corpus(bpe, cache, hf_cache):
    a = load_corpus("wikipedia_en", "valid", max_docs=2, cache_dir=hf_cache)
    b = load_corpus("wikipedia_en", "valid", max_docs=3, cache_dir=hf_cache)
    pa, pb = (tokenize_and_pack(x, bpe, 64, cache_dir=cache) for x in (a, b))
    assert len(pb) > len(pa)


# ----------------------------------------------------------------------------- errors
def test_too_short_corpus_reports_the_numbers(bpe, cache):
    ds = Dataset.from_dict({"text": ["tiny", "text"]})
    with pytest.raises(
        DataError,
        match=r"gives \d+ tokens \(2 documents, BOS/EOS included\), fewer than one block of length 512",
    ):
        tokenize_and_pack(ds, bpe, 512, "wrap", cache_dir=cache)


def test_bad_arguments(wiki, bpe, cache):
    with pytest.raises(ConfigError, match="mode must be 'wrap' or 'pad'"):
        tokenize_and_pack(wiki, bpe, 64, "concat", cache_dir=cache)
    with pytest.raises(ConfigError, match="length must be an int >= 2"):
        tokenize_and_pack(wiki, bpe, 1, cache_dir=cache)
    with pytest.raises(DataError, match="no 'text' column"):
        tokenize_and_pack(Dataset.from_dict({"body": ["x"]}), bpe, 64, cache_dir=cache)
