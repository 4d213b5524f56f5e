"""Repeated n-grams and degenerate samples (edlm.eval.repetition)."""

import pytest

from edlm.eval.repetition import DEGENERATE_THRESHOLD, repeated_ngram_fraction, repetition_report


def test_fraction_counts_copies_of_earlier_ngrams():
    assert repeated_ngram_fraction([1, 2, 3, 4, 5], 2) == 0.0
    assert repeated_ngram_fraction([7, 7, 7, 7, 7], 1) == pytest.approx(4 / 5)
    # bigrams of 1 2 1 2 1: (1,2) (2,1) (1,2) (2,1): two of four repeat
    assert repeated_ngram_fraction([1, 2, 1, 2, 1], 2) == pytest.approx(0.5)
    assert repeated_ngram_fraction("a b c a b c", 3) == pytest.approx(1 / 4)  # abc bca cab abc
    assert repeated_ngram_fraction([1, 2], 4) == 0.0  # too short to hold a 4-gram
    with pytest.raises(ValueError, match="n"):
        repeated_ngram_fraction([1, 2, 3], 0)


def test_report_flags_looping_samples_only():
    prose = "the river runs past the old mill and under a stone bridge into the town".split()
    loop = ("the cat sat " * 10).split()
    report = repetition_report([prose, loop, list(range(40)), prose[:3]], ns=(2, 3, 4))
    assert report.num_samples == 4 and set(report.mean_fraction) == {2, 3, 4}
    assert report.per_sample[4][0] == 0.0 and report.per_sample[4][1] > 0.8
    assert report.degenerate_fraction == pytest.approx(1 / 4) and report.threshold == DEGENERATE_THRESHOLD
    assert report.mean_fraction[2] >= report.mean_fraction[4]  # a repeated 4-gram repeats its 2-grams
    assert "degenerate 25.0 %" in str(report)
    # the threshold is strict: exactly at it is not degenerate
    assert repetition_report([loop], threshold=report.per_sample[4][1]).degenerate_fraction == 0.0
    with pytest.raises(ValueError, match="samples"):
        repetition_report([])
