"""Quality and speed measures used by benchmarks (SPEC 4): gen-PPL under a judge, unigram entropy,
real-text reference rows, and timing / FLOPs / MFU."""

from edlm.eval.entropy import EntropyOutput, entropy_report, mean_unigram_entropy, unigram_entropy
from edlm.eval.gen_ppl import GenPPLOutput, Judge, clear_judge_cache, generative_perplexity, load_judge
from edlm.eval.reference import ReferenceOutput, real_text_reference
from edlm.eval.speed import (
    SpeedReport,
    Timer,
    measure_matmul_peak,
    mfu,
    peak_memory,
    reset_peak_memory,
    transformer_flops,
)

__all__ = [
    "Judge", "GenPPLOutput", "load_judge", "generative_perplexity", "clear_judge_cache",
    "EntropyOutput", "unigram_entropy", "mean_unigram_entropy", "entropy_report",
    "ReferenceOutput", "real_text_reference",
    "Timer", "SpeedReport", "peak_memory", "reset_peak_memory", "transformer_flops", "measure_matmul_peak", "mfu",
]
