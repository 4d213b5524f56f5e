"""Networks: MDLM's DiT denoiser, a causal transformer, Hugging Face adapters (a causal LM as an energy, a masked
LM as a denoiser backbone), and checkpoint I/O."""

from edlm.accel.compiling import compile_networks
from edlm.models.ar import ARTransformer, next_token_log_probs
from edlm.models.checkpoints import (
    MODEL_TYPES,
    check_vocab,
    from_pretrained,
    load_denoiser,
    load_tokenizer_from,
    read_checkpoint_config,
    register_model_type,
    save_pretrained,
)
from edlm.models.dit import Denoiser, DiT
from edlm.models.hf import HFCausalLM
from edlm.models.hf_mlm import HFMaskedLM  # registers the checkpoint type "hf_mlm"

__all__ = [
    "DiT",
    "Denoiser",
    "ARTransformer",
    "HFCausalLM",
    "HFMaskedLM",
    "next_token_log_probs",
    "MODEL_TYPES",
    "register_model_type",
    "save_pretrained",
    "from_pretrained",
    "load_denoiser",
    "read_checkpoint_config",
    "load_tokenizer_from",
    "check_vocab",
    "compile_networks",
]
