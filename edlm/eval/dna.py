"""DNA measures: bits per base, and what biologists look at in sampled sequence.

    ref = DnaReference.from_sequence(valid_seq)              # k-mer spectrum of half the held-out sequence
    real = ref.real_windows(64, 1024, seed=0)                # windows of the other half (the ceiling)
    floor = shuffled(real, seed=0)                           # each window's bases shuffled (the floor)
    print(sample_metrics(samples, ref).row("MDLM T=64"))    # GC, k-mer JS k = 1..6, ORFs, 95 % intervals

- **Bits per base** (`bits_per_base`): an NLL in nats per token divided by ln 2. With the DNA tokenizer one
  token is one base; a one-record genome packed with "wrap" adds one separator at each end of the record
  (2 tokens in the 231,984 of the valid split), so the figure is per base to within 0.001 %.
- **GC content**: (G + C) / (A + C + G + T) of each sequence; N is not counted.
- **k-mer spectrum distance**: the Jensen–Shannon distance (the square root of the JS divergence in bits; 0 for
  identical spectra, 1 for disjoint ones) between the pooled k-mer counts of a set of sequences and those of the
  held-out reference, k = 1 … 6. Both strands are not merged: a k-mer and its reverse complement count apart.
  k-mers holding an N are skipped.
- **Open reading frames** (`orf_spans`) on both strands, in all 6 frames: an ORF starts at the first ATG after
  the previous in-frame stop (TAA, TAG, TGA) and runs to the next stop, stop codon included; one that reaches
  the window's end without a stop is kept, cut there (a window of a genome cuts genes). Its length counts the
  codons before the stop. A codon holding N is neither a start nor a stop. Per window: the longest ORF (codons)
  and the fraction of bases inside an ORF of at least `MIN_ORF_CODONS` codons on either strand. E. coli is
  ~88 % coding, so real windows have long ORFs; in shuffled sequence a stop comes every ~21 codons.

Each measure comes with a 95 % bootstrap interval over the sequences of the set (`BOOTSTRAP`, seeded): percentile
intervals for the means; for the JS distances the percentile interval shifted by the bootstrap's estimate of the
bias (a resample repeats sequences, which raises a plug-in divergence).
The real and shuffled windows are scored the same way, as ceiling and floor: `real_windows` draws them from
the half of the held-out sequence that the k-mer reference does not use, so they are held out from it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from edlm.errors import DataError

__all__ = [
    "KS",
    "MIN_ORF_CODONS",
    "BOOTSTRAP",
    "bits_per_base",
    "encode_bases",
    "gc_content",
    "kmer_counts",
    "js_distance",
    "orf_spans",
    "longest_orf",
    "orf_coverage",
    "shuffled",
    "DnaReference",
    "Interval",
    "DnaMetrics",
    "sample_metrics",
]

KS = (1, 2, 3, 4, 5, 6)  # k-mer orders of the spectrum distance
MIN_ORF_CODONS = 100  # the usual floor for calling a gene-like ORF (300 bases)
BOOTSTRAP = 1000  # bootstrap resamples of the sequences for each interval
_CODE = np.full(256, -1, dtype=np.int8)  # byte -> 0..3 for A C G T, -1 for N (and anything else)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i
_STOPS = np.array([48, 50, 56])  # TAA, TAG, TGA as 16·a + 4·b + c with A=0 C=1 G=2 T=3
_START = 14  # ATG


def bits_per_base(nats_per_token: float) -> float:
    """An NLL in nats per token as bits per base (one token = one base with the DNA tokenizer)."""
    return nats_per_token / math.log(2)


def encode_bases(seq: str) -> np.ndarray:
    """int8 codes (L,): A C G T -> 0 1 2 3, N -> -1; the sequence must be uppercase A C G T N."""
    codes = _CODE[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
    bad = set(seq) - set("ACGTN")
    if bad:
        raise DataError(f"a sequence holds {min(bad)!r}; DNA measures take uppercase A, C, G, T and N only.")
    return codes


def gc_content(seq: str) -> float:
    """(G + C) / (A + C + G + T); NaN for a sequence without a base."""
    codes = encode_bases(seq)
    n = int((codes >= 0).sum())
    return float(((codes == 1) | (codes == 2)).sum() / n) if n else math.nan


def kmer_counts(seq: str, k: int) -> np.ndarray:
    """Counts (4**k,) of the k-mers of ``seq`` (index = the k-mer read as a base-4 number, A = 0), N-free ones only."""
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}.")
    codes = encode_bases(seq).astype(np.int64)
    n = len(codes) - k + 1
    if n <= 0:
        return np.zeros(4**k, dtype=np.int64)
    index = np.zeros(n, dtype=np.int64)
    valid = np.ones(n, dtype=bool)
    for j in range(k):  # k-mer at i = Σ_j codes[i + j] · 4^(k−1−j)
        part = codes[j: j + n]
        index = index * 4 + np.maximum(part, 0)
        valid &= part >= 0
    return np.bincount(index[valid], minlength=4**k)


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance between two count (or probability) vectors: sqrt of the JS divergence in bits."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


# ----------------------------------------------------------------------------- open reading frames
def _codons(codes: np.ndarray) -> np.ndarray:
    """The codon at every offset (L − 2,): 16·a + 4·b + c, or −1 where it holds an N."""
    a, b, c = codes[:-2].astype(np.int64), codes[1:-1].astype(np.int64), codes[2:].astype(np.int64)
    return np.where((a >= 0) & (b >= 0) & (c >= 0), 16 * a + 4 * b + c, -1)


def _frame_orfs(codons: np.ndarray, frame: int) -> list[tuple[int, int, int]]:
    """(start, end, codons) of the ORFs of one frame: base offsets [start, end) of the strand."""
    c = codons[frame::3]  # the frame's codons, at offsets frame, frame + 3, ...
    stops = np.flatnonzero(np.isin(c, _STOPS))
    starts = np.flatnonzero(c == _START)
    out = []
    previous = -1  # the frame index of the previous stop
    for stop in [*stops.tolist(), len(c)]:  # len(c): the window's end, for an ORF that finds no stop
        i = int(np.searchsorted(starts, previous + 1))
        if i < len(starts) and starts[i] < stop:  # the first ATG after the previous stop
            first = int(starts[i])
            end = frame + 3 * stop + (3 if stop < len(c) else 0)  # the stop codon included
            out.append((frame + 3 * first, end, stop - first))
        previous = stop
    return out


def orf_spans(seq: str) -> list[tuple[str, int, int, int]]:
    """Every ORF on both strands: ``(strand, start, end, codons)`` with [start, end) in forward coordinates
    (the stop codon included when there is one) and ``codons`` the codons before the stop (ATG included)."""
    codes = encode_bases(seq)
    n = len(codes)
    if n < 3:
        return []
    rc = np.where(codes >= 0, 3 - codes, -1)[::-1]  # the other strand, 5' to 3' (A=0 <-> T=3, C=1 <-> G=2)
    forward, reverse = _codons(codes), _codons(rc)
    spans = []
    for frame in range(3):
        spans += [("+", s, e, c) for s, e, c in _frame_orfs(forward, frame)]
        spans += [("-", n - e, n - s, c) for s, e, c in _frame_orfs(reverse, frame)]
    return sorted(spans, key=lambda x: (x[1], x[2], x[0]))


def longest_orf(seq: str) -> int:
    """Codons of the longest ORF on either strand (0 if there is none)."""
    return max((c for *_, c in orf_spans(seq)), default=0)


def orf_coverage(seq: str, min_codons: int = MIN_ORF_CODONS) -> float:
    """Fraction of the sequence's positions inside an ORF of at least ``min_codons`` codons, either strand."""
    if not seq:
        return math.nan
    covered = np.zeros(len(seq), dtype=bool)
    for _, start, end, codons in orf_spans(seq):
        if codons >= min_codons:
            covered[start:end] = True
    return float(covered.mean())


