"""DNA at the base level: FASTA in and out, the reverse complement, and the DNA tokenizer's ids.

    records = read_fasta("samples.fa")                       # [FastaRecord(name, seq)], seq over A C G T N
    write_fasta([FastaRecord("s0", "ACGT")], "out.fa.gz")    # 80-base lines, gzip when the name ends in .gz
    reverse_complement("AACGN")                              # "NCGTT"

Rules of the strict reader (`parse_fasta`, `read_fasta`), used wherever edlm reads DNA to measure it:

- **Letters**: A, C, G, T and N only. Any other letter (IUPAC ambiguity codes such as R or Y, digits, ``-``
  gaps, ``*``) is refused with one line naming the file, the record and the letter; replace such codes with N.
- **Lowercase** is read as uppercase: genome FASTA files often soft-mask repeats in lowercase, and the base is
  the same base.
- **Empty input** (no ``>`` record) and a record with no bases are refused. A sequence line before the first
  header is refused too. Blank lines and ``;`` comment lines are skipped; whitespace inside lines is dropped.

Training corpora go through ``edlm.data.sources`` instead, which keeps every letter (the DNA tokenizer maps
anything outside A C G T, N included, to ``[UNK]``: E. coli K-12 has no N, so the model never sees one).

The DNA tokenizer (`edlm.data.tokenizers.dna_tokenizer`) has ids A = 0, C = 1, G = 2, T = 3, then
``<|endoftext|>``, ``[PAD]``, ``[UNK]``, ``[MASK]``. `bases_from_ids` writes any id that is not a base as N, so
a sample keeps its length and every base its position.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from edlm.atomic import atomic_write
from edlm.errors import DataError

__all__ = [
    "BASES",
    "FastaRecord",
    "parse_fasta",
    "read_fasta",
    "fasta_text",
    "write_fasta",
    "reverse_complement",
    "is_dna_tokenizer",
    "bases_from_ids",
    "complement_ids",
    "ReverseComplementRows",
]

BASES = "ACGT"
_LETTERS = frozenset("ACGTN")
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")
_NOT_DNA = re.compile(r"[^ACGTN]")
FASTA_WIDTH = 80  # bases per line, as NCBI and the data folder's files


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record: the header line without ``>`` and the sequence (uppercase A C G T N)."""

    name: str
    seq: str


# ----------------------------------------------------------------------------- reading
def parse_fasta(text: str, source: str = "<text>") -> list[FastaRecord]:
    """The records of a FASTA text, checked as the module docstring says (``source`` names it in errors)."""
    records: list[FastaRecord] = []
    name: str | None = None
    parts: list[str] = []

    def close(lineno: int) -> None:
        if name is None:
            return
        seq = "".join(parts)
        if not seq:
            raise DataError(f"{source} line {lineno}: record {name!r} has no bases; remove it or add its sequence.")
        records.append(FastaRecord(name, seq))

    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith(">"):
            close(lineno)
            name, parts = line[1:].strip(), []
            continue
        if line.startswith(";"):  # old-style FASTA comment
            continue
        bases = "".join(line.split()).upper()  # lowercase (soft-masked) bases are the same bases
        if not bases:
            continue
        if name is None:
            raise DataError(f"{source} line {lineno}: sequence before the first '>' header; is this a FASTA file?")
        bad = _NOT_DNA.search(bases)
        if bad:
            raise DataError(f"{source} line {lineno} (record {name!r}): letter {bad[0]!r} is not A, C, G, T or N; "
                            "replace ambiguity codes and other symbols with N.")
        parts.append(bases)
    close(len(text.splitlines()) + 1)
    if not records:
        raise DataError(f"{source} holds no FASTA record (no '>' header line); give a FASTA file of DNA.")
    return records


