"""Local corpus files through `load_corpus`: JSONL text columns, FASTA records, folders of mixed files."""

import gzip
import json

import pytest

from edlm.data import load_corpus
from edlm.errors import DataError


@pytest.fixture
def hf_cache(tmp_path):
    return str(tmp_path / "hf")


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_text_column_is_settable(tmp_path, hf_cache):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": i, "body": f"doc {i}", "text": 0} for i in range(3)])
    assert load_corpus(path, "all", text_column="body", cache_dir=hf_cache)["text"] == ["doc 0", "doc 1", "doc 2"]
    with pytest.raises(DataError, match=r"c.jsonl line 1 has no 'content' field \(its fields: id, body, text\); "
                                        r"name the field .* with --text-column"):
        load_corpus(path, "all", text_column="content", cache_dir=hf_cache)
    with pytest.raises(DataError, match="'text' must be a string, got int"):
        load_corpus(path, "all", cache_dir=hf_cache)


def test_fasta_records_skip_headers_and_join_uppercased_lines(tmp_path, hf_cache):
    text = ">chr1 first record\nacgtn\nACGT\n\n;an old-style comment\n>chr2\nGGCCaa\n>empty\n>chr3\nttt\n"
    (tmp_path / "g.fa.gz").write_bytes(gzip.compress(text.encode()))
    assert load_corpus(tmp_path / "g.fa.gz", "all", cache_dir=hf_cache)["text"] == ["ACGTNACGT", "GGCCAA", "TTT"]
    (tmp_path / "bad.fasta").write_text("ACGT\n>r\nAC\n")
    with pytest.raises(DataError, match="bad.fasta line 1: sequence before the first '>' header"):
        load_corpus(tmp_path / "bad.fasta", "all", cache_dir=hf_cache)


def test_a_folder_of_files_is_one_corpus_in_path_order(tmp_path, hf_cache):
    root = tmp_path / "mine"
    write_jsonl(root / "b.jsonl", [{"text": f"jsonl doc {i}"} for i in range(17)])
    (root / "a.txt").write_text("the whole file\nis one document\n")
    (root / "sub").mkdir()
    (root / "sub" / "c.fa").write_text(">r1\nac\ngt\n>r2\nnn\n")
    (root / "notes.md").write_text("not a corpus file")
    (root / ".cache").mkdir()
    (root / ".cache" / "z.txt").write_text("hidden: skipped")
    docs = ["the whole file\nis one document\n"] + [f"jsonl doc {i}" for i in range(17)] + ["ACGT", "NN"]
    assert load_corpus(root, "all", cache_dir=hf_cache)["text"] == docs
    assert load_corpus(root, "valid", cache_dir=hf_cache)["text"] == docs[-1:]  # 5 % of 20 documents
    assert load_corpus(root, "train", cache_dir=hf_cache)["text"] == docs[:-1]
    assert load_corpus(root, "all", max_docs=2, cache_dir=hf_cache)["text"] == docs[:2]
    (root / "a.txt").write_text("changed")  # a changed file is read again, not taken from the cache
    assert load_corpus(root, "all", cache_dir=hf_cache)["text"][0] == "changed"
    with pytest.raises(DataError, match="read as one corpus: its splits are train and valid .* not 'test'"):
        load_corpus(root, "test", cache_dir=hf_cache)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.md").write_text("x")
    with pytest.raises(DataError, match="holds no corpus file"):
        load_corpus(tmp_path / "none", cache_dir=hf_cache)


def test_a_folder_with_split_files_reads_them_by_name(tmp_path, hf_cache):
    root = tmp_path / "split"
    write_jsonl(root / "train.jsonl", [{"text": "train a"}, {"text": "train b"}])
    write_jsonl(root / "validation.jsonl", [{"text": "held out"}])
    assert load_corpus(root, "train", cache_dir=hf_cache)["text"] == ["train a", "train b"]
    assert load_corpus(root, "validation", cache_dir=hf_cache)["text"] == ["held out"]
    with pytest.raises(DataError, match="has no valid.<ext> file .*--valid-split validation"):
        load_corpus(root, "valid", cache_dir=hf_cache)


def test_a_missing_path_that_looks_like_a_hub_id_says_how_to_name_one(tmp_path, monkeypatch, hf_cache):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"no such corpus file or directory: someone/corpus \(for a Hugging Face "
                                        r"hub dataset write hf:someone/corpus\)"):
        load_corpus("someone/corpus", cache_dir=hf_cache)
