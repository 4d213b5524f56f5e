"""``HFCausalLM``: any Hugging Face causal LM behind the ``ARTransformer`` interface.

Lets a pretrained ``transformers.AutoModelForCausalLM`` serve as the frozen p_AR of EDLM-AR (SPEC 2.3),
when it shares the diffusion model's tokenizer (``[MASK]`` aside): ``forward(x)`` gives next-token
logits, ``token_log_probs(x)`` and ``log_prob(x)`` score sequences with the first token given. An LM with
another tokenizer scores decoded text instead (``edlm.energy.TextLMEnergy``).
``transformers`` is imported only by ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from edlm.errors import CheckpointError
from edlm.models.ar import next_token_log_probs
from edlm.models.dit import check_tokens

__all__ = ["HFCausalLM", "refuse_pickled_weights"]

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # torch.save / pickle files


def refuse_pickled_weights(source: str, what: str = "model") -> None:
    """Refuse a local Hugging Face folder whose weights are only pickles (``pytorch_model.bin``): unpickling can run
    code. Its loaders also pass ``use_safetensors=True``, so a hub repository with only pickles is refused too."""
    folder = Path(source).expanduser()
    if not folder.is_dir() or any(folder.glob("*.safetensors")) or any(folder.glob("*.gguf")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(
            f"the {what} in {source} has only pickled weights ({pickles[0]}); edlm loads safetensors or GGUF only — "
            "convert it with transformers if you trust the file: AutoModelForCausalLM.from_pretrained(DIR)"
            ".save_pretrained(DIR) writes model.safetensors.")


class HFCausalLM(nn.Module):
    """Adapter: ``forward(x) -> logits (B, L, vocab_size)``, ``token_log_probs``, ``log_prob``, ``vocab_size``.

    Args:
        model: a ``transformers`` causal LM (anything whose call ``model(input_ids=x)`` returns an object
            with ``.logits`` of shape (B, L, V)).
        tokenizer: its tokenizer, kept for tokenizer checks (``check_same_tokenizer``); optional.
    """

    def __init__(self, model: nn.Module, tokenizer=None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.time_conditioned = False

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, load_tokenizer: bool = True, **kwargs) -> HFCausalLM:
        """``AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)`` (and its tokenizer), in eval mode.

        ``gguf_file=...`` in ``kwargs`` is passed to the tokenizer too.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy; only when used

        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs).eval()
        tokenizer = None
        if load_tokenizer:
            tok_kwargs = {k: kwargs[k] for k in ("gguf_file", "revision", "cache_dir", "token") if k in kwargs}
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, **tok_kwargs)
        return cls(model, tokenizer)

    @property
    def vocab_size(self) -> int:
        """Width of the logits (the output embedding's rows, else ``config.vocab_size``)."""
        out = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if out is not None and getattr(out, "weight", None) is not None:
            return int(out.weight.shape[0])
        return int(self.model.config.vocab_size)

    @property
    def length(self) -> int | None:
        """Longest context of the model, if its config states one."""
        cfg = getattr(self.model, "config", None)
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(cfg, name, None)
            if isinstance(value, int):
                return value
        return None

    def forward(self, x: Tensor) -> Tensor:
        """Next-token logits (B, L, vocab_size) for tokens ``x`` (B, L)."""
        check_tokens(x)
        vocab_size = self.vocab_size
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
            raise ValueError(f"token ids must lie in [0, {vocab_size}) for this Hugging Face model, got ids in "
                             f"[{int(x.min())}, {int(x.max())}]; it must share the diffusion model's tokenizer, "
                             "and proposals must not contain [MASK].")
        if self.length is not None and x.shape[1] > self.length:
            raise ValueError(f"sequence length {x.shape[1]} exceeds the model's maximum length {self.length}.")
        return self.model(input_ids=x, use_cache=False).logits

    def token_log_probs(self, x: Tensor) -> Tensor:
        """log p(xⁱ | x^{<i}) of tokens ``x`` (B, L) -> (B, L) float32, with position 0 = 0 (given)."""
        return next_token_log_probs(self(x), x)

    def log_prob(self, x: Tensor) -> Tensor:
        """Σ_{i≥1} log p(xⁱ | x^{<i}) per sequence (B,); the first token is treated as given (e.g. BOS)."""
        return self.token_log_probs(x).sum(-1)
