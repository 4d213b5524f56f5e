"""Noise-contrastive estimation of the residual energy (SPEC 2.4): the loss, and its negatives.

The classifier "is x_0 data or a draw from the factorised denoiser?" is P(data | x_0, x_t) = σ(−E(x_0, x_t)).
With one class prior per side (equal weights), its optimum is −E = log p(x_0 | x_t) − log Π_i x_θⁱ(x_0ⁱ | x_t):
the log density ratio itself, with no free constant (so E_{x̃ ~ Π x_θ}[exp(−E)] = 1 at the optimum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from edlm.diffusion.categorical import draw_rows, uniform64

__all__ = ["NCELossOutput", "nce_loss", "sample_negatives"]


@dataclass
class NCELossOutput:
    """What ``nce_loss`` returns. Scalars are batch means; the (B,) fields are per positive example."""

    loss: Tensor  # scalar: mean over the batch of the per-example loss (the training objective)
    accuracy: Tensor  # scalar: balanced accuracy of the classifier "data iff E < 0" (see ``nce_loss``)
    margin: Tensor  # scalar: mean over the batch of (mean_j E(x̃_0^j) − E(x_0)); > 0 once it separates them
    per_example: Tensor  # (B,) −log σ(−E(x_0)) − mean_j log σ(E(x̃_0^j))
    correct: Tensor  # (B,) ½(c(x_0) + mean_j c̃(x̃_0^j)), c = [E < 0], c̃ = [E > 0], ties ½; mean = ``accuracy``


def nce_loss(e_pos: Tensor, e_neg: Tensor) -> NCELossOutput:
    """The NCE loss of SPEC 2.4 with n_neg negatives per positive.

    loss_b = −log σ(−E(x_0)) − (1/n) Σ_j log σ(E(x̃_0^j)), averaged over the batch. The negatives share
    one unit of weight (their mean), so the two classes have equal priors whatever n is, and the optimum
    stays −E = log ratio (SPEC 2.4); more negatives only lower the variance.

    Accuracy is the balanced accuracy of the Bayes classifier of this model, "data iff σ(−E) > ½", i.e.
    E < 0: a positive is right when E(x_0) < 0, a negative when E(x̃_0) > 0, and E = 0 exactly (a coin
    flip) earns half. Per positive example, ``correct`` = ½(c(x_0) + mean_j c̃(x̃_0^j)) ∈ [0, 1]; its mean
    over independent examples is ``accuracy``, and its standard deviation / √B is the standard error.
    Chance level is 0.5: an energy that is identically 0, or any constant, scores exactly 0.5.

    Args:
        e_pos: energies E(x_0, x_t) of the data, (B,).
        e_neg: energies E(x̃_0^j, x_t) of the negatives drawn for the same x_t, (B, n_neg).

    Returns:
        ``NCELossOutput``; ``loss`` carries gradients, the other fields are detached.
    """
    if e_pos.dim() != 1 or e_neg.dim() != 2 or e_neg.shape[0] != e_pos.shape[0] or e_neg.shape[1] < 1:
        raise ValueError(f"need e_pos (B,) and e_neg (B, n_neg >= 1), got {tuple(e_pos.shape)} and "
                         f"{tuple(e_neg.shape)}.")
    e_pos, e_neg = e_pos.float(), e_neg.float()
    per_example = -F.logsigmoid(-e_pos) - F.logsigmoid(e_neg).mean(-1)  # SPEC 2.4; logsigmoid, never log(sigmoid)
    with torch.no_grad():
        pos_right = (e_pos < 0).float() + 0.5 * (e_pos == 0).float()  # (B,)
        neg_right = (e_neg > 0).float() + 0.5 * (e_neg == 0).float()  # (B, n_neg)
        correct = 0.5 * (pos_right + neg_right.mean(-1))  # (B,)
        margin = e_neg.mean(-1) - e_pos  # (B,)
    return NCELossOutput(loss=per_example.mean(), accuracy=correct.mean(), margin=margin.mean(),
                         per_example=per_example.detach(), correct=correct)


@torch.no_grad()
def sample_negatives(
    logits: Tensor,
    x_t: Tensor,
    mask_id: int,
    n_neg: int = 1,
    generator: torch.Generator | None = None,
    chunk_rows: int = 4096,
) -> Tensor:
    """n_neg exact draws x̃_0 ~ Π_i x_θⁱ(· | x_t) per row (SPEC 2.4 negatives), under SUBS (SPEC 1.3).

    Tokens are drawn only at masked positions, from the denoiser's distribution with the ``[MASK]``
    logit at −∞, by float64 inversion (SPEC 1.6); positions unmasked in x_t are copied. Works on raw
    logits and builds float64 probabilities ``chunk_rows`` masked positions at a time, so a 50k vocabulary
    never needs a full (B, L, V+1) float64 tensor.

    Args:
        logits: raw denoiser output (B, L, V+1) (or SUBS log-probabilities: the same distribution).
        x_t: noisy tokens (B, L).
        mask_id: the ``[MASK]`` id.
        n_neg: draws per row.
        generator: random stream; draws one (n_masked, n_neg) block of float64 uniforms.
        chunk_rows: masked positions per float64 chunk (memory).

    Returns:
        LongTensor (B, n_neg, L).
    """
    if not isinstance(n_neg, int) or n_neg < 1:
        raise ValueError(f"`n_neg` must be a positive integer, got {n_neg!r}.")
    if logits.shape[:-1] != x_t.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(x_t.shape)}.")
    masked = x_t == mask_id  # (B, L)
    out = x_t[:, None, :].repeat(1, n_neg, 1)  # (B, n_neg, L), unmasked positions copied (SPEC 1.3b)
    n_masked = int(masked.sum())
    if n_masked == 0:
        return out
    u = uniform64((n_masked, n_neg), generator, x_t.device)  # one uniform per draw
    flat = masked.reshape(-1).nonzero().squeeze(-1)  # rows of logits.view(-1, V+1) to draw from
    source = logits.reshape(-1, logits.shape[-1])
    drawn = torch.empty(n_masked, n_neg, dtype=torch.long, device=x_t.device)
    for i in range(0, n_masked, chunk_rows):
        # straight from the logits rows (no copy of all masked rows), [MASK] excluded (SPEC 1.3a)
        draws = draw_rows(source, u[i: i + chunk_rows], index=flat[i: i + chunk_rows], exclude=mask_id)
        drawn[i: i + chunk_rows] = draws.checked().ids  # (chunk, n_neg)
    out.transpose(1, 2)[masked] = drawn  # write through the (B, L, n_neg) view
    return out