# ----------------------------------------------------------------------------- references
def shuffled(seqs: Sequence[str], seed: int = 0) -> list[str]:
    """Each sequence with its bases permuted (seeded): the same composition, no order (the floor)."""
    rng = np.random.default_rng(seed)
    return ["".join(rng.permutation(list(s))) if s else s for s in seqs]


@dataclass
class DnaReference:
    """Held-out sequence split in two halves: the second gives the k-mer spectra every set is compared with,
    the first is where `real_windows` come from."""

    spectra: dict[int, np.ndarray]  # k -> counts (4**k,)
    window_source: str  # the first half

    @classmethod
    def from_sequence(cls, seq: str, ks: Sequence[int] = KS) -> DnaReference:
        seq = seq.upper()
        if len(seq) < 2 * max(ks):
            raise DataError(f"the held-out sequence has {len(seq)} bases, too few for a k-mer reference.")
        half = len(seq) // 2
        return cls({k: kmer_counts(seq[half:], k) for k in ks}, seq[:half])

    def real_windows(self, n: int, length: int, seed: int = 0) -> list[str]:
        """``n`` windows of ``length`` bases from the first half, drawn at random (seeded): disjoint windows (n of the
        half's ``len // length`` slots) when that many fit, else at random starts, overlapping."""
        if not 0 < length <= len(self.window_source):
            raise DataError(f"windows of {length} bases do not fit the {len(self.window_source)} bases of the "
                            "held-out half; use a shorter length or a longer split.")
        rng = np.random.default_rng(seed)
        slots = len(self.window_source) // length
        if n <= slots:
            starts = np.sort(rng.choice(slots, size=n, replace=False)) * length
        else:
            starts = rng.integers(0, len(self.window_source) - length + 1, size=n)
        return [self.window_source[s: s + length] for s in starts]


