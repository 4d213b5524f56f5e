"""DNA measures with known answers (edlm.eval.dna) and `edlm eval dna` (edlm.eval.dna_report)."""

import json
import math

import numpy as np
import pytest

from edlm.cli import main
from edlm.data.dna import FastaRecord, reverse_complement, write_fasta
from edlm.errors import DataError
from edlm.eval.dna import (
    DnaReference,
    bits_per_base,
    gc_content,
    js_distance,
    kmer_counts,
    longest_orf,
    orf_coverage,
    orf_spans,
    sample_metrics,
    shuffled,
)
from edlm.eval.dna_report import dna_report

# an ORF of 120 codons: ATG, 118 sense codons (GCT: no ATG, no stop in any frame of the repeat), then TAA
GENE = "ATG" + "GCT" * 118 + "TAA"


def test_one_base_sequences():
    assert gc_content("G" * 50) == 1.0 and gc_content("A" * 50) == 0.0 and gc_content("ACGT") == 0.5
    assert gc_content("GCNN") == 1.0 and math.isnan(gc_content("NNN"))
    counts = kmer_counts("A" * 20, 3)
    assert counts[0] == 18 and counts.sum() == 18  # AAA is index 0
    assert js_distance(kmer_counts("A" * 20, 2), kmer_counts("A" * 20, 2)) == 0.0
    assert js_distance(kmer_counts("A" * 20, 1), kmer_counts("C" * 20, 1)) == pytest.approx(1.0)  # disjoint
    assert longest_orf("A" * 99) == 0 and orf_coverage("A" * 99) == 0.0


def test_kmers_skip_n_and_index_as_base_4():
    counts = kmer_counts("ACNGT", 2)
    assert counts.sum() == 2 and counts[0 * 4 + 1] == 1 and counts[2 * 4 + 3] == 1  # AC and GT, not CN or NG


def test_js_distance_is_a_symmetric_distance():
    rng = np.random.default_rng(0)
    p, q = rng.integers(1, 50, 64), rng.integers(1, 50, 64)
    assert js_distance(p, q) == pytest.approx(js_distance(q, p))
    assert 0 < js_distance(p, q) < 1 and js_distance(p, 3 * p) == pytest.approx(0.0, abs=1e-9)


def test_a_known_orf_on_the_forward_strand():
    seq = "CC" + GENE + "GG"
    spans = [s for s in orf_spans(seq) if s[3] >= 100]
    assert spans == [("+", 2, 2 + len(GENE), 119)]  # 119 codons before the stop (ATG included), stop in the span
    assert longest_orf(seq) == 119
    assert orf_coverage(seq) == pytest.approx(len(GENE) / len(seq))


def test_the_same_orf_on_the_reverse_strand():
    seq = reverse_complement("CC" + GENE + "GG")
    spans = [s for s in orf_spans(seq) if s[3] >= 100]
    assert spans == [("-", 2, 2 + len(GENE), 119)]  # the same bases, in forward coordinates
    assert orf_coverage(seq) == pytest.approx(len(GENE) / len(seq))


def test_an_orf_without_a_stop_runs_to_the_window_end_and_n_is_neither_start_nor_stop():
    assert ("+", 1, 13, 4) in orf_spans("CATGGCTGCTNAA")  # ATG GCT GCT NAA: no stop, cut at the end
    assert longest_orf("NTGGCTTAA") == 0  # NTG is no start


def test_real_genome_has_long_orfs_shuffled_does_not(dna_valid):
    ref = DnaReference.from_sequence(dna_valid)
    real = ref.real_windows(12, 1024, seed=1)
    assert len(set(real)) == 12 and all(len(w) == 1024 for w in real)
    real_m = sample_metrics(real, ref, bootstrap=200)
    shuf_m = sample_metrics(shuffled(real, seed=1), ref, bootstrap=200)
    assert real_m.gc.value == pytest.approx(shuf_m.gc.value)  # a shuffle keeps the composition
    assert real_m.kmer_js[1].value == pytest.approx(shuf_m.kmer_js[1].value)
    assert real_m.orf_coverage.value > 0.4 > 0.2 > shuf_m.orf_coverage.value
    assert real_m.longest_orf.low > shuf_m.longest_orf.high
    for m in (real_m.gc, real_m.longest_orf, real_m.kmer_js[6]):
        assert m.low <= m.value <= m.high


def test_real_windows_are_closer_in_k_mers_than_shuffled_ones(full_data_dir, monkeypatch):
    """Needs the full valid split: on the 25 kbp slice the k-mer reference (12.5 kbp) is too local."""
    from edlm.eval.dna_report import reference_sequence

    monkeypatch.setenv("EDLM_DATA_DIR", str(full_data_dir("dna_ecoli_k12")))
    ref = DnaReference.from_sequence(reference_sequence("dna_ecoli_k12", "valid"))
    real = ref.real_windows(64, 1024)
    real_m, shuf_m = sample_metrics(real, ref, bootstrap=100), sample_metrics(shuffled(real), ref, bootstrap=100)
    for k in (2, 3, 4, 5, 6):
        assert real_m.kmer_js[k].high < shuf_m.kmer_js[k].low, k


def test_bits_per_base():
    assert bits_per_base(math.log(4)) == pytest.approx(2.0)


def test_measures_refuse_letters_outside_acgtn():
    with pytest.raises(DataError, match="'X'"):
        gc_content("ACGX")


@pytest.fixture(scope="module")
def dna_valid():
    from edlm.eval.dna_report import reference_sequence

    return reference_sequence("dna_ecoli_k12", "valid")


def test_eval_dna_command(tmp_path, capsys, dna_valid):
    rng = np.random.default_rng(0)
    fasta = write_fasta([FastaRecord(f"s{i}", "".join(rng.choice(list("ACGT"), 300))) for i in range(6)],
                        tmp_path / "random.fa.gz")
    jsonl = tmp_path / "genes.jsonl"
    jsonl.write_text("".join(json.dumps({"text": ("cc" + GENE + "gg").upper()}) + "\n" for _ in range(3)))
    out = tmp_path / "dna.json"
    assert main(["eval", "dna", str(fasta), str(jsonl), "--bootstrap", "50", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "real" in text and "shuffled" in text and "random.fa.gz" in text
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["real", "shuffled", "random.fa.gz", "genes.jsonl"]
    window = round((6 * 300 + 3 * len("cc" + GENE + "gg")) / 9)  # the samples' mean length
    assert rows["real"]["num_sequences"] == 6 and json.loads(out.read_text())["window_length"] == window
    assert rows["real"]["mean_length"] == window
    assert rows["genes.jsonl"]["longest_orf"]["value"] == 119.0


def test_eval_dna_bad_input_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.fa"
    bad.write_text(">x\nACGTU\n")
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    for path, message in ((bad, "letter 'U' is not A, C, G, T or N"), (empty, "holds no FASTA record")):
        assert main(["eval", "dna", str(path)]) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    with pytest.raises(ValueError, match="windows must be given"):
        dna_report([])
