"""``generate``: the one loop that calls the networks (denoiser and energy) and counts NFEs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch
from torch import Tensor

from edlm.accel.compiling import is_compiled
from edlm.accel.policy import reveals_on_side_stream
from edlm.diffusion.schedules import NoiseSchedule
from edlm.diffusion.subs import SubsLogProbs, raise_on_faults
from edlm.errors import NumericalError
from edlm.samplers.base import GenerateOutput, Ticks
from edlm.samplers.importance import ImportanceSampler
from edlm.samplers.settings import (
    DEFAULT_BUDGET,
    DEFAULT_ESS_THRESHOLD,
    DEFAULT_K,
    DEFAULT_K_CHOICES,
    DEFAULT_PARTICLES,
    DEFAULT_REMASK_ETA,
    DEFAULT_REMASK_WINDOW,
    DEFAULT_SAMPLER,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    DEFAULT_WINDOW,
    check_graph,
    check_positive_int,
    check_sampler_options,
)

__all__ = ["generate", "Denoiser", "Energy"]

Denoiser = Callable[[Tensor, Tensor], Tensor]  # (x_t (B, L), t (B,)) -> logits (B, L, V+1)
Energy = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]  # (x_0, x_t, t, log_p_x0) -> (N,)

# Energies that read log_p_x0 as a tensor get (N, L, V+1): one copy per proposal; AREnergy makes (N, L, V)
# logits of its own. Without an explicit `energy_batch_size`, chunk their calls so that one chunk's float32
# (N, L, V+1) stays under 2 GiB (~10 sequences at L = 1024, V = 50k; pass energy_batch_size on a big GPU).
_LOGP_CHUNK_BYTES = 2 * 1024**3


def _device_of(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


class _Reveals:
    """The plain steps' random decisions (``AncestralSampler.decide``: which positions are revealed, their
    uniforms) and the mask they leave, kept apart from the tokens. A plain step's only host sync is the ``nonzero``
    of its reveals; on a CUDA device (``reveals_on_side_stream``) it runs on a side stream, which holds a few small
    kernels, so the host does not wait for the denoiser call queued before it and keeps queueing steps while the
    GPU works. The decisions do not read x_θ, and the generator's draws keep their order, so the tokens are the
    ones the sampling stream alone gives."""

    def __init__(self, x: Tensor, mask_id: int, device: torch.device):
        self.mask_id = mask_id
        self.side = torch.cuda.Stream(device) if reveals_on_side_stream(device) else None
        self.main = torch.cuda.current_stream(device) if self.side is not None else None
        self.reset(x)

    def reset(self, x: Tensor) -> None:
        """Masks from x (on the sampling stream), after a step that decided its reveals itself (an IS step)."""
        self.masked = x == self.mask_id
        if self.side is not None:
            self.masked.record_stream(self.side)
            self.side.wait_stream(self.main)  # for the masks (and the step before them), not for the next denoiser call

    def decide(self, sampler: ImportanceSampler, t: Tensor, s: Tensor, generator) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """``sampler.decide`` from the tracked mask, which it then updates: the revealed (b, i) and their uniforms."""
        with torch.cuda.stream(self.side) if self.side is not None else contextlib.nullcontext():
            at, u = sampler.decide(self.masked, t, s, generator)  # its nonzero syncs the side stream only
            masked = self.masked.clone()
            masked[at] = False
        self.masked = masked
        if self.side is not None:
            for tensor in (*at, u):
                tensor.record_stream(self.main)  # used by the sampling stream: not reused before it is done with them
            self.main.wait_stream(self.side)
        return at, u


def _validate(length, batch_size, vocab_size, mask_id, denoiser, energy):
    """The loop's own arguments; the sampler settings (steps, k, window, temperature, top_p) are checked by
    the sampler (``edlm.samplers.settings``)."""
    for name, value in (("length", length), ("batch_size", batch_size), ("vocab_size", vocab_size)):
        check_positive_int(name, value)
    if not 0 <= mask_id <= vocab_size:
        raise ValueError(f"`mask_id` must be in [0, vocab_size={vocab_size}], got {mask_id}.")
    for name, model in (("denoiser", denoiser), ("energy", energy)):  # another id would sample wrong tokens
        own = getattr(model, "mask_id", None) if model is not None else None
        if isinstance(own, int) and not isinstance(own, bool) and own != mask_id:
            raise ValueError(f"mask_id={mask_id} but the {name}'s [MASK] id is {own}.")
    max_len = getattr(denoiser, "length", None)
    if isinstance(max_len, int) and length > max_len:
        raise ValueError(f"`length` {length} exceeds the denoiser's maximum length {max_len}; "
                         "use semi-autoregressive sampling (edlm.samplers.semi_ar) for longer text.")
    for name, model in (("denoiser", denoiser), ("energy", energy)):
        v = getattr(model, "vocab_size", None)
        if model is not None and isinstance(v, int) and v not in (vocab_size, vocab_size + 1):
            raise ValueError(f"tokenizer mismatch: the {name} has {v} ids but vocab_size={vocab_size} "
                             f"(+1 for [MASK]); denoiser and energy must share one tokenizer.")


def _check_x_init(x_init, batch_size: int, length: int, vocab_size: int) -> None:
    """A (B, L) integer tensor of ids in [0, V] (the real tokens and [MASK]): a bad id would index out of range."""
    if not isinstance(x_init, Tensor):
        raise ValueError(f"x_init must be a tensor of token ids, got {type(x_init).__name__}.")
    if x_init.is_floating_point() or x_init.is_complex() or x_init.dtype == torch.bool:
        raise ValueError(f"x_init must hold integer token ids, got {x_init.dtype}.")
    if tuple(x_init.shape) != (batch_size, length):
        raise ValueError(f"`x_init` must have shape {(batch_size, length)}, got {tuple(x_init.shape)}.")
    low, high = torch.stack([x_init.min(), x_init.max()]).tolist()  # one host sync per call
    if low < 0 or high > vocab_size:
        raise ValueError(f"x_init holds ids outside [0, vocab_size={vocab_size}] (min {low}, max {high}); the "
                         "real tokens and the [MASK] id are all there is.")


@torch.no_grad()
def generate(
    denoiser: Denoiser,
    length: int,
    batch_size: int,
    vocab_size: int,
    mask_id: int,
    steps: int,
    energy: Energy | None = None,
    k: int = DEFAULT_K,
    window: tuple[float, float] = DEFAULT_WINDOW,
    temperature: float = DEFAULT_TEMPERATURE,
    cache: bool = True,
    generator: torch.Generator | None = None,
    *,
    schedule: NoiseSchedule | None = None,
    noise_removal: bool = True,
    eps: float = 1e-5,
    top_p: float = DEFAULT_TOP_P,
    x_init: Tensor | None = None,
    energy_batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | object = False,
    sampler: str = DEFAULT_SAMPLER,
    particles: int = DEFAULT_PARTICLES,
    ess_threshold: float = DEFAULT_ESS_THRESHOLD,
    budget: int = DEFAULT_BUDGET,
    k_choices: tuple[int, ...] = DEFAULT_K_CHOICES,
    remask_eta: float = DEFAULT_REMASK_ETA,
    remask_window: tuple[float, float] = DEFAULT_REMASK_WINDOW,
    graph: bool = False,
) -> GenerateOutput:
    """Sample B sequences with MDLM (``energy=None`` or k = 1) or EDLM importance sampling (SPEC 2.5).

    Args:
        denoiser: ``denoiser(x_t (B, L), t (B,)) -> logits (B, L, V+1)``; SUBS is applied here.
        length, batch_size: L and B.
        vocab_size: V, the number of real tokens (logits have V + 1 classes).
        mask_id: the ``[MASK]`` id.
        steps: T reverse steps on a uniform grid from t = 1.
        energy: ``energy(x_0 (N, L), x_t (N, L), t (N,), log_p_x0 (N, L, V+1)) -> (N,)``, lower =
            more likely; None for plain MDLM. What ``log_p_x0`` is depends on the energy's
            ``uses_log_p_x0`` attribute: True (the default) — a float32 tensor, one copy per proposal;
            ``"gather"`` — a ``SubsLogProbs`` view that only supports ``log_p_x0.gather(-1, index)``
            and costs no copy (``AREnergy``); False — None (``NCEEnergy``).
        k: proposals per sequence inside the window (k = 1: identical to MDLM for the same generator).
        window: (t_lo, t_hi); steps starting at t in the window are importance-sampled.
        temperature: τ in w ∝ exp(−E/τ).
        cache: reuse x_θ when a step revealed nothing and the denoiser is not time-conditioned
            (MDLM's ``ddpm_cache``; SPEC 1.6). Ignored for time-conditioned denoisers.
        generator: the random stream (must live on the sampling device).
        schedule: noise schedule (log-linear by default).
        noise_removal: end at t = eps and argmax any mask left (MDLM); False samples down to t = 0.
        top_p: nucleus filtering of the proposal x_θ (1.0 = off).
        x_init: optional (B, L) start; its unmasked tokens are kept (used by semi-AR sampling).
        energy_batch_size: score at most this many sequences per energy call; None = for an energy
            that reads log_p_x0, as many as keep one float32 (N, L, V+1) under 2 GiB (all of them for
            small vocabularies), else all of them (B·k for a compiled energy). A compiled energy gets
            every call at this size (the last chunk is padded), so it compiles once.
        device: where to sample; default: the denoiser's parameters' device, else CPU.
        progress: True: show a progress bar over the steps; or a caller's tqdm-like bar, whose ``update(1)`` is
            called once per step (``steps`` in all).
        sampler: "importance" (SPEC 2.5: ``k`` proposals inside ``window``; MDLM without an energy), "smc"
            (``particles`` persistent particles per sequence, resampled when ESS < ``ess_threshold`` · N;
            ``edlm.samplers.smc``), "adaptive" (k from ``k_choices`` chosen per step and sequence under ``budget``
            energy evaluations per sequence; ``edlm.samplers.adaptive``) or "remask" (importance sampling plus
            energy-guided re-masking, at most ``remask_eta`` of the tokens per step, inside ``remask_window``;
            ``edlm.samplers.remask``). Settings of another sampler than the chosen one must keep their defaults.
        graph: ``sampler="importance"`` with ``top_p`` = 1, MDLM or EDLM: decide every reveal before the first
            network call, skip the steps that reveal nothing, and run each other step as one fixed-shape piece of
            work, on CUDA captured once as a CUDA graph and replayed (``edlm.samplers.graph_loop``; an
            importance-sampled step draws its k proposals, scores them in one batched energy call and picks one on
            the device, ``edlm.samplers.graph_is``). Same distribution as the eager loop, other tokens for the same
            seed; no host sync inside the loop, so far less host time per step at small batch. A NaN / inf energy
            raises ``NumericalError`` after the loop instead of at its step.

    Returns:
        ``GenerateOutput`` with ``tokens`` (B, L), ``nfe_denoiser``, ``nfe_energy`` and timings.
    """
    _validate(length, batch_size, vocab_size, mask_id, denoiser, energy)
    kind = sampler
    options = check_sampler_options(kind, k=k, window=window, particles=particles, ess_threshold=ess_threshold,
                                    budget=budget, k_choices=k_choices, remask_eta=remask_eta,
                                    remask_window=remask_window)
    device = _device_of(denoiser, device)
    check_graph(graph, sampler=kind, top_p=top_p)
    # checks k, window, temperature, top_p (and steps, in set_timesteps): the one check of each setting
    sampler = ImportanceSampler(mask_id, k=k, window=window, temperature=temperature, schedule=schedule,
                                noise_removal=noise_removal, eps=eps, top_p=top_p)
    # the grid stays on the host: t and s are CPU scalars, so the reveal probability and σ(t) cost no
    # device kernels and reading t no sync (a 0-dim CPU tensor mixes with CUDA tensors as a scalar)
    timesteps = sampler.set_timesteps(steps, device="cpu")
    cache = cache and not getattr(denoiser, "time_conditioned", False)
    use_is = energy is not None
    # True: a dense copy per proposal; "gather": a lazy view (AREnergy); False: None (NCEEnergy)
    reads_log_p_x0 = getattr(energy, "uses_log_p_x0", True)
    dense_log_p_x0 = reads_log_p_x0 is True
    start = time.perf_counter()

    if x_init is None:
        x = torch.full((batch_size, length), mask_id, dtype=torch.long, device=device)
    else:
        _check_x_init(x_init, batch_size, length, vocab_size)
        x = x_init.to(device=device, dtype=torch.long).clone()
    if graph:
        from edlm.samplers.graph_loop import generate_graphed

        return generate_graphed(denoiser, x, steps, vocab_size=vocab_size, mask_id=mask_id, generator=generator,
                                sampler=sampler, device=device, energy=energy, energy_batch_size=energy_batch_size,
                                progress=progress)
    if kind != "importance":  # the samplers of smc_loop.py and guided_loop.py
        from edlm.samplers.guided_loop import generate_guided

        return generate_guided(denoiser, energy, x, kind, steps, options, vocab_size=vocab_size, mask_id=mask_id,
                               temperature=temperature, cache=cache, generator=generator, schedule=schedule,
                               noise_removal=noise_removal, eps=eps, top_p=top_p, energy_batch_size=energy_batch_size,
                               device=device, progress=progress)

    out = GenerateOutput(tokens=x, nfe_denoiser=0, nfe_energy=0, steps=steps)
    log_p_x0: SubsLogProbs | None = None
    faults = torch.zeros((), dtype=torch.bool, device=device)  # set by NaN / +inf in a row of x_θ that was read

    def call_denoiser(x_t: Tensor, t: Tensor) -> SubsLogProbs:
        logits = denoiser(x_t, torch.full((x_t.shape[0],), float(t), device=device))
        if logits.shape != (*x_t.shape, vocab_size + 1):
            raise ValueError(f"the denoiser returned logits of shape {tuple(logits.shape)}; expected "
                             f"{(*x_t.shape, vocab_size + 1)} (vocab_size + 1 for [MASK]).")
        out.nfe_denoiser += 1
        # SPEC 1.3, normalised lazily: the steps read ~L/T rows per sequence, not (B, L, V+1); rows that
        # are read are checked for NaN / +inf there, into `faults` (no host sync; NumericalError below)
        return SubsLogProbs(logits, x_t, mask_id, faults)

    # a compiled energy gets every chunk at one shape (the last is padded): a new shape would recompile
    fixed_chunks = is_compiled(energy)

    def call_energy(x_0: Tensor, x_t: Tensor, t: Tensor, lp_rows) -> Tensor:
        """Energies of the n·k proposals; ``lp_rows`` (n, L, V+1) is shared by each row's k proposals."""
        N = x_0.shape[0]
        if reads_log_p_x0:  # a (chunk, L, V+1) float32 copy, or (AREnergy) the AR model's own logits per chunk
            chunk = energy_batch_size or max(1, min(N, _LOGP_CHUNK_BYTES // (length * (vocab_size + 1) * 4)))
        else:  # nothing vocabulary-sized to bound
            chunk = energy_batch_size or (batch_size * k if fixed_chunks else N)
        parts = []
        for i in range(0, N, chunk):
            idx = torch.arange(i, min(i + chunk, N), device=device)  # proposals of this call
            m = idx.numel()
            if fixed_chunks and m < chunk:  # pad with copies of the last proposal; their energies are dropped
                idx = torch.cat([idx, idx[-1:].expand(chunk - m)])
            lp = lp_rows[idx // k] if reads_log_p_x0 else None  # dense: a (chunk, L, V+1) copy; "gather": a view
            e = energy(x_0[idx], x_t[idx], t[idx], lp)
            out.nfe_energy += 1
            if e.shape not in ((idx.numel(),), (idx.numel(), 1)):
                raise ValueError(f"the energy returned shape {tuple(e.shape)}; expected ({idx.numel()},).")
            parts.append(e.reshape(-1)[:m])
        e = torch.cat(parts)
        if not torch.isfinite(e).all():
            raise NumericalError("the energy returned NaN or inf; refusing to turn it into weights.")
        return e

    ticks = Ticks(progress, steps)  # a bar of its own, the caller's (semi-AR: one over its blocks), or none
    n_masked = int((x == mask_id).sum())  # kept on the host: a plain step reports what it revealed
    reveals = _Reveals(x, mask_id, device)
    for i in range(steps):
        ticks.update(1)
        t, s = timesteps[i], timesteps[i + 1]
        if log_p_x0 is None or not cache:
            log_p_x0 = call_denoiser(x, t)
        if use_is and sampler.in_window(t):
            reveal, proposals = sampler.propose_step(log_p_x0, x, t, s, generator)  # (B, L), (B, k, L)
            raise_on_faults(faults)  # the step syncs here anyway; before any energy reads these rows
            energies = None
            active = reveal.any(-1)  # rows where something is revealed: only they need weights
            if k > 1 and active.any():
                B = x.shape[0]
                rows = active.nonzero().squeeze(-1)  # (n,)
                n = rows.numel()
                x_0 = proposals[rows].reshape(n * k, length)  # (n·k, L), row-major: (seq, proposal)
                x_t = x[rows].repeat_interleave(k, dim=0)  # (n·k, L)
                lp_rows = log_p_x0[rows]  # lazy view of the n rows' x_θ (no copy)
                if top_p < 1.0:  # score under the distribution we drew from
                    lp_rows = sampler.proposal_log_probs(lp_rows.dense())
                elif dense_log_p_x0:
                    lp_rows = lp_rows.dense()  # (n, L, V+1) float32, for energies that read it as a tensor
                tt = torch.full((n * k,), float(t), device=device)
                energies = torch.zeros(B, k, dtype=torch.float64, device=device)
                energies[rows] = call_energy(x_0, x_t, tt, lp_rows).double().reshape(n, k)
                out.energy_evals += n * k
                out.is_steps += 1
            step = sampler.resample_step(proposals, energies, x, reveal, generator)
            if k > 1 and step.ess is not None and active.any():
                out.ess.append(float(step.ess[active].mean()))
            reveals.reset(step.x_s)
        else:
            step = sampler.apply(log_p_x0, x, *reveals.decide(sampler, t, s, generator))
        if step.changed:
            log_p_x0 = None
        x = step.x_s
        if step.changed:
            n_masked = n_masked - step.revealed if step.revealed is not None else int((x == mask_id).sum())
            if n_masked == 0:
                break  # every position is revealed: the remaining steps are identities

    ticks.finish()  # steps skipped after the last reveal count as done
    if n_masked:  # noise removal (SPEC 1.6)
        if log_p_x0 is None or not cache:
            log_p_x0 = call_denoiser(x, timesteps[-1])
        x = sampler.finish(log_p_x0, x)
    raise_on_faults(faults)
    return out.done(x, start, device)
