"""`edlm.data.fetch`: the processing of each corpus on inputs built here (and on the real shared/data files
when they are present), and `fetch_corpus` end to end with `_download` replaced: no network."""

import gzip
import hashlib
import json
import random
import re

import pytest

import edlm.data.fetch as fetch
from edlm.data import PRESETS, load_corpus
from edlm.data.fetch import fetch_corpus, write_fasta
from edlm.data.prepare import (
    GenomeSpec,
    fasta_text,
    genome_header,
    parse_fasta_sequence,
    parse_wikiextractor,
    select_wiki_docs,
    split_genome,
    split_shakespeare,
    wiki_bucket,
    wiki_urls,
)
from edlm.errors import DataError


# ----------------------------------------------------------------------------- tinyshakespeare
def _speeches(lengths):
    """Speeches 'Sk:\\n' + body + '\\n\\n' whose total lengths are ``lengths``."""
    return "".join(f"S{k}:\n".ljust(n - 2, "x") + "\n\n" for k, n in enumerate(lengths))


def test_shakespeare_cuts_after_the_first_blank_line_past_90_and_95_percent():
    text = _speeches([40] * 25)  # 1000 chars; blank lines end at 40, 80, …, 1000
    train, valid = split_shakespeare(text)
    assert len(train) == 920 and len(valid) == 960 - 920  # 900 -> blank line at 918 -> cut 920
    assert train + valid == text[:960] and train.endswith("\n\n") and valid.startswith("S23:")


def test_shakespeare_cut_position_is_the_end_of_the_blank_line():
    # 90 % of 1000 = 900 falls exactly on the first "\n" of a blank line: that blank line is the cut.
    text = _speeches([100] * 8 + [102, 98])
    assert text[900:902] == "\n\n"
    train, valid = split_shakespeare(text)
    assert len(train) == 902 and len(valid) == 1000 - 902  # 95 % -> the blank line at the very end
    # no blank line after 95 %: the valid split runs to the end
    train, valid = split_shakespeare("a\n\n" + "b" * 97)
    assert train == "a\n\n" + "b" * 97 and valid == ""


