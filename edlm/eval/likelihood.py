"""Held-out likelihood: the MDLM bound (SPEC 1.5) and the EDLM estimate (SPEC 2.6).

Both average, over the whole data set, a one-sample Monte Carlo estimate of the continuous-time NELBO:
t antithetic within each batch (SPEC 1.5), x_t ~ q(x_t | x_0), and the per-sequence term

    w(t) · log p(x_0 | x_t),   w(t) = α'_t / (1 − α_t) < 0,

token-weighted: Σ over sequences / Σ real tokens. ``num_time_samples`` independent passes give the
reported mean and its standard error (std over passes / √passes, the Monte Carlo error of the
(t, x_t) draws for this fixed data set).

- **MDLM bound**: log p = Σ_{i: x_tⁱ = m} log x_θⁱ(x_0ⁱ | x_t). Its expectation bounds the NLL per token
  from above, so exp of it is reported as "PPL ≤".
- **EDLM estimate**: the same with the residual model of SPEC 2.2 plugged in,
  log p_{θ,φ}(x_0 | x_t) = Σ_masked log x_θⁱ(x_0ⁱ | x_t) − E(x_0, x_t, t) − log Z(x_t),
  where log Z is either taken as 0 ("one": EDLM-AR, where Π x_θ · e^{−E} ≈ p_AR is nearly normalised)
  or estimated from n negatives x̃_0^j ~ Π x_θ(· | x_t): log Ẑ = log (1/n) Σ_j exp(−E(x̃_0^j)) ("negatives":
  EDLM-NCE; E[Ẑ] = Z, but E[log Ẑ] ≤ log Z). Neither the plug-in NELBO nor Ẑ gives a bound, so every
  EDLM figure is labelled "estimate (not a bound)". Where x_t has no mask, the proposal is a point mass
  and the term is exactly 0 (the energy is not called on it).

Caveat, measured on the exact toy (tests/eval/test_likelihood.py): the plug-in scores the *joint* of the
masked tokens, while the continuous-time bound reveals one token at a time and needs only per-position
marginals. On data from p, E[−log p(x^M | x^U)] = H(x^M | x^U) ≤ Σ_i H(x^i | x^U), so even the exact
posterior gives a figure *below* the true NLL (toy: 0.51 vs 0.66 nats/token). Compare EDLM estimates
with each other, not with bounds or AR perplexities.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from edlm.diffusion.forward import q_sample
from edlm.diffusion.loss import antithetic_times
from edlm.diffusion.schedules import LogLinearSchedule, NoiseSchedule
from edlm.diffusion.subs import SubsLogProbs, log_likelihood_of, subs_log_probs
from edlm.energy.nce_loss import sample_negatives
from edlm.errors import NumericalError

__all__ = ["LikelihoodOutput", "mdlm_bound", "edlm_estimate", "ar_nll", "iter_batches", "LOG_Z_MODES"]

LOG_Z_MODES = ("one", "negatives")
ESTIMATE_LABEL = "estimate (not a bound)"


@dataclass
class LikelihoodOutput:
    """A held-out NLL per token (nats) with its Monte Carlo standard error."""

    name: str  # "MDLM", "EDLM-AR", "EDLM-NCE", ...
    is_bound: bool  # True: an upper bound on the NLL (MDLM); False: an estimate (EDLM)
    nll: float  # nats per token, mean over time samples
    se: float | None  # standard error over time samples (None with a single sample)
    num_tokens: int  # real tokens scored per time sample
    num_sequences: int
    num_time_samples: int
    samples: list[float] = field(default_factory=list)  # the token-weighted NLL of each time sample
    diffusion_nll: float | None = None  # EDLM only: the MDLM term of the same draws
    log_z: str | None = None  # EDLM only: "one" or "negatives (n=…)"
    exact: bool = False  # True: the exact NLL (an AR model's next-token NLL), neither bound nor estimate

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)

    @property
    def energy_correction(self) -> float | None:
        """EDLM − MDLM on the same draws (nats per token); negative = the energy helps."""
        return None if self.diffusion_nll is None else self.nll - self.diffusion_nll

    @property
    def label(self) -> str:
        return "bound" if self.is_bound else "exact" if self.exact else ESTIMATE_LABEL

    @property
    def ppl_text(self) -> str:
        if self.exact:
            return f"PPL = {self.ppl:.4f}"
        return f"PPL <= {self.ppl:.4f}" if self.is_bound else f"PPL ~ {self.ppl:.4f} ({ESTIMATE_LABEL})"

    def to_dict(self) -> dict:
        return {**asdict(self), "ppl": self.ppl, "label": self.label, "energy_correction": self.energy_correction}

    def __str__(self) -> str:
        se = "" if self.se is None else f" ± {self.se:.4f}"
        return f"{self.name}: NLL {self.nll:.4f}{se} nats/token, {self.ppl_text}"


# ----------------------------------------------------------------------------- data
def iter_batches(data, batch_size: int = 32) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(input_ids (B, L), attention_mask (B, L) or None) from a LongTensor (N, L), a packed ``datasets.Dataset``
    (columns ``input_ids`` and optionally ``attention_mask``), or any iterable of such batch dicts
    (e.g. a ``DataLoader`` over packed blocks)."""
    if isinstance(data, Tensor):
        for i in range(0, data.shape[0], batch_size):
            yield data[i: i + batch_size], None
        return
    if hasattr(data, "column_names") and hasattr(data, "select"):  # a datasets.Dataset
        data = data.with_format("torch")
        has_mask = "attention_mask" in data.column_names
        for i in range(0, len(data), batch_size):
            rows = data[i: i + batch_size]
            yield rows["input_ids"], rows["attention_mask"] if has_mask else None
        return
    for batch in data:
        if isinstance(batch, Tensor):
            yield batch, None
        else:
            yield batch["input_ids"], batch.get("attention_mask")


