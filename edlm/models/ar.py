"""Causal transformer LM with the layout of MDLM's AR baseline (kuleshov-group/mdlm ``models/autoregressive.py``).

The same blocks as the DiT (``edlm.models.layers``) with causal attention and no adaLN conditioning:
``vocab_embed.embedding``, ``rotary_emb.inv_freq``, ``blocks.{i}.{norm1, attn_qkv, attn_out, norm2, mlp}``,
``output_layer.{norm_final, linear}``. It serves as a baseline and as the frozen p_AR of EDLM-AR
(SPEC 2.3), through ``token_log_probs``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edlm.models.dit import check_length, check_sizes, check_tokens
from edlm.models.layers import DiTBlock, FinalLayer, Rotary, TokenEmbedding

__all__ = ["ARTransformer", "next_token_log_probs"]


def next_token_log_probs(logits: Tensor, x: Tensor) -> Tensor:
    """log p(xⁱ | x^{<i}) per position from next-token logits; position 0 (given, e.g. BOS) gets 0.

    Args:
        logits: (B, L, V), where ``logits[:, i]`` predicts ``x[:, i + 1]``.
        x: (B, L) token ids.

    Returns:
        (B, L) float32 log-probabilities; column 0 is 0.
    """
    logits = logits[:, :-1].float()  # (B, L-1, V): position i predicts x[:, i+1]
    target = x[:, 1:]  # (B, L-1)
    picked = logits.gather(-1, target[..., None]).squeeze(-1)  # (B, L-1)
    log_p = picked - torch.logsumexp(logits, dim=-1)  # (B, L-1) log softmax at the targets
    return F.pad(log_p, (1, 0))  # (B, L): the first token is conditioned on, not scored


class ARTransformer(nn.Module):
    """Causal LM: ``forward(x) -> logits (B, L, vocab_size)``, where ``logits[:, i]`` predicts ``x[:, i + 1]``.

    Defaults are MDLM's ``small-ar`` baseline (12 blocks, width 768, 12 heads, length 1024).

    Args:
        vocab_size: ids the model reads and predicts (with edlm tokenizers: len(tokenizer), [MASK] included).
        length: longest sequence accepted.
        hidden_size, n_blocks, n_heads: width, depth and heads (head_dim must be even, for rotary).
        dropout: residual-branch dropout (MDLM: 0.1).
        mask_id: if given, this id's logit is set to −inf so the model never predicts ``[MASK]``
            (MDLM's AR baseline does the same with −1000); None = leave all logits as computed.
    """

    def __init__(
        self,
        vocab_size: int,
        length: int = 1024,
        hidden_size: int = 768,
        n_blocks: int = 12,
        n_heads: int = 12,
        dropout: float = 0.1,
        mask_id: int | None = None,
    ):
        super().__init__()
        check_sizes(vocab_size=vocab_size, length=length, hidden_size=hidden_size, n_blocks=n_blocks,
                     n_heads=n_heads, dropout=dropout)
        if mask_id is not None and not 0 <= mask_id < vocab_size:
            raise ValueError(f"`mask_id` must be None or in [0, vocab_size={vocab_size}), got {mask_id}.")
        self.vocab_size = vocab_size
        self.length = length
        self.hidden_size = hidden_size
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.dropout = dropout
        self.mask_id = mask_id
        self.time_conditioned = False
        self.causal = True

        # registration order = state_dict order = MDLM's AR (DDIT with causal=True)
        self.vocab_embed = TokenEmbedding(hidden_size, vocab_size)
        self.rotary_emb = Rotary(hidden_size // n_heads, max_len=length)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, n_heads, cond_dim=None, dropout=dropout, causal=True) for _ in range(n_blocks)
        )
        self.output_layer = FinalLayer(hidden_size, vocab_size, cond_dim=None)

    def get_config(self) -> dict:
        """The constructor arguments (what ``save_pretrained`` writes to config.json)."""
        return dict(vocab_size=self.vocab_size, length=self.length, hidden_size=self.hidden_size,
                    n_blocks=self.n_blocks, n_heads=self.n_heads, dropout=self.dropout, mask_id=self.mask_id)

    def forward(self, x: Tensor, score: bool = False) -> Tensor:
        """Next-token logits (B, L, vocab_size) for tokens ``x`` (B, L); with ``score=True`` the (B, L)
        log-probabilities of ``x`` itself (``token_log_probs``), computed inside the forward so that a
        compiled model fuses the log-softmax and the gather into one read of the logits."""
        check_tokens(x)
        L = x.shape[1]
        check_length(L, self.length)
        h = self.vocab_embed(x)  # (B, L, D)
        rotary = self.rotary_emb(L, x.device)
        for block in self.blocks:
            h = block(h, rotary, None)
        logits = self.output_layer(h, None, exclude=self.mask_id)  # (B, L, V); [MASK] −∞ via the bias
        return next_token_log_probs(logits, x) if score else logits

    def token_log_probs(self, x: Tensor) -> Tensor:
        """log p(xⁱ | x^{<i}) of tokens ``x`` (B, L) -> (B, L) float32, with position 0 = 0 (given)."""
        return self(x, score=True)

    def log_prob(self, x: Tensor) -> Tensor:
        """Σ_{i≥1} log p(xⁱ | x^{<i}) per sequence (B,); the first token is treated as given (e.g. BOS)."""
        return self.token_log_probs(x).sum(-1)
