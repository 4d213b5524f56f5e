"""Held-out likelihood: the MDLM bound (SPEC 1.5), the EDLM plug-in estimate (SPEC 2.6), an AR model's exact NLL.

Every figure has a kind (``LikelihoodOutput.kind``): "exact", "bound" (an upper bound on the NLL in
expectation) or "estimate" (no known direction). The EDLM bound is ``edlm.eval.nll_bound``; the derivation of
each kind is in docs/likelihood.md.

The Monte Carlo figures average, over the whole data set, a one-sample estimate of the continuous-time NELBO:
t antithetic within each batch (SPEC 1.5), x_t ~ q(x_t | x_0), and the per-sequence term
w(t) · log p(x_0 | x_t), w(t) = α'_t / (1 − α_t) < 0, token-weighted (Σ over sequences / Σ real tokens).
``num_time_samples`` independent passes give the mean, its standard error and a Student-t interval.

- **MDLM bound**: log p = Σ_{i: x_tⁱ = m} log x_θⁱ(x_0ⁱ | x_t); its expectation bounds the NLL ("PPL ≤").
- **EDLM estimate**: the residual model of SPEC 2.2 plugged in,
  log p_{θ,φ}(x_0 | x_t) = Σ_masked log x_θⁱ(x_0ⁱ | x_t) − E(x_0, x_t, t) − log Z(x_t),
  log Z taken as 0 ("one": EDLM-AR) or log Ẑ = log (1/n) Σ_j exp(−E(x̃_0^j)) over n draws x̃_0^j ~ Π x_θ
  ("negatives": EDLM-NCE). Not a bound, and biased low twice: E[log Ẑ] ≤ log Z (Jensen), and the plug-in scores
  the *joint* of the masked tokens where the continuous-time bound needs one token at a time, so on data from p
  even the exact posterior gives H(x^M | x^U) ≤ Σ_i H(x^i | x^U), below the true NLL (toy: 0.51 vs 0.66
  nats/token, tests/eval/test_likelihood.py). Compare EDLM estimates with each other only.
- **AR exact**: Σ −log p_AR(xⁱ | x^{<i}) over real tokens after the first of each row.
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

__all__ = ["LikelihoodOutput", "mdlm_bound", "edlm_estimate", "iter_batches", "num_batches", "device_of",
           "score_energies", "half_width", "ar_nll", "LOG_Z_MODES", "KINDS"]

LOG_Z_MODES = ("one", "negatives")
ESTIMATE_LABEL = "estimate (not a bound)"


KINDS = ("exact", "bound", "estimate")


@dataclass
class LikelihoodOutput:
    """A held-out NLL per token (nats) with its Monte Carlo standard error, confidence interval and kind.

    ``kind``: "exact" (no Monte Carlo, e.g. an AR model), "bound" (its expectation is an upper bound on the model's
    NLL: MDLM, and the EDLM bound of ``edlm.eval.nll_bound``), or "estimate" (neither: the EDLM plug-in).
    """

    name: str  # "MDLM", "EDLM-AR", "EDLM-NCE", ...
    is_bound: bool  # True: an upper bound on the NLL (MDLM, EDLM bound); False: exact or an estimate
    nll: float  # nats per token, mean over time samples
    se: float | None  # standard error over time samples (None with a single sample, or exact)
    num_tokens: int  # real tokens scored per time sample
    num_sequences: int
    num_time_samples: int
    samples: list[float] = field(default_factory=list)  # the token-weighted NLL of each time sample
    diffusion_nll: float | None = None  # EDLM only: the MDLM term of the same draws
    log_z: str | None = None  # EDLM estimate only: "one" or "negatives (n=…)"
    kind: str = ""  # exact | bound | estimate; default: bound if is_bound else estimate
    confidence: float = 0.95  # level of the two-sided interval nll ± ci
    ci: float | None = None  # half-width of the Student-t interval over time samples (None without se)
    detail: str | None = None  # what the figure is of, e.g. "k=8, T=128, 16 draws"

    def __post_init__(self):
        self.kind = self.kind or ("bound" if self.is_bound else "estimate")
        if self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}, got {self.kind!r}.")
        if self.ci is None and self.se is not None and self.num_time_samples > 1:
            self.ci = half_width(self.se, self.num_time_samples, self.confidence)

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)

    @property
    def energy_correction(self) -> float | None:
        """EDLM − MDLM on the same draws (nats per token); negative = the energy helps."""
        return None if self.diffusion_nll is None else self.nll - self.diffusion_nll

    @property
    def label(self) -> str:
        return {"exact": "exact", "bound": "bound", "estimate": ESTIMATE_LABEL}[self.kind]

    def cell(self, digits: int = 3, ppl: bool = False) -> str:
        """The figure with its kind in one table cell: "3.259 (exact)", "<= 3.310 +- 0.020 (bound)",
        "~ 3.252 +- 0.010 (estimate)"; ± is the half-width of the ``confidence`` interval. ``ppl``: exp of the
        figure (the interval mapped through exp, as its half-width at the upper end)."""
        value = self.ppl if ppl else self.nll
        sign = {"exact": "", "bound": "<= ", "estimate": "~ "}[self.kind]
        pm = ""
        if self.ci is not None:
            pm = f" +- {math.exp(self.nll + self.ci) - self.ppl:.3g}" if ppl else f" +- {self.ci:.{digits}f}"
        return f"{sign}{value:.{digits}f}{pm} ({self.kind})"

    @property
    def ppl_text(self) -> str:
        if self.kind == "estimate":
            return f"PPL ~ {self.ppl:.4f} ({ESTIMATE_LABEL})"
        return f"PPL {'<= ' if self.is_bound else ''}{self.ppl:.4f} ({self.kind})"

    def to_dict(self) -> dict:
        return {**asdict(self), "ppl": self.ppl, "label": self.label, "energy_correction": self.energy_correction,
                "cell": self.cell()}

    def __str__(self) -> str:
        se = "" if self.se is None else f" ± {self.se:.4f}"
        return f"{self.name}: NLL {self.nll:.4f}{se} nats/token, {self.ppl_text}"


def half_width(se: float, num_samples: int, confidence: float = 0.95) -> float:
    """Half-width of the two-sided Student-t interval (num_samples − 1 degrees of freedom) for a mean with
    standard error ``se``: the interval nll ± it covers the figure's expectation at rate ``confidence``."""
    from scipy.stats import t as student_t

    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence!r}.")
    return float(student_t.ppf(0.5 + confidence / 2, num_samples - 1)) * se


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


