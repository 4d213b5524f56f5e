import gzip
import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from edlm.data import (
    BOS_EOS,
    MASK,
    PAD,
    char_lookup_table,
    char_tokenizer,
    char_tokenizer_from_text,
    dna_tokenizer,
    find_data_dir,
    load_tokenizer,
    save_tokenizer,
    text8_normalize,
    text8_tokenizer,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)
from edlm.errors import DataError


def _valid_wiki_docs(n):
    with gzip.open(find_data_dir("wikipedia_en") / "wikipedia_en" / "valid.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


# ----------------------------------------------------------------------------- BPE
def test_bpe_round_trips_unseen_wikipedia_text(bpe):
    assert len(bpe) == 1000
    for doc in _valid_wiki_docs(5):  # documents the tokenizer never saw
        ids = bpe.encode(doc)
        assert bpe.decode(ids) == doc
        assert len(ids) < len(doc.encode()) / 2  # merges are really used (~2.3 bytes/token at 1000 ids)


@pytest.mark.parametrize(
    "text",
    [
        "  leading and trailing  \n\n\n",
        "tabs\tand\r\nCRLF",
        "ünïcödé — 日本語 😀 \u200b",
        " . , ;  (x) 's 're",
    ],
)
def test_bpe_round_trips_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_vocab_too_small_is_an_error(wiki_docs):
    with pytest.raises(DataError, match="vocab_size must be >= 259"):
        train_bpe_tokenizer(wiki_docs[:2], vocab_size=100)


def test_bpe_needs_texts():
    with pytest.raises(DataError, match="no texts"):
        train_bpe_tokenizer([], vocab_size=300)


# ----------------------------------------------------------------------------- char level
def test_char_tokenizer_round_trips_tinyshakespeare(shakespeare_text):
    tok = char_tokenizer_from_text(shakespeare_text)
    chars = set(shakespeare_text)  # 65 in the full train split, 61 in the slice
    assert len(tok) == len(chars) + 4  # the distinct characters + <|endoftext|>, [PAD], [UNK], [MASK]
    assert all(len(tok.encode(ch)) == 1 for ch in chars) and len(set(tok.encode("".join(chars)))) == len(chars)
    valid = (find_data_dir("tinyshakespeare") / "tinyshakespeare" / "valid.txt").read_text(encoding="utf-8")
    ids = tok.encode(valid)
    assert len(ids) == len(valid)  # one id per character
    assert ids.count(tok.convert_tokens_to_ids("\n")) == valid.count("\n") > 1000
    assert tok.decode(ids) == valid
    assert tok.unk_token_id not in ids


def test_char_tokenizer_ids_follow_the_alphabet():
    tok = char_tokenizer("ba\n")
    assert tok.encode("ab\nb") == [1, 0, 2, 0]
    assert tok.decode([1, 0, 2, 0]) == "ab\nb"
    assert tok.encode("axb") == [1, tok.unk_token_id, 0]


def test_dna_and_text8_presets():
    dna = dna_tokenizer()
    assert dna.encode("ACGTN") == [0, 1, 2, 3, dna.unk_token_id]
    assert len(dna) == 8
    t8 = text8_tokenizer()
    assert len(t8) == 27 + 4 and t8.encode("az ") == [0, 25, 26]


def test_text8_normalize():
    assert text8_normalize("Café, 1999 — The  Quick!\nFOX ") == "cafe the quick fox"
    assert text8_normalize("123 ...") == ""
    out = text8_normalize(_valid_wiki_docs(1)[0])
    assert set(out) <= set("abcdefghijklmnopqrstuvwxyz ") and "  " not in out
    assert text8_tokenizer().decode(text8_tokenizer().encode(out)) == out


@pytest.mark.parametrize("alphabet", ["", ["ab"]])
def test_bad_alphabet_is_an_error(alphabet):
    with pytest.raises(DataError):
        char_tokenizer(alphabet)


def test_char_lookup_table_matches_the_tokenizer(shakespeare_text, bpe):
    """packing's fast path for char tokenizers must give the tokenizer's ids, unknowns included."""
    tok = char_tokenizer_from_text(shakespeare_text[:5000])
    text = shakespeare_text[5000:20000] + "日本 é <|endoftext|>[MASK]\U0001f600"
    table = char_lookup_table(tok)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    fast = table[np.minimum(codes, len(table) - 1)].tolist()
    assert fast == tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    vocab = tok.get_vocab()
    assert fast.count(tok.unk_token_id) == sum(ch not in vocab for ch in text) >= 4  # 日 本 é 😀 at least
    assert char_lookup_table(bpe) is None


# ----------------------------------------------------------------------------- conventions
def _all_kinds(bpe):
    return {
        "bpe": bpe,
        "char": char_tokenizer_from_text("hello\nworld"),
        "dna": dna_tokenizer(),
        "text8": text8_tokenizer(),
    }


@pytest.mark.parametrize("kind", ["bpe", "char", "dna", "text8"])
def test_mask_is_the_last_id_and_specials_exist(bpe, kind):
    tok = _all_kinds(bpe)[kind]
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.mask_token == MASK and tok.mask_token_id == len(tok) - 1
    assert tok.convert_ids_to_tokens(len(tok) - 1) == MASK
    assert tok.bos_token == tok.eos_token == BOS_EOS and tok.bos_token_id == tok.eos_token_id
    assert tok.pad_token == PAD and tok.pad_token_id not in (tok.bos_token_id, tok.mask_token_id)
    assert tok.encode("") == []  # no BOS/EOS added by encode; packing adds them


# ----------------------------------------------------------------------------- save / load
def test_save_and_load_round_trip(bpe, tmp_path):
    save_tokenizer(bpe, tmp_path / "tok")
    text = _valid_wiki_docs(1)[0][:3000]
    for spec in (tmp_path / "tok", str(tmp_path / "tok" / "tokenizer.json")):
        loaded = load_tokenizer(spec)
        assert loaded.encode(text) == bpe.encode(text)
        assert loaded.mask_token_id == len(loaded) - 1 == 999
        assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(bpe)


def test_load_tokenizer_bad_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="holds no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="is not a tokenizer"):
        load_tokenizer(tmp_path / "notes.txt")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="could not read tokenizer file"):
        load_tokenizer(tmp_path / "tokenizer.json")


def test_foreign_tokenizer_gets_mask_appended_last(tmp_path):
    """A GPT-2-like tokenizer (EOS only, no pad/mask), saved as a hub snapshot would be."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["hello world"] * 5, trainer=trainer)
    backend.add_special_tokens([BOS_EOS])
    foreign = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=BOS_EOS, bos_token=BOS_EOS)
    n = len(foreign)
    foreign.save_pretrained(str(tmp_path / "gpt2ish"))
    tok = load_tokenizer(str(tmp_path / "gpt2ish"))
    assert len(tok) == n + 1 and tok.mask_token_id == n  # like GPT-2: 50257 → mask 50257
    assert tok.pad_token_id == tok.eos_token_id  # no extra id before the mask