def read_fasta(path: str | os.PathLike) -> list[FastaRecord]:
    """`parse_fasta` of a file (``.gz``: gzip); a missing, corrupt or non-text file is one `DataError` line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such FASTA file: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        text = raw.decode("ascii")
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc}); it is corrupt or truncated.") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: byte {exc.start} is not ASCII; a FASTA file of DNA is plain ASCII text.") from None
    return parse_fasta(text, str(path))


# ----------------------------------------------------------------------------- writing
def fasta_text(records: list[FastaRecord], width: int = FASTA_WIDTH) -> str:
    """``>name`` then the sequence in lines of ``width`` bases, for each record; `parse_fasta` reads it back."""
    if width < 1:
        raise ValueError(f"width must be a positive number of bases per line, got {width}.")
    lines = []
    for r in records:
        if "\n" in r.name or "\r" in r.name or not r.name.isascii():
            raise DataError(f"a FASTA record name must be one line of ASCII text, got {r.name!r}.")
        lines.append(">" + r.name)
        lines += [r.seq[i: i + width] for i in range(0, len(r.seq), width)]
    return "".join(line + "\n" for line in lines)


def write_fasta(records: list[FastaRecord], path: str | os.PathLike, width: int = FASTA_WIDTH) -> Path:
    """Write `fasta_text` atomically (all records or no file); gzip (level 9, mtime 0) when ``path`` ends in ``.gz``."""
    data = fasta_text(records, width).encode("ascii")
    path = Path(path)
    if path.name.endswith(".gz"):
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
            f.write(data)
        data = buffer.getvalue()
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def reverse_complement(seq: str) -> str:
    """The other strand read 5' to 3': A <-> T, C <-> G, N stays N, order reversed."""
    return seq.translate(_COMPLEMENT)[::-1]


# ----------------------------------------------------------------------------- token ids
def _base_ids(tokenizer) -> dict[str, int] | None:
    vocab = tokenizer.get_vocab()
    ids = {b: vocab[b] for b in BASES if b in vocab}
    return ids if len(ids) == 4 else None


def is_dna_tokenizer(tokenizer) -> bool:
    """True for a base-level DNA tokenizer: its only non-special tokens are A, C, G and T (`dna_tokenizer`)."""
    specials = set(tokenizer.all_special_tokens)
    plain = {tok for tok in tokenizer.get_vocab() if tok not in specials}
    return plain == set(BASES)


def bases_from_ids(ids, tokenizer) -> str:
    """The bases of token ids; an id that is not a base (separator, ``[UNK]``, ``[MASK]``) is written N."""
    base_of = {i: b for b, i in (_base_ids(tokenizer) or {}).items()}
    return "".join(base_of.get(int(i), "N") for i in ids)


def complement_ids(tokenizer) -> torch.Tensor:
    """A LongTensor ``table`` with ``table[id]`` the id of the complementary base (A <-> T, C <-> G) and every
    other id mapped to itself; ``table[ids].flip(-1)`` is the reverse complement of rows of ids."""
    ids = _base_ids(tokenizer)
    if ids is None or not is_dna_tokenizer(tokenizer):
        raise DataError("the reverse complement needs the DNA tokenizer (A, C, G, T ids; the dna_ecoli_k12 preset's "
                        "or dna_tokenizer()), not a text tokenizer.")
    table = torch.arange(len(tokenizer), dtype=torch.long)
    for base, other in (("A", "T"), ("C", "G"), ("G", "C"), ("T", "A")):
        table[ids[base]] = ids[other]
    return table


class ReverseComplementRows(torch.utils.data.Dataset):
    """Packed rows of DNA ids and, after them, the reverse complement of each: row ``i + n`` is row ``i`` read on
    the other strand (ids complemented, order reversed; ``attention_mask`` reversed with it).

    The doubling is fixed, not random, so a shuffled epoch sees both strands of every block once and a resumed
    run (``TextDataModule``'s state) sees exactly the rows it had not seen.
    """

    def __init__(self, rows, table: torch.Tensor):
        self.rows = rows  # a packed datasets.Dataset in torch format (or any indexable of row dicts)
        self.table = table

    def __len__(self) -> int:
        return 2 * len(self.rows)

    def _flip(self, row: dict) -> dict:
        out = dict(row)
        out["input_ids"] = self.table[row["input_ids"]].flip(-1)
        if "attention_mask" in row:
            out["attention_mask"] = row["attention_mask"].flip(-1)
        return out

    def __getitem__(self, index: int) -> dict:
        n = len(self.rows)
        if not 0 <= index < 2 * n:
            raise IndexError(f"row {index} out of range for {2 * n} rows.")
        row = self.rows[index % n]
        return self._flip(row) if index >= n else row

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return [self[i] for i in indices]
