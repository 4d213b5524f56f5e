import gzip
import json
import os
import re

import pytest

import edlm.data.files as files
import edlm.data.sources as sources
from edlm.data import PRESETS, corpus_files, find_data_dir, load_corpus, preset_tokenizer
from edlm.errors import DataError


@pytest.fixture
def hf_cache(tmp_path):
    return str(tmp_path / "hf")


def _write_jsonl_gz(path, records):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


# ----------------------------------------------------------------------------- locator
def test_data_dir_is_found_from_the_repo_root(tmp_path, monkeypatch):
    # CI's layout: the clone and shared/data side by side; found from a working directory elsewhere
    monkeypatch.delenv("EDLM_DATA_DIR", raising=False)
    (tmp_path / "shared" / "data" / "wikipedia_en").mkdir(parents=True)
    (tmp_path / "else" / "where").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "else" / "where")  # no .data, ../shared/data or shared/data from here
    monkeypatch.setattr(sources, "_REPO_ROOT", tmp_path / "repo")
    assert find_data_dir() == find_data_dir("wikipedia_en") == (tmp_path / "shared" / "data").resolve()


def test_the_suite_reads_the_corpus_slices():
    # tests/conftest.py points EDLM_DATA_DIR at tests/corpora, so the suite runs the same everywhere
    root = find_data_dir()
    assert root.name == "corpora" and root.parent.name == "tests"
    assert all(path.is_file() for name in PRESETS for path in corpus_files(name).values())