def _num_batches(data, batch_size: int) -> int | None:
    """How many batches ``iter_batches`` yields (for a progress bar); None when ``data`` has no length."""
    if isinstance(data, Tensor):
        return -(-data.shape[0] // batch_size)
    if hasattr(data, "column_names") and hasattr(data, "select"):
        return -(-len(data) // batch_size)
    try:
        return len(data)
    except TypeError:
        return None


def _device_of(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    params = getattr(model, "parameters", None)
    for p in (params() if callable(params) else ()):
        return p.device
    return torch.device("cpu")


def _num_real(x_0: Tensor, attention_mask: Tensor | None) -> int:
    return x_0.numel() if attention_mask is None else int(attention_mask.sum())


# ----------------------------------------------------------------------------- core
def _energy_correction(energy, x_0: Tensor, x_t: Tensor, t: Tensor, logits: Tensor, mask_id: int, log_z: str,
                       n_neg: int, generator, energy_batch_size: int | None) -> Tensor:
    """−E(x_0, x_t, t) − log Ẑ(x_t) per sequence (B,) float64; 0 where x_t has no mask."""
    B = x_0.shape[0]
    correction = torch.zeros(B, dtype=torch.float64, device=x_0.device)
    rows = (x_t == mask_id).any(-1).nonzero().squeeze(-1)  # sequences with something to denoise
    if rows.numel() == 0:
        return correction
    x_0, x_t, t, logits = x_0[rows], x_t[rows], t[rows], logits[rows]
    uses_log_p = getattr(energy, "uses_log_p_x0", True)
    lazy = SubsLogProbs(logits, x_t, mask_id) if uses_log_p == "gather" else None  # views, no (n, L, V+1) copies

    def score(x0: Tensor, xt: Tensor, tt: Tensor, src: Tensor) -> Tensor:
        """Energies (N,) float64; ``src`` (N,) indexes the row of ``logits`` each sequence was drawn from."""
        chunk = energy_batch_size or x0.shape[0]
        parts = []
        for i in range(0, x0.shape[0], chunk):
            sl = slice(i, i + chunk)
            if lazy is not None:
                lp = lazy[src[sl]]  # x_t[src] is xt: the view of the rows the sequences came from
            else:
                lp = subs_log_probs(logits[src[sl]], xt[sl], mask_id) if uses_log_p else None  # (n, L, V+1)
            parts.append(energy(x0[sl], xt[sl], tt[sl], lp).double().reshape(-1))
        e = torch.cat(parts)
        if not torch.isfinite(e).all():
            raise NumericalError("the energy returned NaN or inf on held-out data.")
        return e

    n, L = x_0.shape
    e_data = score(x_0, x_t, t, torch.arange(n, device=x_0.device))  # (n,)
    if log_z == "one":
        log_z_hat = torch.zeros_like(e_data)  # Z ≈ 1 (EDLM-AR)
    else:
        neg = sample_negatives(logits, x_t, mask_id, n_neg, generator)  # (n, n_neg, L)
        src = torch.arange(n, device=x_0.device).repeat_interleave(n_neg)  # (n·n_neg,)
        e_neg = score(neg.reshape(n * n_neg, L), x_t[src], t[src], src).reshape(n, n_neg)
        log_z_hat = torch.logsumexp(-e_neg, dim=-1) - math.log(n_neg)  # log (1/n) Σ_j exp(−E(x̃_0^j))
    correction[rows] = -e_data - log_z_hat
    return correction


@torch.no_grad()
def _evaluate(denoiser, data, schedule, mask_id, num_time_samples, generator, batch_size, t_min, antithetic,
              device, energy=None, log_z="one", n_neg=16, neg_generator=None, energy_batch_size=None,
              progress=False, name=""):
    """Σ over the data of the per-sequence NELBO terms, for each time sample: (diffusion (K,), edlm (K,), tokens, seqs)."""
    if not isinstance(num_time_samples, int) or num_time_samples < 1:
        raise ValueError(f"`num_time_samples` must be a positive integer, got {num_time_samples!r}.")
    if log_z not in LOG_Z_MODES:
        raise ValueError(f"`log_z` must be one of {LOG_Z_MODES}, got {log_z!r}.")
    if log_z == "negatives" and (not isinstance(n_neg, int) or n_neg < 1):
        raise ValueError(f"`n_neg` must be a positive integer, got {n_neg!r}.")
    schedule = schedule or getattr(denoiser, "schedule", None) or LogLinearSchedule()
    mask_id = getattr(denoiser, "mask_id", None) if mask_id is None else mask_id
    if mask_id is None:
        raise ValueError("pass `mask_id`: the denoiser does not carry one.")
    device = _device_of(denoiser, device)
    K = num_time_samples
    diffusion = torch.zeros(K, dtype=torch.float64)
    edlm = torch.zeros(K, dtype=torch.float64)
    num_tokens = num_sequences = 0
    batches = iter_batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=_num_batches(data, batch_size), desc=name or "scoring", unit="batch",
                       leave=False, dynamic_ncols=True)
    for x_0, attention_mask in batches:
        x_0 = x_0.to(device=device, dtype=torch.long)
        attention_mask = None if attention_mask is None else attention_mask.to(device)
        B = x_0.shape[0]
        num_tokens += _num_real(x_0, attention_mask)
        num_sequences += B
        for k in range(K):  # the draws of one batch in the trainer's order: t, then the masks
            if antithetic:
                t = antithetic_times(B, t_min, generator=generator, device=device)  # (B,) SPEC 1.5
            else:
                t = t_min + (1.0 - t_min) * torch.rand(B, generator=generator, device=device)
            x_t = q_sample(x_0, schedule.alpha(t), mask_id, attention_mask, generator=generator)  # SPEC 1.2
            logits = denoiser(x_t, t)  # (B, L, V+1)
            log_lik = log_likelihood_of(logits, x_0, mask_id).double()  # (B, L)
            masked = x_t == mask_id  # padding is never masked (q_sample)
            log_p = torch.where(masked, log_lik, torch.zeros_like(log_lik)).sum(-1)  # (B,) Σ_masked log x_θ
            weight = schedule.loss_weight(t).double()  # (B,) α'_t / (1 − α_t) < 0
            diffusion[k] += float((weight * log_p).sum())  # SPEC 1.5
            if energy is not None:
                corr = _energy_correction(energy, x_0, x_t, t, logits, mask_id, log_z, n_neg,
                                          neg_generator if neg_generator is not None else generator,
                                          energy_batch_size)
                edlm[k] += float((weight * (log_p + corr)).sum())  # SPEC 2.6
    if num_tokens == 0:
        raise ValueError("no tokens to evaluate: the data set is empty.")
    return diffusion / num_tokens, edlm / num_tokens, num_tokens, num_sequences


def _mean_se(samples: Tensor) -> tuple[float, float | None]:
    K = samples.numel()
    se = float(samples.std(unbiased=True) / math.sqrt(K)) if K > 1 else None
    return float(samples.mean()), se


def mdlm_bound(
    denoiser,
    data: Tensor | Iterable,
    schedule: NoiseSchedule | None = None,
    mask_id: int | None = None,
    num_time_samples: int = 8,
    generator: torch.Generator | None = None,
    *,
    batch_size: int = 32,
    t_min: float = 1e-3,
    antithetic: bool = True,
    device: torch.device | str | None = None,
    name: str = "MDLM",
    progress: bool = False,
) -> LikelihoodOutput:
    """The MDLM NELBO bound on the NLL per token of held-out data (SPEC 1.5), "PPL ≤".

    Args:
        denoiser: ``denoiser(x_t (B, L), t (B,)) -> logits (B, L, V+1)`` (e.g. ``load_denoiser(path)``, with
            EMA weights as ``edlm train`` saves them); put it in eval mode.
        data: a LongTensor (N, L), a packed ``datasets.Dataset``, or an iterable of batch dicts
            (``input_ids``, optional ``attention_mask``; padding is neither masked nor counted).
        schedule, mask_id: default: the denoiser's (``Denoiser`` carries both), else log-linear.
        num_time_samples: independent (t, x_t) passes over the data; their spread gives the standard error.
        generator: the random stream (on the denoiser's device). With ``num_time_samples=1``, the seed and
            batch size of training's validation, this reproduces its ``val/nll`` draw for draw.
        batch_size: sequences per batch when ``data`` is a tensor or Dataset (antithetic strata are per batch).
        t_min, antithetic: as training (SPEC 1.5).
        device: default: the denoiser's.
        progress: a progress bar over the batches (on stderr, labelled ``name``).
    """
    diffusion, _, num_tokens, num_sequences = _evaluate(denoiser, data, schedule, mask_id, num_time_samples,
                                                        generator, batch_size, t_min, antithetic, device,
                                                        progress=progress, name=name)
    nll, se = _mean_se(diffusion)
    return LikelihoodOutput(name=name, is_bound=True, nll=nll, se=se, num_tokens=num_tokens,
                            num_sequences=num_sequences, num_time_samples=num_time_samples,
                            samples=diffusion.tolist())


def edlm_estimate(
    denoiser,
    energy,
    data: Tensor | Iterable,
    schedule: NoiseSchedule | None = None,
    mask_id: int | None = None,
    num_time_samples: int = 8,
    generator: torch.Generator | None = None,
    *,
    log_z: str = "negatives",
    n_neg: int = 16,
    negatives_generator: torch.Generator | None = None,
    batch_size: int = 32,
    energy_batch_size: int | None = None,
    t_min: float = 1e-3,
    antithetic: bool = True,
    device: torch.device | str | None = None,
    name: str = "EDLM",
    progress: bool = False,
) -> LikelihoodOutput:
    """The EDLM NLL estimate per token (SPEC 2.6) — an estimate, not a bound — and the MDLM term of the same draws.

    Args:
        denoiser, data, schedule, mask_id, num_time_samples, generator, batch_size, t_min, antithetic, device,
            progress: as ``mdlm_bound``. With the same generator seed, ``diffusion_nll`` equals ``mdlm_bound``'s value
            when ``negatives_generator`` is given (otherwise the negatives share, and shift, the stream).
        energy: ``energy(x_0, x_t, t, log_p_x0) -> (N,)``, lower = more likely: ``AREnergy`` (EDLM-AR) or
            ``NCEEnergy`` (EDLM-NCE). An energy with ``uses_log_p_x0 = False`` gets ``None`` for ``log_p_x0``.
        log_z: "one" (Z ≈ 1; the EDLM-AR choice) or "negatives" (log Ẑ = log mean_j exp(−E(x̃_0^j)) over
            ``n_neg`` exact draws x̃_0^j ~ Π x_θ(· | x_t); the EDLM-NCE choice).
        n_neg: negatives per sequence for ``log_z="negatives"``.
        negatives_generator: a separate stream for the negatives (keeps the (t, x_t) draws paired with
            ``mdlm_bound``'s).
        energy_batch_size: sequences per energy call (memory); None = a whole batch (× n_neg) at once.
        name: the row label, e.g. "EDLM-NCE".
    """
    diffusion, edlm, num_tokens, num_sequences = _evaluate(
        denoiser, data, schedule, mask_id, num_time_samples, generator, batch_size, t_min, antithetic, device,
        energy=energy, log_z=log_z, n_neg=n_neg, neg_generator=negatives_generator,
        energy_batch_size=energy_batch_size, progress=progress, name=name)
    nll, se = _mean_se(edlm)
    return LikelihoodOutput(name=name, is_bound=False, nll=nll, se=se, num_tokens=num_tokens,
                            num_sequences=num_sequences, num_time_samples=num_time_samples, samples=edlm.tolist(),
                            diffusion_nll=float(diffusion.mean()),
                            log_z="one" if log_z == "one" else f"negatives (n={n_neg})")


@torch.no_grad()
def ar_nll(model, data: Tensor | Iterable, *, batch_size: int = 32, device: torch.device | str | None = None,
           name: str = "AR", progress: bool = False) -> LikelihoodOutput:
    """The exact next-token NLL per token of an autoregressive model on held-out rows, as ``edlm train ar``
    validates: the first token of each row is given (not scored), padding is never scored.

    Args:
        model: ``model(x (B, L)) -> logits (B, L, V+1)`` where position i predicts token i + 1 (``ARTransformer``).
        data, batch_size, device, progress: as ``mdlm_bound``.
    """
    from edlm.models.ar import next_token_log_probs

    device = _device_of(model, device)
    total = 0.0
    num_tokens = num_sequences = 0
    batches = iter_batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=_num_batches(data, batch_size), desc=name, unit="batch", leave=False,
                       dynamic_ncols=True)
    for x, attention_mask in batches:
        x = x.to(device=device, dtype=torch.long)
        log_p = next_token_log_probs(model(x), x).double()  # (B, L), column 0 = 0 (given)
        scored = torch.ones_like(log_p) if attention_mask is None else attention_mask.to(device, torch.float64)
        scored[:, 0] = 0.0
        total -= float((log_p * scored).sum())
        num_tokens += int(scored.sum())
        num_sequences += x.shape[0]
    if num_tokens == 0:
        raise ValueError("no tokens to evaluate: the data set is empty.")
    return LikelihoodOutput(name=name, is_bound=False, nll=total / num_tokens, se=None, num_tokens=num_tokens,
                            num_sequences=num_sequences, num_time_samples=1, exact=True)
