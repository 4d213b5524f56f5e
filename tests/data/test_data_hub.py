"""Hub corpora (``hf:NAME[:CONFIG]``) through the real `datasets.load_dataset`, on local folders laid out as hub
dataset repositories (no network)."""

import json

import pytest

from edlm.data import held_out_split, load_corpus
from edlm.data.hub import parse_hub_spec
from edlm.errors import DataError

README_CONFIGS = """---
configs:
- config_name: news
  data_files:
  - split: train
    path: news/*.jsonl
- config_name: poems
  data_files:
  - split: train
    path: poems/*.jsonl
---
"""


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture
def hub_folder(tmp_path):
    """A dataset repository as on the hub: train and validation splits, the text in column "body"."""
    root = tmp_path / "repo"
    write_jsonl(root / "train.jsonl", [{"id": i, "body": f"training document number {i}"} for i in range(30)]
                + [{"id": 30, "body": ""}])  # an empty row, dropped
    write_jsonl(root / "validation.jsonl", [{"id": i, "body": f"held-out document {i}"} for i in range(4)])
    return root


def test_parse_hub_spec():
    assert parse_hub_spec("hf:wikitext:wikitext-2-raw-v1") == ("wikitext", "wikitext-2-raw-v1")
    assert parse_hub_spec("hf:allenai/c4") == ("allenai/c4", None)
    for bad in ("hf:", "hf::x", "hf:name:"):
        with pytest.raises(DataError, match="hf:NAME"):
            parse_hub_spec(bad)
    assert held_out_split("hf:allenai/c4") == "validation" and held_out_split("my.txt") == "valid"


def test_hub_splits_and_text_column(hub_folder, tmp_path):
    spec, cache = f"hf:{hub_folder}", str(tmp_path / "hf")
    train = load_corpus(spec, "train", text_column="body", cache_dir=cache)
    assert train.column_names == ["text"] and train["text"] == [f"training document number {i}" for i in range(30)]
    assert load_corpus(spec, "validation", text_column="body", cache_dir=cache)["text"][-1] == "held-out document 3"
    assert load_corpus(spec, "train[:10%]", text_column="body", cache_dir=cache)["text"] == train["text"][:3]
    assert load_corpus(spec, "train", text_column="body", max_docs=2, cache_dir=cache)["text"] == train["text"][:2]
    cut = load_corpus(spec, "train", text_column="body", max_chars=40, cache_dir=cache)["text"]
    assert "".join(cut) == "".join(train["text"])[:40] and len(cut) == 2


def test_hub_configs(hub_folder, tmp_path):
    write_jsonl(hub_folder / "news" / "a.jsonl", [{"text": "news item"}])
    write_jsonl(hub_folder / "poems" / "a.jsonl", [{"text": "a poem"}, {"text": "another poem"}])
    (hub_folder / "README.md").write_text(README_CONFIGS)
    cache = str(tmp_path / "hf")
    assert load_corpus(f"hf:{hub_folder}:poems", "train", cache_dir=cache)["text"] == ["a poem", "another poem"]
    assert load_corpus(f"hf:{hub_folder}:news", "train", cache_dir=cache)["text"] == ["news item"]


def test_hub_errors_are_one_line(hub_folder, tmp_path):
    spec, cache = f"hf:{hub_folder}", str(tmp_path / "hf")
    with pytest.raises(DataError, match=r"has no column 'text' \(columns: id, body\); .* --text-column"):
        load_corpus(spec, "train", cache_dir=cache)
    with pytest.raises(DataError, match=r"could not load hub dataset .* split 'valid': Unknown split \"valid\""):
        load_corpus(spec, "valid", text_column="body", cache_dir=cache)
    with pytest.raises(DataError, match="column 'id' holds .*int64.*, not text"):
        load_corpus(spec, "train", text_column="id", cache_dir=cache)