def test_data_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("EDLM_DATA_DIR", str(tmp_path))
    assert find_data_dir() == tmp_path
    monkeypatch.setenv("EDLM_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="EDLM_DATA_DIR"):
        find_data_dir()


def test_data_dir_prefers_cwd_dot_data(tmp_path, monkeypatch):
    monkeypatch.delenv("EDLM_DATA_DIR", raising=False)
    (tmp_path / ".data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert find_data_dir() == (tmp_path / ".data").resolve()


def test_no_data_dir_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("EDLM_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "_REPO_ROOT", tmp_path / "repo")
    with pytest.raises(DataError, match="no data folder found .* set EDLM_DATA_DIR"):
        find_data_dir()


# ----------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("split", ["train", "valid"])
def test_every_preset_loads(name, split, hf_cache):
    ds = load_corpus(name, split, max_docs=3, max_chars=20_000, cache_dir=hf_cache)
    assert ds.column_names == ["text"] and 1 <= len(ds) <= 3
    assert sum(len(t) for t in ds["text"]) == 20_000  # every preset has more than 20k chars
    assert PRESETS[name].tokenizer in {"bpe", "char", "dna", "text8"}


def test_text8_wiki_is_normalised(hf_cache):
    text = "".join(load_corpus("text8_wiki", "valid", max_docs=5, cache_dir=hf_cache)["text"])
    assert set(text) == set("abcdefghijklmnopqrstuvwxyz ")


def test_tinyshakespeare_is_one_document(hf_cache, shakespeare_text):
    ds = load_corpus("tinyshakespeare", cache_dir=hf_cache)
    assert len(ds) == 1 and ds[0]["text"] == shakespeare_text


def test_max_docs_and_max_chars(hf_cache, wiki_docs):
    ds = load_corpus("wikipedia_en", max_docs=7, cache_dir=hf_cache)
    assert ds["text"] == wiki_docs[:7]
    cut = len(wiki_docs[0]) + 10
    ds = load_corpus("wikipedia_en", max_chars=cut, cache_dir=hf_cache)
    assert ds["text"] == [wiki_docs[0], wiki_docs[1][:10]]


def test_preset_tokenizer_kinds(hf_cache, shakespeare_text):
    assert len(preset_tokenizer("dna_ecoli_k12")) == 8
    assert len(preset_tokenizer("text8_wiki")) == 31
    n_chars = len(set(shakespeare_text))  # 65 in the full train split, 61 in the slice
    assert len(preset_tokenizer("tinyshakespeare", cache_dir=hf_cache)) == n_chars + 4
    assert len(preset_tokenizer("wikipedia_en", vocab_size=400, max_chars=50_000, cache_dir=hf_cache)) == 400


# ----------------------------------------------------------------------------- FASTA
def test_fasta_first_record_counts_match_a_manual_count(hf_cache):
    path = corpus_files("dna_ecoli_k12")["valid"]
    counts = dict.fromkeys("ACGT", 0)
    with gzip.open(path, "rt") as f:
        header = f.readline()
        assert header.startswith(">")
        start, end = map(int, re.search(r" valid 0-based \[(\d+),(\d+)\)", header).groups())
        for line in f:
            if line.startswith(">"):
                break
            for base in counts:
                counts[base] += line.count(base)
    seq = load_corpus("dna_ecoli_k12", "valid", cache_dir=hf_cache)[0]["text"]
    assert {b: seq.count(b) for b in "ACGT"} == counts
    assert len(seq) == sum(counts.values()) == end - start  # the genome coordinates the header names
    assert start == 4_175_707  # the valid split starts where SOURCES.md says; the slice is its beginning


def test_full_corpora_match_sources_md(full_data_dir, monkeypatch, tmp_path):
    """What the presets and shared/data/SOURCES.md say of the full corpora (the slices are too small)."""
    roots = {name: full_data_dir(name) for name in ("wikipedia_en", "tinyshakespeare", "dna_ecoli_k12")}
    cache = str(tmp_path / "hf")
    monkeypatch.setenv("EDLM_DATA_DIR", str(roots["wikipedia_en"]))
    assert len(load_corpus("wikipedia_en", "valid", cache_dir=cache)) == 122
    monkeypatch.setenv("EDLM_DATA_DIR", str(roots["tinyshakespeare"]))
    assert len(preset_tokenizer("tinyshakespeare", cache_dir=cache)) == 65 + 4  # 65 distinct characters
    monkeypatch.setenv("EDLM_DATA_DIR", str(roots["dna_ecoli_k12"]))
    (seq,) = load_corpus("dna_ecoli_k12", "valid", cache_dir=cache)["text"]
    assert len(seq) == 4_407_691 - 4_175_707 and set(seq) == set("ACGT")


def test_fasta_records_are_documents(tmp_path, hf_cache):
    path = tmp_path / "x.fa"
    path.write_text(">one desc\nacgt\nAC\n\n>two\n;comment\nggNN\n>empty\n")
    assert load_corpus(str(path), "all", cache_dir=hf_cache)["text"] == ["ACGTAC", "GGNN"]
    bad = tmp_path / "bad.fasta"
    bad.write_text("ACGT\n>h\nA\n")
    with pytest.raises(DataError, match="before the first '>' header"):
        load_corpus(str(bad), cache_dir=hf_cache)


# ----------------------------------------------------------------------------- jsonl, txt, dirs
def test_jsonl_gz(tmp_path, hf_cache):
    records = [{"id": 1, "text": "first\ndoc"}, {"id": 2, "text": ""}, {"text": "third ünï", "title": "t"}]
    path = _write_jsonl_gz(tmp_path / "c.jsonl.gz", records)
    ds = load_corpus(str(path), "all", cache_dir=hf_cache)
    assert ds.column_names == ["text"]
    assert ds["text"] == ["first\ndoc", "third ünï"]  # empty text skipped


def test_txt_is_one_document_and_keeps_crlf(tmp_path, hf_cache):
    path = tmp_path / "a.txt"
    path.write_bytes(b"line one\r\n\r\nline two\n")
    assert load_corpus(str(path), "all", cache_dir=hf_cache)["text"] == ["line one\r\n\r\nline two\n"]


def test_directory_with_splits(tmp_path, hf_cache):
    (tmp_path / "train.txt").write_text("train text")
    _write_jsonl_gz(tmp_path / "valid.jsonl.gz", [{"text": "valid text"}])
    assert load_corpus(str(tmp_path), "train", cache_dir=hf_cache)["text"] == ["train text"]
    assert load_corpus(str(tmp_path), "valid", cache_dir=hf_cache)["text"] == ["valid text"]
    with pytest.raises(DataError, match="no test.<ext> file"):
        load_corpus(str(tmp_path), "test", cache_dir=hf_cache)


def test_changed_file_is_read_again(tmp_path, hf_cache):
    path = tmp_path / "a.txt"
    path.write_text("old")
    assert load_corpus(str(path), "all", cache_dir=hf_cache)["text"] == ["old"]
    path.write_text("new text")
    os.utime(path, ns=(1, 10**18))
    assert load_corpus(str(path), "all", cache_dir=hf_cache)["text"] == ["new text"]


# ----------------------------------------------------------------------------- errors
def test_missing_path(tmp_path, hf_cache):
    with pytest.raises(DataError, match="no such corpus file"):
        load_corpus(str(tmp_path / "nope.txt"), cache_dir=hf_cache)


@pytest.mark.parametrize("name", ["empty.txt", "empty.jsonl", "empty.fa"])
def test_empty_file(tmp_path, hf_cache, name):
    path = tmp_path / name
    path.write_text("" if name != "empty.jsonl" else "\n\n")
    with pytest.raises(DataError, match=f"{name} holds no text"):
        load_corpus(str(path), cache_dir=hf_cache)


def test_corrupt_gzip(tmp_path, hf_cache):
    garbage = tmp_path / "garbage.jsonl.gz"
    garbage.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="garbage.jsonl.gz is not a readable gzip file"):
        load_corpus(str(garbage), cache_dir=hf_cache)
    good = _write_jsonl_gz(tmp_path / "cut.jsonl.gz", [{"text": "x" * 5000}] * 20)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(DataError, match="cut.jsonl.gz is not a readable gzip file"):
        load_corpus(str(good), cache_dir=hf_cache)


@pytest.mark.parametrize("name", ["latin1.txt", "latin1.jsonl.gz"])
def test_non_utf8_names_the_file_and_offset(tmp_path, hf_cache, name):
    raw = '{"text": "caf\xe9"}\n'.encode("latin-1") if "jsonl" in name else "abc caf\xe9".encode("latin-1")
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    with pytest.raises(
        DataError, match=rf"{name} is not UTF-8 text \(invalid byte at offset {raw.index(0xE9)}\)"
    ):
        load_corpus(str(path), cache_dir=hf_cache)


def test_unknown_preset_lists_presets(hf_cache):
    with pytest.raises(
        DataError, match="unknown corpus 'wikitext'.*wikipedia_en, tinyshakespeare, dna_ecoli_k12, text8_wiki"
    ):
        load_corpus("wikitext", cache_dir=hf_cache)


def test_missing_text_field_and_bad_json(tmp_path, hf_cache):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DataError, match="c.jsonl line 2 has no 'text' field"):
        load_corpus(str(path), cache_dir=hf_cache)
    path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_corpus(str(path), cache_dir=hf_cache)
    path.write_text('{"text": 3}\n')
    with pytest.raises(DataError, match="'text' must be a string"):
        load_corpus(str(path), cache_dir=hf_cache)


def test_split_errors(tmp_path, hf_cache):
    with pytest.raises(DataError, match="has no split 'test'; its splits are train, valid"):
        load_corpus("wikipedia_en", "test", cache_dir=hf_cache)
    path = tmp_path / "a.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="single file: its splits are train and valid .*not 'test'"):
        load_corpus(str(path), "test", cache_dir=hf_cache)


def test_a_single_file_holds_out_its_last_five_percent_as_valid(tmp_path, hf_cache):
    lines = [f"line {i:03d} of the story\n" for i in range(100)]  # 22 characters each
    path = tmp_path / "one.txt"
    path.write_text("".join(lines))
    train, valid = (load_corpus(str(path), split, cache_dir=hf_cache)["text"] for split in ("train", "valid"))
    assert train[0] + valid[0] == "".join(lines)
    assert valid[0] == "".join(lines[95:])  # cut at the line break after 95 % of the characters
    docs = [{"text": f"document {i}"} for i in range(40)]
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    train, valid = (load_corpus(str(path), split, cache_dir=hf_cache)["text"] for split in ("train", "valid"))
    assert train == [f"document {i}" for i in range(38)] and valid == ["document 38", "document 39"]
    text = "x" * 200  # no line break after 95 %: cut at that character
    assert files.single_file_part([text], "valid") == ["x" * 10]
    assert files.single_file_part([text], "train") == ["x" * 190]


def test_unknown_format_and_bad_limits(tmp_path, hf_cache):
    path = tmp_path / "a.csv"
    path.write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_corpus(str(path), cache_dir=hf_cache)
    with pytest.raises(DataError, match="max_docs must be a positive number"):
        load_corpus("tinyshakespeare", max_docs=0, cache_dir=hf_cache)


def test_missing_preset_file(tmp_path, monkeypatch, hf_cache):
    monkeypatch.setenv("EDLM_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="tinyshakespeare/train.txt is missing"):
        load_corpus("tinyshakespeare", cache_dir=hf_cache)


def test_partial_dot_data_does_not_hide_a_corpus_elsewhere(tmp_path, monkeypatch):
    # A .data holding only wikipedia_en (as copied for a GPU run) must not hide tinyshakespeare in ../shared/data.
    monkeypatch.delenv("EDLM_DATA_DIR", raising=False)
    (tmp_path / "repo" / ".data" / "wikipedia_en").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "tinyshakespeare").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setattr(sources, "_REPO_ROOT", tmp_path / "repo")
    assert find_data_dir("wikipedia_en") == (tmp_path / "repo" / ".data").resolve()
    assert find_data_dir("tinyshakespeare") == (tmp_path / "shared" / "data").resolve()
    assert corpus_files("tinyshakespeare")["train"].parent == (tmp_path / "shared" / "data" / "tinyshakespeare")
    assert find_data_dir("dna_ecoli_k12") == (tmp_path / "repo" / ".data").resolve()  # nowhere: first existing
