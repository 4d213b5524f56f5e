"""How each bundled corpus (`PRESETS`) is made from its public source: the pinned sources and reference
hashes, and the pure processing that turns a download into ``train`` / ``valid`` text.

``edlm.data.fetch.fetch_corpus`` downloads the sources and writes what these functions return; the processing
follows ``shared/data/SOURCES.md``:

- **tinyshakespeare** — char-rnn ``input.txt`` at commit ``6f9487a6…`` (sha256 checked). `split_shakespeare`
  cuts at the first blank line at or after 90 % and 95 % of the characters (``text.find("\\n\\n", int(f * n))``,
  the cut falls just after the blank line): ``[0, cut90)`` → ``train.txt``, ``[cut90, cut95)`` → ``valid.txt``,
  the rest is the held-out test and is not written. The outputs are checked against the documented sha256.
- **wikipedia_en** — the 400 WikiExtractor files ``text/AA/wiki_00 … text/AD/wiki_99`` of
  ``jason-feng/wikiVisual`` at commit ``1c0fac92…``, in that (dump) order. `parse_wikiextractor` reads the
  ``<doc id url title>`` blocks: the repeated title line is dropped, plain ``<br>``/``<br/>``/``<br />`` tags
  become a space (tags with attributes are left alone, as in the reference build), U+2028/U+2029 become ``\\n``
  and U+0085 a space, runs of 3+ newlines become 2, the body is stripped, and docs with a body under 500
  characters are dropped. `wiki_bucket` then assigns each doc by
  ``u = int.from_bytes(sha256(f"wikipedia_en:{id}").digest()[:8], "big") / 2**64``:
  ``u < 0.0075`` → held-out test, ``0.0075 ≤ u < 0.0125`` → valid, ``0.0125 ≤ u < 0.25`` → train, else dropped
  (a 25 % sample split 3 % / 2 % / 95 % test / valid / train). This rule was checked against the real
  ``shared/data/wikipedia_en`` files: all 5,910 train ids fall in ``[0.01252, 0.24998]`` and all 122 valid ids
  in ``[0.00755, 0.01243]``, so it reproduces exactly which ids are in train and which in valid (the test
  boundary ``0.0075`` is the natural round value below the smallest valid ``u``; test ids are not in shared/).
  Ids of the sample range that are absent from train/valid were spot-checked to be absent from the source
  (redirects have ids but no WikiExtractor doc). One JSON object per line, ``{"id", "title", "text"}``,
  ``json.dumps(ensure_ascii=False)``. The text processing was checked on samples, not byte for byte against
  the whole source (which cannot be downloaded here): the result is compared with the sha256 of the
  reference build and a mismatch is reported as a warning, not an error.
- **dna_ecoli_k12** — E. coli K-12 MG1655, GenBank ``U00096.2`` (4,639,675 bp), fetched as FASTA from NCBI
  E-utilities (the reference build took the identical sequence from Debian's ``ragout-examples``); length and
  base counts are checked. `split_genome` cuts train ``[0, 4175707)`` and valid ``[4175707, 4407691)``;
  `fasta_text` lays out one header (`genome_header`, e.g.
  ``>ecoli_K12_MG1655 U00096.2/NC_000913.2 train 0-based [0,4175707) len=4175707``) and 80-bp uppercase lines.
- **text8_wiki** — derived on the fly from ``wikipedia_en``: fetching it builds ``wikipedia_en``.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from edlm.errors import DataError

__all__ = [
    "ECOLI_K12",
    "GenomeSpec",
    "SHAKESPEARE_OUTPUT_SHA256",
    "SHAKESPEARE_SHA256",
    "SHAKESPEARE_URL",
    "WIKI_KEEP_BELOW",
    "WIKI_MIN_CHARS",
    "WIKI_REFERENCE_SHA256",
    "WIKI_REPO_RAW",
    "WIKI_TEST_BELOW",
    "WIKI_VALID_BELOW",
    "check_genome",
    "fasta_text",
    "genome_header",
    "parse_fasta_sequence",
    "parse_wikiextractor",
    "select_wiki_docs",
    "split_genome",
    "split_shakespeare",
    "wiki_bucket",
    "wiki_hash_fraction",
    "wiki_jsonl",
    "wiki_urls",
]

# ----------------------------------------------------------------------------- tinyshakespeare
SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/"
    "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt"
)
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_OUTPUT_SHA256 = {  # of train.txt / valid.txt, from SOURCES.md
    "train": "8b1558a3b33e760f5ba25b4270556cbc14fb2fe00c6f4c85e8da6db0e2954430",
    "valid": "d4160a0eda7c397e8ec843be410f69e00d26fbbb397a0c7ab2b18c59d2a6b0c1",
}

# ----------------------------------------------------------------------------- wikipedia_en
WIKI_REPO_RAW = (
    "https://raw.githubusercontent.com/jason-feng/wikiVisual/1c0fac92f29f17c1603bfffbe864e0dfdff66897/text"
)
WIKI_MIN_CHARS = 500
WIKI_TEST_BELOW = 0.0075  # u < 0.0075: held-out test (3 % of the sample)
WIKI_VALID_BELOW = 0.0125  # 0.0075 <= u < 0.0125: valid (2 %)
WIKI_KEEP_BELOW = 0.25  # 0.0125 <= u < 0.25: train (95 %); u >= 0.25: not in the 25 % sample
# sha256 of the *uncompressed* reference files (shared/data/wikipedia_en); the .gz files themselves are
# 7fd80d18…e5e3d9 (train) and b846c165…036e20 (valid) with the standard zlib.
WIKI_REFERENCE_SHA256 = {
    "train": "dd48c741448b38a2431346ffd5ac9d50505096e7526d867d0769a4e32f54d337",
    "valid": "df8016f7fb6f749fee9a7f39e5fb614708c1569505dcdbf477d320631e288a11",
}

_DOC_HEADER = re.compile(r'<doc id="(\d+)" url="[^"]*" title="(.*)">\s*$')
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_MANY_NEWLINES = re.compile(r"\n{3,}")


# ----------------------------------------------------------------------------- dna_ecoli_k12
@dataclass(frozen=True)
class GenomeSpec:
    """What a fetched genome must be, how it is split, and how its FASTA headers read."""

    url: str
    length: int
    counts: dict[str, int]
    splits: dict[str, tuple[int, int]]  # split -> 0-based half-open [start, end)
    name: str = "ecoli_K12_MG1655"
    accession: str = "U00096.2/NC_000913.2"
    output_sha256: dict[str, str] = field(default_factory=dict)  # uncompressed FASTA text per split


ECOLI_K12 = GenomeSpec(
    url="https://eutils.ncbi.nlm.nih.gov/entrez/eutils/efetch.fcgi?db=nuccore&id=U00096.2&rettype=fasta&retmode=text",
    length=4_639_675,
    counts={"A": 1_142_228, "C": 1_179_554, "G": 1_176_923, "T": 1_140_970},
    splits={"train": (0, 4_175_707), "valid": (4_175_707, 4_407_691)},
    output_sha256={  # uncompressed; the .gz files are a4a29fe6…aff8f6 (train) and 7f986767…13c79d (valid)
        "train": "b7d6c5300875f1611ca48c9e9bd3767536af3b740cfdbd8dfeb03148760de6f9",
        "valid": "a9bfd1d17b8407d42f4dd370ee90cb4e6f1e7a0e942ec69b1638a80a4a35cd89",
    },
)


# ----------------------------------------------------------------------------- processing
def split_shakespeare(text: str, fractions: tuple[float, float] = (0.9, 0.95)) -> tuple[str, str]:
    """``(train, valid)``: cut just after the first blank line (``"\\n\\n"``) found from ``int(f * len(text))``
    on, for f = 90 % and 95 %; what follows the second cut (the held-out test) is dropped. A cut with no
    blank line after it falls at the end of the text."""
    cuts = []
    for fraction in fractions:
        i = text.find("\n\n", int(len(text) * fraction))
        cuts.append(len(text) if i < 0 else i + 2)
    return text[: cuts[0]], text[cuts[0] : cuts[1]]


def parse_wikiextractor(text: str, min_chars: int = WIKI_MIN_CHARS) -> list[dict]:
    """The documents of one WikiExtractor output file as ``{"id": int, "title": str, "text": str}``, in file
    order, cleaned as the reference build (see the module docstring); docs with a body under ``min_chars``
    characters are dropped."""
    docs = []
    header = None
    body: list[str] = []
    for line in text.split("\n"):
        match = _DOC_HEADER.match(line) if line.startswith("<doc ") else None
        if match:
            header, body = match, []
        elif line.startswith("</doc>") and header is not None:
            doc_id, title = int(header.group(1)), header.group(2)
            if body and body[0].strip() in (title.strip(), html.unescape(title).strip()):
                body = body[1:]  # WikiExtractor repeats the title as the first line
            clean = _clean_wiki_text("\n".join(body))
            if len(clean) >= min_chars:
                docs.append({"id": doc_id, "title": title, "text": clean})
            header = None
        elif header is not None:
            body.append(line)
    return docs


def _clean_wiki_text(text: str) -> str:
    text = _BR.sub(" ", text)
    text = text.replace("\u2028", "\n").replace("\u2029", "\n").replace("\u0085", " ")
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


def wiki_hash_fraction(doc_id: int | str) -> float:
    """``u`` in [0, 1): the first 8 bytes of ``sha256("wikipedia_en:<id>")``, big-endian, over 2**64."""
    digest = hashlib.sha256(f"wikipedia_en:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def wiki_bucket(doc_id: int | str) -> str:
    """``"test"`` (u < 0.0075), ``"valid"`` (< 0.0125), ``"train"`` (< 0.25) or ``"drop"`` (not sampled)."""
    u = wiki_hash_fraction(doc_id)
    if u < WIKI_TEST_BELOW:
        return "test"
    if u < WIKI_VALID_BELOW:
        return "valid"
    if u < WIKI_KEEP_BELOW:
        return "train"
    return "drop"


def select_wiki_docs(docs: Iterable[dict]) -> dict[str, list[dict]]:
    """``{"train": [...], "valid": [...]}`` of the docs by `wiki_bucket`, keeping their order."""
    out: dict[str, list[dict]] = {"train": [], "valid": []}
    for doc in docs:
        bucket = wiki_bucket(doc["id"])
        if bucket in out:
            out[bucket].append(doc)
    return out


def wiki_jsonl(docs: Iterable[dict]) -> str:
    """One ``{"id", "title", "text"}`` JSON object per line, non-ASCII kept as is."""
    return "".join(
        json.dumps({"id": d["id"], "title": d["title"], "text": d["text"]}, ensure_ascii=False) + "\n"
        for d in docs
    )


def wiki_urls() -> list[str]:
    """The 400 source files, in dump order: ``text/AA/wiki_00`` … ``text/AD/wiki_99``."""
    return [f"{WIKI_REPO_RAW}/{part}/wiki_{i:02d}" for part in ("AA", "AB", "AC", "AD") for i in range(100)]


def parse_fasta_sequence(text: str) -> str:
    """The sequence of a one-record FASTA text, uppercased, whitespace removed."""
    headers = 0
    parts = []
    for line in text.splitlines():
        if line.startswith(">"):
            headers += 1
            if headers > 1:
                raise DataError("the genome FASTA holds more than one record; expected one complete genome.")
        elif not line.startswith(";"):
            parts.append("".join(line.split()))
    if headers == 0:
        raise DataError("the genome download is not FASTA (no '>' header line).")
    return "".join(parts).upper()


def check_genome(seq: str, spec: GenomeSpec) -> None:
    """Raise `DataError` unless ``seq`` has the expected length and base counts."""
    if len(seq) != spec.length:
        raise DataError(f"genome has {len(seq):,} bp, expected {spec.length:,} ({spec.accession}).")
    counts = {base: seq.count(base) for base in spec.counts}
    if counts != spec.counts or sum(counts.values()) != len(seq):
        raise DataError(f"genome base counts {counts} differ from the expected {spec.counts}.")


def split_genome(
    seq: str, splits: dict[str, tuple[int, int]] | None = None
) -> dict[str, tuple[int, int, str]]:
    """``{split: (start, end, seq[start:end])}`` for 0-based half-open coordinates (default: E. coli's)."""
    splits = ECOLI_K12.splits if splits is None else splits
    out = {}
    for split, (start, end) in splits.items():
        if not 0 <= start < end <= len(seq):
            raise DataError(f"split {split!r} [{start}, {end}) does not fit a sequence of {len(seq)} bp.")
        out[split] = (start, end, seq[start:end])
    return out


def genome_header(split: str, start: int, end: int, spec: GenomeSpec | None = None) -> str:
    """The FASTA header line (no ``>``, no newline), as in the reference build."""
    spec = ECOLI_K12 if spec is None else spec
    return f"{spec.name} {spec.accession} {split} 0-based [{start},{end}) len={end - start}"


def fasta_text(header: str, seq: str, width: int = 80) -> str:
    """``>header`` then ``seq`` in lines of ``width`` characters, each ending in a newline."""
    lines = [">" + header] + [seq[i : i + width] for i in range(0, len(seq), width)]
    return "\n".join(lines) + "\n"