# ----------------------------------------------------------------------------- set measures
@dataclass
class Interval:
    """A value on the whole set and the 2.5 / 97.5 % quantiles of its bootstrap over the sequences."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


@dataclass
class DnaMetrics:
    """The measures of one set of sequences (module docstring), each with its bootstrap interval."""

    num_sequences: int
    mean_length: float
    gc: Interval
    kmer_js: dict[int, Interval]  # k -> JS distance to the reference spectrum
    longest_orf: Interval  # mean over sequences, codons
    orf_coverage: Interval  # mean over sequences, fraction of bases in ORFs >= min_orf_codons
    min_orf_codons: int = MIN_ORF_CODONS
    per_sequence: dict[str, list[float]] = field(default_factory=dict)  # gc, longest_orf, orf_coverage

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kmer_js"] = {str(k): asdict(v) for k, v in self.kmer_js.items()}
        return d

    def flat(self, prefix: str = "dna_") -> dict[str, float]:
        """One level of keys, for a results row: ``dna_gc``, ``dna_gc_low``, ``dna_gc_high``, ``dna_js_k1`` …"""
        items = {"gc": self.gc, **{f"js_k{k}": v for k, v in self.kmer_js.items()},
                 "longest_orf": self.longest_orf, "orf_coverage": self.orf_coverage}
        out = {}
        for key, v in items.items():
            out.update({prefix + key: v.value, f"{prefix}{key}_low": v.low, f"{prefix}{key}_high": v.high})
        return out

    def row(self, name: str) -> str:
        js = " ".join(f"{self.kmer_js[k].value:.4f}" for k in sorted(self.kmer_js))
        return (f"{name}: n={self.num_sequences} GC {self.gc} | JS k=1..{max(self.kmer_js)}: {js} | longest ORF "
                f"{self.longest_orf} codons | bases in ORFs >= {self.min_orf_codons} codons {self.orf_coverage}")


def _mean_interval(values: np.ndarray, picks: np.ndarray) -> Interval:
    ok = ~np.isnan(values)
    if not ok.any():
        return Interval(math.nan, math.nan, math.nan)
    boot = np.nanmean(values[picks], axis=1)
    return Interval(float(np.nanmean(values)), float(np.nanquantile(boot, 0.025)), float(np.nanquantile(boot, 0.975)))


def sample_metrics(seqs: Sequence[str], reference: DnaReference, *, bootstrap: int = BOOTSTRAP, seed: int = 0,
                   min_orf_codons: int = MIN_ORF_CODONS) -> DnaMetrics:
    """GC, k-mer JS distances to ``reference`` and ORF statistics of ``seqs``, with bootstrap intervals."""
    seqs = [s.upper() for s in seqs]
    if not seqs:
        raise DataError("no sequences to measure.")
    if not isinstance(bootstrap, int) or bootstrap < 1:
        raise ValueError(f"bootstrap must be a positive integer, got {bootstrap!r}.")
    n = len(seqs)
    picks = np.random.default_rng(seed).integers(0, n, size=(bootstrap, n))  # (B, n) resampled sequence indices
    weights = np.stack([np.bincount(row, minlength=n) for row in picks])  # (B, n) times each sequence is drawn
    gc = np.array([gc_content(s) for s in seqs])
    longest = np.array([float(longest_orf(s)) for s in seqs])
    coverage = np.array([orf_coverage(s, min_orf_codons) for s in seqs])
    js = {}
    for k, ref in reference.spectra.items():
        counts = np.stack([kmer_counts(s, k) for s in seqs])  # (n, 4**k)
        boot = weights @ counts  # (B, 4**k): the pooled counts of each resample
        values = np.array([js_distance(b, ref) for b in boot])
        value = js_distance(counts.sum(0), ref)
        # a resample repeats sequences, which biases a plug-in divergence up: shift the percentiles by that bias
        bias = float(np.nanmean(values)) - value
        js[k] = Interval(value, max(0.0, float(np.nanquantile(values, 0.025)) - bias),
                         float(np.nanquantile(values, 0.975)) - bias)
    return DnaMetrics(num_sequences=n, mean_length=float(np.mean([len(s) for s in seqs])),
                      gc=_mean_interval(gc, picks), kmer_js=js, longest_orf=_mean_interval(longest, picks),
                      orf_coverage=_mean_interval(coverage, picks), min_orf_codons=min_orf_codons,
                      per_sequence={"gc": gc.tolist(), "longest_orf": longest.tolist(),
                                    "orf_coverage": coverage.tolist()})
