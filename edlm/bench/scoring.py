"""Scoring one sweep cell (SPEC 4): gen-PPL under a judge with its bootstrap interval, unigram entropy, repeated
n-grams, MAUVE against held-out text, and the DNA measures for DNA sweeps.

    refs = MauveReferences(out, cells, judge_batch_size)      # the real-text cell's texts, featurised once per judge
    quality = score_cell(header, samples, judge, 32, references=refs(judge))

Every figure is of what the cell generated: for prefix completion (``prompt_tokens`` > 0) the judge reads each prompt
and scores only its continuation, and entropy, repetition and MAUVE are of the continuations (MAUVE against the true
continuations of the same prompts). Gen-PPL carries two spreads: the delta-method standard error over samples
(``gen_ppl_se``) and a 95 % percentile bootstrap over samples, token-weighted (``gen_ppl_low``, ``gen_ppl_high``).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from pathlib import Path

__all__ = ["MauveReferences", "score_cell"]

BOOTSTRAP_RESAMPLES = 1000


class MauveReferences:
    """MAUVE's held-out side: the texts of the sweep's real-text cell (continuations with prompts), featurised once
    per judge. Calling it with a judge gives its features, or None when there is no judge, no real-text cell with
    samples yet, or no ``mauve-text`` installed (warned once)."""

    def __init__(self, out: Path, cells, judge_batch_size: int):
        self._out, self._real = out, next((c for c in cells if c.kind == "real_text"), None)
        self._batch = judge_batch_size
        self._features: dict[int, object] = {}
        self._warned = False

    def __call__(self, judge):
        from edlm.bench.records import samples_finished, samples_path

        if judge is None or self._real is None or not samples_finished(self._out, self._real):
            return None
        from importlib.util import find_spec

        if find_spec("mauve") is None:
            if not self._warned:
                warnings.warn("MAUVE not computed: pip install mauve-text (the [judge] extra).", stacklevel=2)
                self._warned = True
            return None
        if id(judge) not in self._features:
            from edlm.bench.records import read_samples
            from edlm.eval.mauve_score import judge_features

            _, samples = read_samples(samples_path(self._out, self._real))
            texts = [t for t in (_scored_text(s) for s in samples) if t]
            self._features[id(judge)] = judge_features(texts, judge, batch_size=self._batch)
        return self._features[id(judge)]


def _scored_text(sample: dict) -> str:
    return sample["continuation"] if "continuation" in sample else sample["text"]


def score_cell(header: dict, samples: list[dict], judge, judge_batch_size: int, dna_reference=None,
               references=None) -> dict:
    """The quality columns of one cell's results row (module doc); ``references``: MAUVE's reference features
    (``MauveReferences``), None = no MAUVE; ``dna_reference`` (``edlm.eval.dna.DnaReference``): the ``dna_*``
    columns."""
    from edlm.eval.bootstrap import bootstrap_gen_ppl, bootstrap_mean
    from edlm.eval.entropy import entropy_report
    from edlm.eval.repetition import repetition_report

    start = time.perf_counter()
    settings = header["settings"]
    P = settings.get("prompt_tokens") or 0
    tokens = [s["tokens"][P:] for s in samples]
    ent = entropy_report(tokens)
    quality = {"gen_ppl": None, "gen_ppl_se": None, "gen_ppl_low": None, "gen_ppl_high": None, "mean_nll_nats": None,
               "judge_tokens": None, "judge_skipped": None, "mauve": None}
    if judge is not None:
        from edlm.eval.gen_ppl import generative_perplexity

        contexts = [s["prompt"] for s in samples] if P else None
        g = generative_perplexity([_scored_text(s) for s in samples], judge, batch_size=judge_batch_size,
                                  contexts=contexts)
        per = [x for x in g.per_sample_nll if not math.isnan(x)]
        # spread over samples: standard error of the per-sample mean NLL, carried to gen-PPL by the delta method
        se = statistics.stdev(per) / math.sqrt(len(per)) if len(per) > 1 else None
        boot = bootstrap_gen_ppl(g.per_sample_nll, g.per_sample_tokens, BOOTSTRAP_RESAMPLES)
        quality.update(gen_ppl=g.gen_ppl, gen_ppl_se=None if se is None else g.gen_ppl * se, gen_ppl_low=boot.low,
                       gen_ppl_high=boot.high, mean_nll_nats=g.mean_nll, judge_tokens=g.num_tokens,
                       judge_skipped=g.num_skipped)
        texts = [t for t in (_scored_text(s) for s in samples) if t]
        if references is not None and settings.get("kind") != "real_text" and texts:
            from edlm.eval.mauve_score import judge_features, mauve_from_features

            quality["mauve"] = mauve_from_features(judge_features(texts, judge, batch_size=judge_batch_size),
                                                   references)
    n = ent.num_samples
    ent_se = statistics.stdev(ent.per_sample_bits) / math.sqrt(n) if n > 1 else None  # over samples
    ent_boot = bootstrap_mean(ent.per_sample_bits, BOOTSTRAP_RESAMPLES)
    rep = repetition_report(tokens)
    quality.update({f"repeated_{k}gram": v for k, v in rep.mean_fraction.items()})
    quality["degenerate_fraction"] = rep.degenerate_fraction
    if dna_reference is not None:
        from edlm.eval.dna import sample_metrics

        quality.update(sample_metrics([s["text"] for s in samples], dna_reference).flat())
    quality.update(entropy_bits=ent.mean_bits, entropy_bits_se=ent_se, entropy_bits_low=ent_boot.low,
                   entropy_bits_high=ent_boot.high, entropy_nats=ent.mean_nats,
                   score_seconds=time.perf_counter() - start)
    return quality
