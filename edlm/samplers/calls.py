"""Network calls of the particle, adaptive and remasking loops: the denoiser and the energy, counted and chunked.

``generate`` (``loop.py``) keeps its own tuned calls; the loops of ``smc_loop.py`` and ``guided_loop.py`` call the
networks through ``NetworkCalls``, which applies SUBS (SPEC 1.3), checks shapes and values, counts calls in the
``GenerateOutput`` and hands an energy ``log_p_x0`` in the form it asks for (``uses_log_p_x0``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from edlm.accel.compiling import is_compiled
from edlm.diffusion.subs import SubsLogProbs
from edlm.errors import NumericalError
from edlm.samplers.base import GenerateOutput

__all__ = ["NetworkCalls"]

_LOGP_CHUNK_BYTES = 2 * 1024**3  # one float32 (chunk, L, V+1) copy stays under 2 GiB (as loop.py)


class NetworkCalls:
    """The denoiser and the energy of one ``generate`` run; every call counted in ``out``."""

    def __init__(self, denoiser, energy, out: GenerateOutput, *, vocab_size: int, mask_id: int,
                 device: torch.device, energy_batch_size: int | None = None):
        self.denoiser, self.energy, self.out = denoiser, energy, out
        self.vocab_size, self.mask_id, self.device = vocab_size, mask_id, device
        self.energy_batch_size = energy_batch_size
        self.faults = torch.zeros((), dtype=torch.bool, device=device)  # NaN / +inf in a row of x_θ that was read
        reads = getattr(energy, "uses_log_p_x0", True)
        self.reads_log_p_x0, self.dense = bool(reads), reads is True
        self.fixed_chunks = is_compiled(energy)  # a compiled energy gets one shape (the last chunk padded)

    def denoise(self, x_t: Tensor, t: Tensor) -> SubsLogProbs:
        """x_θ(· | x_t) at time t as a lazy ``SubsLogProbs`` (SPEC 1.3)."""
        logits = self.denoiser(x_t, torch.full((x_t.shape[0],), float(t), device=self.device))
        if logits.shape != (*x_t.shape, self.vocab_size + 1):
            raise ValueError(f"the denoiser returned logits of shape {tuple(logits.shape)}; expected "
                             f"{(*x_t.shape, self.vocab_size + 1)} (vocab_size + 1 for [MASK]).")
        self.out.nfe_denoiser += 1
        return SubsLogProbs(logits, x_t, self.mask_id, self.faults)

    def score(self, x_0: Tensor, x_t: Tensor, t: Tensor, log_p_x0: SubsLogProbs | None, rows: Tensor,
              filtered=None) -> Tensor:
        """Energies (N,) float64 of the sequences x_0 (N, L) against x_t (N, L) at time t; ``rows`` (N,) says which
        row of ``log_p_x0`` (x_θ of the batch) belongs to each; ``filtered``: a function that makes the rows
        ``log_p_x0`` reads nucleus-filtered (dense), or None."""
        N, L = x_0.shape
        if self.reads_log_p_x0:
            chunk = self.energy_batch_size or max(1, min(N, _LOGP_CHUNK_BYTES // (L * (self.vocab_size + 1) * 4)))
        else:
            chunk = self.energy_batch_size or N
        parts = []
        for i in range(0, N, chunk):
            idx = torch.arange(i, min(i + chunk, N), device=x_0.device)
            m = idx.numel()
            if self.fixed_chunks and m < chunk:  # pad with copies of the last sequence; their energies are dropped
                idx = torch.cat([idx, idx[-1:].expand(chunk - m)])
            lp = None
            if self.reads_log_p_x0:
                lp = log_p_x0[rows[idx]]  # a lazy view of the rows
                if filtered is not None:
                    lp = filtered(lp.dense())
                elif self.dense:
                    lp = lp.dense()  # (chunk, L, V+1) float32
            e = self.energy(x_0[idx], x_t[idx], torch.full((idx.numel(),), float(t), device=x_0.device), lp)
            self.out.nfe_energy += 1
            if e.shape not in ((idx.numel(),), (idx.numel(), 1)):
                raise ValueError(f"the energy returned shape {tuple(e.shape)}; expected ({idx.numel()},).")
            parts.append(e.reshape(-1)[:m])
        e = torch.cat(parts).double() if parts else torch.zeros(0, dtype=torch.float64, device=x_0.device)
        if not torch.isfinite(e).all():
            raise NumericalError("the energy returned NaN or inf; refusing to turn it into weights.")
        self.out.energy_evals += N
        return e

    def token_log_likelihoods(self, x_0: Tensor) -> Tensor | None:
        """Per-token log-likelihoods (N, L) of complete sequences under the energy's AR model (one call counted), or
        None for an energy that has no per-token split (``token_log_likelihoods`` absent: NCE)."""
        fn = getattr(self.energy, "token_log_likelihoods", None)
        if fn is None:
            return None
        ll = fn(x_0).double()
        self.out.nfe_energy += 1
        self.out.energy_evals += x_0.shape[0]
        if ll.shape != x_0.shape:
            raise ValueError(f"token_log_likelihoods returned shape {tuple(ll.shape)}; expected {tuple(x_0.shape)}.")
        return ll
