"""Training: the LightningModules and ``train`` (the only place besides ``edlm.data`` that imports Lightning)."""

from edlm.training.ar_module import ARModule
from edlm.training.base import LanguageModelModule, lr_factor
from edlm.training.ema import EMA
from edlm.training.mdlm_module import MDLMModule
from edlm.training.trainer import MODULE_BUILDERS, TrainResult, build_tokenizer, train
from edlm.training.unigram import unigram_perplexity

__all__ = [
    "ARModule",
    "EMA",
    "LanguageModelModule",
    "MDLMModule",
    "MODULE_BUILDERS",
    "TrainResult",
    "build_tokenizer",
    "lr_factor",
    "train",
    "unigram_perplexity",
]