def test_shakespeare_split_reproduces_the_real_train_and_valid(full_data_dir):
    folder = full_data_dir("tinyshakespeare") / "tinyshakespeare"
    train = (folder / "train.txt").read_text(encoding="utf-8")
    valid = (folder / "valid.txt").read_text(encoding="utf-8")
    held_out = 1_115_394 - len(train) - len(valid)  # input.txt is 1,115,394 chars; the test slice isn't here
    extra = _speeches([56] * (held_out // 56))
    extra += "Z:\n" + "z" * (held_out - len(extra) - 3)
    text = train + valid + extra
    assert len(text) == 1_115_394
    got_train, got_valid = split_shakespeare(text)
    assert got_train == train and got_valid == valid
    for split, got in (("train", got_train), ("valid", got_valid)):
        assert hashlib.sha256(got.encode()).hexdigest() == fetch.SHAKESPEARE_OUTPUT_SHA256[split]


# ----------------------------------------------------------------------------- wikipedia_en
BODY = "Alpha beta gamma. " * 40  # 720 chars


def _doc(doc_id, title, body, *, repeat_title=True):
    head = f'<doc id="{doc_id}" url="http://en.wikipedia.org/wiki?curid={doc_id}" title="{title}">\n'
    return head + (f"{title}\n\n" if repeat_title else "") + body + "\n\n</doc>\n"


def test_parse_wikiextractor_cleans_like_the_reference_build():
    text = (
        _doc(
            12,
            "Anarchism",
            "First para.<br>Second<BR/>half.<br />End.\n\n\n\nNext.\n George Woodcock.\n" + BODY,
        )
        + _doc(13, "Short", "Too short to keep.")
        + _doc(14, 'The "Q" & A', "Line\u2028two\u0085three <br style=clear:both> kept.\n" + BODY)
        + _doc(15, "No title line", BODY, repeat_title=False)
    )
    docs = parse_wikiextractor(text)
    assert [d["id"] for d in docs] == [12, 14, 15]
    assert [d["title"] for d in docs] == ["Anarchism", 'The "Q" & A', "No title line"]
    first = docs[0]["text"]
    assert first.startswith("First para. Second half. End.\n\nNext.\n George Woodcock.\n")
    assert first.endswith("gamma.") and "<br" not in first.lower() and "\n\n\n" not in first
    assert docs[1]["text"].startswith("Line\ntwo three <br style=clear:both> kept.\n")
    assert docs[2]["text"] == BODY.strip()
    # the body length rule: < 500 chars dropped, 500 kept
    assert parse_wikiextractor(_doc(1, "T", "x" * 499)) == []
    assert len(parse_wikiextractor(_doc(1, "T", "x" * 500))) == 1


def _real_ids(folder, split):
    with gzip.open(folder / f"{split}.jsonl.gz", "rb") as f:
        return [int(re.match(rb'\{"id": (\d+),', line).group(1)) for line in f]


def test_bucket_rule_reproduces_the_real_train_and_valid_ids(full_data_dir):
    folder = full_data_dir("wikipedia_en") / "wikipedia_en"
    train, valid = _real_ids(folder, "train"), _real_ids(folder, "valid")
    assert (len(train), len(valid)) == (5910, 122)
    assert [i for i in train if wiki_bucket(i) != "train"] == []
    assert [i for i in valid if wiki_bucket(i) != "valid"] == []
    assert train == sorted(train) and valid == sorted(valid)  # dump order


def test_wiki_output_format_is_byte_identical_to_the_real_valid_file(full_data_dir):
    path = full_data_dir("wikipedia_en") / "wikipedia_en" / "valid.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    text = fetch.wiki_jsonl(records)
    assert hashlib.sha256(text.encode()).hexdigest() == fetch.WIKI_REFERENCE_SHA256["valid"]
    assert fetch._gzip_bytes(text.encode()) == path.read_bytes()  # level 9, mtime 0, no name
    # the cleaning leaves real output text alone, and a real doc survives a WikiExtractor round trip
    blocks = "".join(_doc(r["id"], r["title"], r["text"]) for r in records[:20])
    assert parse_wikiextractor(blocks) == [
        {"id": r["id"], "title": r["title"], "text": r["text"]} for r in records[:20]
    ]


def test_bucket_rule_shares():
    buckets = [wiki_bucket(i) for i in range(20_000)]
    share = {b: buckets.count(b) / len(buckets) for b in ("test", "valid", "train", "drop")}
    assert share["drop"] == pytest.approx(0.75, abs=0.015)
    assert share["train"] == pytest.approx(0.2375, abs=0.015)
    assert share["valid"] == pytest.approx(0.005, abs=0.002)
    assert share["test"] == pytest.approx(0.0075, abs=0.002)


def test_select_wiki_docs_keeps_train_and_valid_in_order():
    docs = [{"id": i, "title": str(i), "text": "x"} for i in range(3000)]
    got = select_wiki_docs(docs)
    assert set(got) == {"train", "valid"}
    assert [d["id"] for d in got["train"]] == [i for i in range(3000) if wiki_bucket(i) == "train"]
    assert [d["id"] for d in got["valid"]] == [i for i in range(3000) if wiki_bucket(i) == "valid"]
    assert got["valid"] and got["train"]


def test_wiki_urls_are_the_400_pinned_files_in_dump_order():
    urls = wiki_urls()
    assert len(urls) == 400 and len(set(urls)) == 400
    assert urls[0].endswith("1c0fac92f29f17c1603bfffbe864e0dfdff66897/text/AA/wiki_00")
    assert urls[99].endswith("/AA/wiki_99") and urls[100].endswith("/AB/wiki_00")
    assert urls[-1].endswith("/AD/wiki_99")


# ----------------------------------------------------------------------------- dna_ecoli_k12
def test_genome_split_and_fasta_on_a_scaled_genome(tmp_path):
    seq = ("ACGT" * 50 + "acgtN")[:203]
    parts = split_genome(seq.upper(), {"train": (0, 182), "valid": (182, 193)})
    assert parts["train"] == (0, 182, seq.upper()[:182]) and parts["valid"][:2] == (182, 193)
    start, end, sub = parts["train"]
    header = genome_header("train", start, end)
    assert header == "ecoli_K12_MG1655 U00096.2/NC_000913.2 train 0-based [0,182) len=182"
    text = fasta_text(header, sub)
    lines = text.split("\n")
    assert lines[0] == ">" + header and [len(x) for x in lines[1:]] == [80, 80, 22, 0]
    path = write_fasta(tmp_path / "train.fa.gz", header, sub)
    raw = path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0" and gzip.decompress(raw).decode() == text  # mtime 0
    assert [p.name for p in tmp_path.iterdir()] == ["train.fa.gz"]  # no temporary file left
    with pytest.raises(DataError, match="does not fit"):
        split_genome("ACGT", {"train": (0, 5)})


def test_genome_header_matches_the_real_files(full_data_dir):
    folder = full_data_dir("dna_ecoli_k12") / "dna_ecoli_k12"
    for split, (start, end) in fetch.ECOLI_K12.splits.items():
        with gzip.open(folder / f"{split}.fa.gz", "rt") as f:
            assert f.readline() == ">" + genome_header(split, start, end) + "\n"
            assert len(f.readline()) == 81


def test_fasta_output_is_byte_identical_to_the_real_valid_file(full_data_dir):
    path = full_data_dir("dna_ecoli_k12") / "dna_ecoli_k12" / "valid.fa.gz"
    real = gzip.decompress(path.read_bytes()).decode()
    seq = parse_fasta_sequence(real)
    start, end = fetch.ECOLI_K12.splits["valid"]
    assert len(seq) == end - start
    text = fasta_text(genome_header("valid", start, end), seq)
    assert (
        text == real and hashlib.sha256(text.encode()).hexdigest() == fetch.ECOLI_K12.output_sha256["valid"]
    )
    assert fetch._gzip_bytes(text.encode()) == path.read_bytes()


def test_parse_fasta_sequence():
    assert parse_fasta_sequence(">U00096.2 E. coli\nacgt\nAC GT\n\n") == "ACGTACGT"
    with pytest.raises(DataError, match="not FASTA"):
        parse_fasta_sequence("<html>error</html>")
    with pytest.raises(DataError, match="more than one record"):
        parse_fasta_sequence(">a\nAC\n>b\nGT\n")


# ----------------------------------------------------------------------------- fetch_corpus end to end
def _ids_in(bucket, count, start=1):
    out, i = [], start
    while len(out) < count:
        if wiki_bucket(i) == bucket:
            out.append(i)
        i += 1
    return out


GENOME = "".join(random.Random(0).choices("ACGT", k=1000))
SHAKESPEARE = _speeches([30 + (k % 7) for k in range(60)])
TRAIN_IDS, VALID_IDS, DROP_IDS = _ids_in("train", 4), _ids_in("valid", 2), _ids_in("drop", 3)


class FakeSources:
    """`_download` serving made-up files for the real URLs, counting the calls."""

    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at
        wiki = {}
        for n, doc_id in enumerate(TRAIN_IDS + VALID_IDS + DROP_IDS):
            url = wiki_urls()[(n * 37) % 400]
            wiki[url] = wiki.get(url, "") + _doc(doc_id, f"Doc {doc_id}", f"Doc {doc_id} says. " + BODY)
        self.files = {url: wiki.get(url, "").encode() for url in wiki_urls()}
        self.files[fetch.SHAKESPEARE_URL] = SHAKESPEARE.encode()
        self.files[fetch.ECOLI_K12.url] = (
            ">U00096.2 Escherichia coli\n" + "\n".join(GENOME[i : i + 70] for i in range(0, 1000, 70)) + "\n"
        ).encode()

    def __call__(self, url, expected_sha256=None, *, progress=True):
        self.calls.append(url)
        if self.fail_at is not None and len(self.calls) > self.fail_at:
            raise DataError(f"could not download {url} (test)")
        return self.files[url]


@pytest.fixture
def fake(monkeypatch):
    sources = FakeSources()
    monkeypatch.setattr(fetch, "_download", sources)
    counts = {b: GENOME.count(b) for b in "ACGT"}
    spec = GenomeSpec(
        url=fetch.ECOLI_K12.url, length=1000, counts=counts, splits={"train": (0, 900), "valid": (900, 950)}
    )
    monkeypatch.setattr(fetch, "ECOLI_K12", spec)
    monkeypatch.setattr(fetch, "WIKI_REFERENCE_SHA256", {})
    return sources


def test_fetch_corpus_end_to_end(fake, tmp_path, monkeypatch):
    dest = tmp_path / "data"
    for name in ("tinyshakespeare", "wikipedia_en", "dna_ecoli_k12"):
        assert fetch_corpus(name, dest, progress=False) == dest / name
    assert len(fake.calls) == 402 and len(set(fake.calls)) == 402
    assert sorted(p.name for p in (dest / "wikipedia_en").iterdir()) == ["train.jsonl.gz", "valid.jsonl.gz"]
    for path in dest.rglob("*.gz"):
        assert path.read_bytes()[4:8] == b"\0\0\0\0"

    monkeypatch.setenv("EDLM_DATA_DIR", str(dest))
    cache = str(tmp_path / "hf")

    def texts(name, split):
        return load_corpus(name, split, cache_dir=cache)["text"]

    assert texts("tinyshakespeare", "train") == [split_shakespeare(SHAKESPEARE)[0]]
    assert texts("tinyshakespeare", "valid") == [split_shakespeare(SHAKESPEARE)[1]]
    assert [t.split(" says.")[0] for t in texts("wikipedia_en", "train")] == [f"Doc {i}" for i in TRAIN_IDS]
    assert [t.split(" says.")[0] for t in texts("wikipedia_en", "valid")] == [f"Doc {i}" for i in VALID_IDS]
    assert texts("text8_wiki", "valid")[0].startswith("doc ")
    assert texts("dna_ecoli_k12", "train") == [GENOME[:900]] and texts("dna_ecoli_k12", "valid") == [
        GENOME[900:950]
    ]
    with gzip.open(dest / "wikipedia_en" / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        assert [json.loads(line)["id"] for line in f] == TRAIN_IDS
    with gzip.open(dest / "dna_ecoli_k12" / "valid.fa.gz", "rt") as f:
        assert f.readline().startswith(
            ">ecoli_K12_MG1655 U00096.2/NC_000913.2 valid 0-based [900,950) len=50"
        )

    # a second call finds everything in place and downloads nothing; text8_wiki is wikipedia_en
    fake.calls.clear()
    for name in list(PRESETS):
        fetch_corpus(name, dest, progress=False)
    assert fetch_corpus("text8_wiki", dest, progress=False) == dest / "wikipedia_en"
    assert fake.calls == []

    # a missing or corrupt file is rebuilt, the intact one is left alone
    valid = dest / "tinyshakespeare" / "valid.txt"
    train_stat = (dest / "tinyshakespeare" / "train.txt").stat()
    valid.unlink()
    (dest / "dna_ecoli_k12" / "valid.fa.gz").write_bytes(b"\x1f\x8b truncated")
    fetch_corpus("tinyshakespeare", dest, progress=False)
    fetch_corpus("dna_ecoli_k12", dest, progress=False)
    assert fake.calls == [fetch.SHAKESPEARE_URL, fetch.ECOLI_K12.url]
    assert valid.read_text() == split_shakespeare(SHAKESPEARE)[1]
    assert (dest / "tinyshakespeare" / "train.txt").stat().st_mtime_ns == train_stat.st_mtime_ns
    assert texts("dna_ecoli_k12", "valid") == [GENOME[900:950]]


def test_unknown_corpus_is_a_one_line_value_error(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown corpus 'tinystories'; known: wikipedia_en, .*text8_wiki"
    ) as err:
        fetch_corpus("tinystories", tmp_path)
    assert "\n" not in str(err.value)


def test_an_interrupted_fetch_leaves_no_corpus_file(fake, tmp_path):
    fake.fail_at = 200
    with pytest.raises(DataError, match="could not download"):
        fetch_corpus("wikipedia_en", tmp_path, progress=False)
    assert list(tmp_path.rglob("*")) == []


def test_a_wrong_genome_is_refused(fake, tmp_path):
    fake.files[fetch.ECOLI_K12.url] = b">x\n" + GENOME[:999].encode() + b"\n"
    with pytest.raises(DataError, match="999 bp, expected 1,000"):
        fetch_corpus("dna_ecoli_k12", tmp_path, progress=False)
    assert not (tmp_path / "dna_ecoli_k12" / "train.fa.gz").exists()


# ----------------------------------------------------------------------------- the real _download, offline
def test_download_checks_sha256_and_names_the_url(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.time, "sleep", lambda s: None)
    path = tmp_path / "input.txt"
    path.write_bytes(b"hello\n")
    url = path.as_uri()
    assert fetch._download(url, hashlib.sha256(b"hello\n").hexdigest(), progress=False) == b"hello\n"
    with pytest.raises(DataError, match=rf"could not download {re.escape(url)} \(sha256 .* pinned"):
        fetch._download(url, "0" * 64, progress=False)
    missing = (tmp_path / "missing.txt").as_uri()
    with pytest.raises(DataError, match=rf"could not download {re.escape(missing)} .*EDLM_DATA_DIR") as err:
        fetch._download(missing, progress=False)
    assert "\n" not in str(err.value)


def test_cli_data_fetch_builds_into_dest_and_refuses_unknown_names(fake, tmp_path, capsys):
    from edlm.cli import main

    assert main(["data", "fetch", "tinyshakespeare", "dna_ecoli_k12", "--dest", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "tinyshakespeare" / "valid.txt").read_text() == split_shakespeare(SHAKESPEARE)[1]
    assert (tmp_path / "dna_ecoli_k12" / "train.fa.gz").is_file()
    assert fake.calls == [fetch.SHAKESPEARE_URL, fetch.ECOLI_K12.url]
    assert main(["data", "fetch", "tinystories", "--dest", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("edlm: error: unknown corpus 'tinystories'")
