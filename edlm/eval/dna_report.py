"""``edlm eval dna``: the DNA measures of sample files next to real and shuffled held-out windows.

    report = dna_report(["mdlm_T64.fa", "edlm_ar_T64.jsonl"], data="dna_ecoli_k12", split="valid")
    print(report.summary())
    report.write_json("dna.json")

Sample files are FASTA (``edlm sample`` writes one beside its JSONL for a DNA model; read strictly, see
``edlm.data.dna``) or JSONL records with a ``text`` field (``edlm sample --out``, a sweep's samples file). The
reference rows use windows of the samples' mean length (rounded), as many as the largest sample set, drawn from
the held-out split: "real" (the ceiling) and "shuffled" (the same windows with their bases permuted: the floor).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from edlm.atomic import atomic_write_text
from edlm.data.dna import read_fasta
from edlm.errors import DataError
from edlm.eval.dna import BOOTSTRAP, KS, MIN_ORF_CODONS, DnaMetrics, DnaReference, sample_metrics, shuffled

__all__ = ["DnaReport", "dna_report", "read_sequences", "reference_sequence", "FASTA_SUFFIXES"]

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fa.gz", ".fasta.gz", ".fna.gz")


def read_sequences(path: str | os.PathLike) -> list[str]:
    """The sequences of a FASTA file or of a samples JSONL (its records' ``text``, uppercased, checked)."""
    path = Path(path)
    if path.name.lower().endswith(FASTA_SUFFIXES):
        return [r.seq for r in read_fasta(path)]
    from edlm.data.dna import parse_fasta

    texts = _jsonl_texts(path)
    # the same letter rules as a FASTA file: one record per text
    return [r.seq for r in parse_fasta("".join(f">{i}\n{t}\n" for i, t in enumerate(texts)), str(path))]


def _jsonl_texts(path: Path) -> list[str]:
    """The ``text`` of each sample record of a JSONL file (a sweep's ``"record": "cell"`` header skipped)."""
    if not path.is_file():
        raise DataError(f"no such samples file: {path}")
    texts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {lineno} is not JSON ({exc.msg}); give a samples JSONL or a FASTA "
                                f"file ({', '.join(FASTA_SUFFIXES)}).") from None
            if isinstance(record, dict) and record.get("record") == "cell":
                continue
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f"{path} line {lineno} has no `text` field (as `edlm sample --out` writes).")
            texts.append(record["text"])
    if not texts:
        raise DataError(f"{path} holds no sample records.")
    return texts


def reference_sequence(data: str, split: str = "valid") -> str:
    """The held-out sequence of a corpus split (a preset such as dna_ecoli_k12, a FASTA file or folder): its
    records joined, checked as DNA."""
    from edlm.data.dna import parse_fasta
    from edlm.data.sources import load_corpus
    from edlm.eval.nll_report import quiet_datasets

    with quiet_datasets():
        docs = load_corpus(data, split)["text"]
    return "".join(r.seq for r in parse_fasta("".join(f">{i}\n{d}\n" for i, d in enumerate(docs)), f"{data}:{split}"))


@dataclass
class DnaReport:
    """Rows of DNA measures: "real" and "shuffled" held-out windows first, then one per sample file."""

    data: str
    split: str
    window_length: int
    bootstrap: int
    seed: int
    rows: dict[str, DnaMetrics] = field(default_factory=dict)

    def summary(self) -> str:
        head = (f"edlm eval dna: {self.data}:{self.split} (k-mer reference: its second half; real windows of "
                f"{self.window_length} bases from its first half), 95 % bootstrap intervals over sequences "
                f"({self.bootstrap} resamples, seed {self.seed})")
        w = max(8, *(len(name) for name in self.rows))
        cols = f"{'set':<{w}} {'n':>4} {'GC':>6} " + " ".join(f"{'JS' + str(k):>6}" for k in KS)
        cols += f" {'longest ORF (codons)':>22} {f'bases in ORFs >= {MIN_ORF_CODONS} codons':>30}"
        lines = [head, cols, "-" * len(cols)]
        for name, m in self.rows.items():
            js = " ".join(f"{m.kmer_js[k].value:>6.4f}" for k in KS)
            orf = f"{m.longest_orf.value:.1f} [{m.longest_orf.low:.1f}, {m.longest_orf.high:.1f}]"
            cov = f"{m.orf_coverage.value:.3f} [{m.orf_coverage.low:.3f}, {m.orf_coverage.high:.3f}]"
            lines.append(f"{name:<{w}} {m.num_sequences:>4} {m.gc.value:>6.4f} {js} {orf:>22} {cov:>30}")
        lines.append("JS: Jensen-Shannon distance of the pooled k-mer spectrum to the reference's (0 = same); "
                     "real = the ceiling, shuffled = the floor.")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"data": self.data, "split": self.split, "window_length": self.window_length,
                "bootstrap": self.bootstrap, "seed": self.seed,
                "rows": {name: m.to_dict() for name, m in self.rows.items()}}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write ``to_json()`` atomically (the parent directory is created if needed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")
        return path


def dna_report(samples: list[str | os.PathLike], data: str = "dna_ecoli_k12", split: str = "valid", *,
               names: list[str] | None = None, bootstrap: int = BOOTSTRAP, seed: int = 0,
               windows: int | None = None, length: int | None = None) -> DnaReport:
    """Measure each sample file and the real / shuffled held-out windows (module docstring).

    Args:
        samples: FASTA or JSONL sample files (may be empty: the reference rows only, with ``windows``).
        data, split: the held-out sequence (a corpus preset or path, as ``edlm train --data``).
        names: a row name per sample file (default: the file names).
        bootstrap, seed: resamples of each interval, and the seed of the windows, the shuffle and the resamples.
        windows: real / shuffled windows to draw (default: as many as the largest sample set).
        length: bases per window (default: the samples' mean length, rounded; 1,024 without samples).
    """
    if names is not None and len(names) != len(samples):
        raise ValueError(f"names gives {len(names)} names for {len(samples)} sample files.")
    sets = {(names[i] if names else Path(p).name): read_sequences(p) for i, p in enumerate(samples)}
    if len(sets) != len(samples):
        raise ValueError("two sample files have the same name; pass names to tell them apart.")
    lengths = [len(s) for seqs in sets.values() for s in seqs]
    if windows is None and not sets:
        raise ValueError("windows must be given when there are no sample files.")
    n = windows if windows is not None else max(len(seqs) for seqs in sets.values())
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"windows must be a positive integer, got {n!r}.")
    if length is None:
        length = round(sum(lengths) / len(lengths)) if lengths else 1024
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}.")
    reference = DnaReference.from_sequence(reference_sequence(data, split))
    real = reference.real_windows(n, length, seed=seed)
    if any(name in ("real", "shuffled") for name in sets):
        raise DataError("'real' and 'shuffled' name the reference rows; rename the sample file.")
    report = DnaReport(data=str(data), split=split, window_length=length, bootstrap=bootstrap, seed=seed)
    for name, seqs in {"real": real, "shuffled": shuffled(real, seed=seed), **sets}.items():
        report.rows[name] = sample_metrics(seqs, reference, bootstrap=bootstrap, seed=seed)
    return report