def num_batches(data, batch_size: int) -> int | None:
    """How many batches ``iter_batches`` yields (for a progress bar); None when ``data`` has no length."""
    if isinstance(data, Tensor):
        return -(-data.shape[0] // batch_size)
    if hasattr(data, "column_names") and hasattr(data, "select"):
        return -(-len(data) // batch_size)
    try:
        return len(data)
    except TypeError:
        return None


def device_of(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    params = getattr(model, "parameters", None)
    for p in (params() if callable(params) else ()):
        return p.device
    return torch.device("cpu")


def _num_real(x_0: Tensor, attention_mask: Tensor | None) -> int:
    return x_0.numel() if attention_mask is None else int(attention_mask.sum())


# ----------------------------------------------------------------------------- core
def score_energies(energy, x_0: Tensor, src: Tensor, logits: Tensor, x_t: Tensor, t: Tensor, mask_id: int,
                   energy_batch_size: int | None = None) -> Tensor:
    """Energies E(x_0, x_t[src], t[src]) (N,) float64 of sequences x_0 (N, L), each drawn for the row ``src`` (N,)
    of ``logits`` (n, L, V+1), whose noisy tokens and times are ``x_t`` (n, L) and ``t`` (n,).

    The energy gets what it reads (``uses_log_p_x0``): lazy views of the SUBS log-probabilities ("gather"), the
    dense (N, L, V+1) tensor (True) or None (False); ``energy_batch_size`` sequences per call (None: all).
    """
    uses_log_p = getattr(energy, "uses_log_p_x0", True)
    lazy = SubsLogProbs(logits, x_t, mask_id) if uses_log_p == "gather" else None  # views, no (n, L, V+1) copies
    chunk = energy_batch_size or x_0.shape[0]
    parts = []
    for i in range(0, x_0.shape[0], chunk):
        rows = src[i: i + chunk]
        if lazy is not None:
            lp = lazy[rows]  # the view of the rows the sequences came from
        else:
            lp = subs_log_probs(logits[rows], x_t[rows], mask_id) if uses_log_p else None  # (n, L, V+1)
        parts.append(energy(x_0[i: i + chunk], x_t[rows], t[rows], lp).double().reshape(-1))
    e = torch.cat(parts)
    if not torch.isfinite(e).all():
        raise NumericalError("the energy returned NaN or inf on held-out data.")
    return e


def _energy_correction(energy, x_0: Tensor, x_t: Tensor, t: Tensor, logits: Tensor, mask_id: int, log_z: str,
                       n_neg: int, generator, energy_batch_size: int | None) -> Tensor:
    """−E(x_0, x_t, t) − log Ẑ(x_t) per sequence (B,) float64; 0 where x_t has no mask."""
    B = x_0.shape[0]
    correction = torch.zeros(B, dtype=torch.float64, device=x_0.device)
    rows = (x_t == mask_id).any(-1).nonzero().squeeze(-1)  # sequences with something to denoise
    if rows.numel() == 0:
        return correction
    x_0, x_t, t, logits = x_0[rows], x_t[rows], t[rows], logits[rows]
    score = lambda x0, src: score_energies(energy, x0, src, logits, x_t, t, mask_id, energy_batch_size)

    n, L = x_0.shape
    e_data = score(x_0, torch.arange(n, device=x_0.device))  # (n,)
    if log_z == "one":
        log_z_hat = torch.zeros_like(e_data)  # Z ≈ 1 (EDLM-AR)
    else:
        neg = sample_negatives(logits, x_t, mask_id, n_neg, generator)  # (n, n_neg, L)
        src = torch.arange(n, device=x_0.device).repeat_interleave(n_neg)  # (n·n_neg,)
        e_neg = score(neg.reshape(n * n_neg, L), src).reshape(n, n_neg)
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
    device = device_of(denoiser, device)
    K = num_time_samples
    diffusion = torch.zeros(K, dtype=torch.float64)
    edlm = torch.zeros(K, dtype=torch.float64)
    num_tokens = num_sequences = 0
    batches = iter_batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=num_batches(data, batch_size), desc=name or "scoring", unit="batch",
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
def ar_nll(ar_model, data: Tensor | Iterable, *, batch_size: int = 32, device: torch.device | str | None = None,
           name: str = "AR", progress: bool = False) -> LikelihoodOutput:
    """The exact NLL per token of held-out data under an autoregressive model (no Monte Carlo): kind "exact".

    ``ar_model.token_log_probs(x (B, L)) -> (B, L)`` gives log p(xⁱ | x^{<i}) with the first token of each row given
    (``ARTransformer``, ``HFCausalLM``), so positions 1 … L − 1 are scored (padding never).
    """
    device = device_of(ar_model, device)
    nll = 0.0
    num_tokens = num_sequences = 0
    batches = iter_batches(data, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=num_batches(data, batch_size), desc=name, unit="batch", leave=False,
                       dynamic_ncols=True)
    for x_0, attention_mask in batches:
        x_0 = x_0.to(device=device, dtype=torch.long)
        scored = torch.ones_like(x_0, dtype=torch.bool) if attention_mask is None else attention_mask.to(device).bool()
        scored[:, 0] = False  # the first token is given
        log_p = ar_model.token_log_probs(x_0).double()  # (B, L)
        nll -= float(torch.where(scored, log_p, torch.zeros_like(log_p)).sum())
        num_tokens += int(scored.sum())
        num_sequences += x_0.shape[0]
    if num_tokens == 0:
        raise ValueError("no tokens to evaluate: the data set is empty.")
    return LikelihoodOutput(name=name, is_bound=False, kind="exact", nll=nll / num_tokens, se=None,
                            num_tokens=num_tokens, num_sequences=num_sequences, num_time_samples=1)
