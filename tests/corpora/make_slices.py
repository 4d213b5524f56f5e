"""Rebuild the corpus slices in tests/corpora from the full shared data folder (see README.md here).

    python tests/corpora/make_slices.py [FULL_DATA_DIR]   # default: ../shared/data beside the repo root

Deterministic: the same full corpora give byte-identical slices (gzip at level 9 with mtime 0, no file name).
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIKI_DOCS = {"train": 40, "valid": 8}  # the first documents of each split, in file (dump) order
WIKI_MAX_CHARS = 12_000  # a longer article is cut at the last paragraph break before this many characters
SHAKESPEARE_CHARS = {"train": 120_000, "valid": 28_000}  # then on to the end of the next blank line
DNA_BASES = {"train": 120_000, "valid": 25_000}  # the first bases of each split's record
FASTA_WIDTH = 80


def _write_gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))


def _trim(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[:cut] if cut > 0 else text[:limit]


def wikipedia(full: Path) -> None:
    for split, n in WIKI_DOCS.items():
        lines = []
        with gzip.open(full / "wikipedia_en" / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
            for line, _ in zip(f, range(n)):
                record = json.loads(line)
                record["text"] = _trim(record["text"], WIKI_MAX_CHARS)
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        _write_gz(HERE / "wikipedia_en" / f"{split}.jsonl.gz", "".join(lines))


def tinyshakespeare(full: Path) -> None:
    for split, n in SHAKESPEARE_CHARS.items():
        text = (full / "tinyshakespeare" / f"{split}.txt").read_text(encoding="utf-8")
        end = text.index("\n\n", n) + 2  # through the blank line that ends a speech
        out = HERE / "tinyshakespeare" / f"{split}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(text[:end].encode("utf-8"))


def dna(full: Path) -> None:
    for split, n in DNA_BASES.items():
        with gzip.open(full / "dna_ecoli_k12" / f"{split}.fa.gz", "rt", encoding="utf-8") as f:
            header = f.readline().rstrip("\n")
            seq = "".join(line.strip() for line in f)
        # ">ecoli_K12_MG1655 U00096.2/NC_000913.2 train 0-based [0,4175707) len=4175707"
        match = re.fullmatch(r">(\S+ \S+ \S+) 0-based \[(\d+),(\d+)\) len=(\d+)", header)
        assert match and int(match[3]) - int(match[2]) == int(match[4]) == len(seq), header
        start = int(match[2])
        head = f">{match[1]} 0-based [{start},{start + n}) len={n} (first {n} bp of [{match[2]},{match[3]}))"
        body = "".join(seq[i : min(i + FASTA_WIDTH, n)] + "\n" for i in range(0, n, FASTA_WIDTH))
        _write_gz(HERE / "dna_ecoli_k12" / f"{split}.fa.gz", head + "\n" + body)


def main(argv: list[str]) -> None:
    full = Path(argv[0]) if argv else HERE.parents[1] / ".." / "shared" / "data"
    if not (full / "wikipedia_en" / "train.jsonl.gz").is_file():
        sys.exit(f"no full data folder at {full}; pass its path")
    wikipedia(full)
    tinyshakespeare(full)
    dna(full)
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and path.parent != HERE:
            print(f"{path.relative_to(HERE)}  {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
