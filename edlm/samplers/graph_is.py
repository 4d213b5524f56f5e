"""The importance-sampled step of ``generate(..., graph=True)`` (SPEC 2.5) as fixed-shape device work.

The planned reveals of ``graph_loop.py`` hold inside the window too: SPEC 2.5 replaces x_θ by the one-hot of the
picked proposal before the reverse step 1.4, and which positions that step reveals does not read x_θ. So an
importance-sampled step is a planned step whose revealed tokens come from x̂_0^(j*) instead of x_θ:

1. k dense proposals x̂_0 ~ Π_i x_θⁱ(· | x_t), drawn exactly at every position: k uniforms per logits row, so
   ``draw_rows`` takes its fast draw (float32 block bounds, exact by rejection), as the eager step does; its rare
   exact redraws use fixed slots (``draw_rows(overflow=...)``) instead of asking the host whether there are any,
   and a step that needs more than the slots sets a device flag. Unmasked positions copy x_t (SPEC 1.3b). Drawing
   at every position rather than at the masked ones keeps the shapes fixed; in a window near t = 1 nearly every
   position is masked, so little of the draw is wasted.
2. One batched energy call on the (B·k, L) proposals (chunks, if ``energy_batch_size`` or the size of a dense
   ``log_p_x0`` asks for them, of fixed sizes).
3. log w = −E/τ − logsumexp_j(−E/τ) (``importance_log_weights``) and j* by inversion of the cumulative weights
   with one uniform per sequence.
4. The step's planned positions take the tokens of x̂_0^(j*); the other positions stay as they are.

The uniforms live in a buffer of the step's own ((B, k, L) for the tokens, then (B,) for the pick: the eager step's
layout), which ``draw_uniforms`` fills from the sampling generator before each run of the step, outside any CUDA
graph: one more launch per step, no host sync, and a graph that holds no random number generator (a generator
registered with a graph whose capture fails is left unusable, so the eager fallback could not draw from it).
Tables drawn up front would hold n_steps · B · k · L float64 (0.5 GB at B = 32, k = 2, T = L = 1024 over the
window [0, 1]).

Nothing here waits for the host. An energy that is not finite, or a draw past the redraw slots, sets a device flag,
read once after the loop (``check_energies``); the energy's own checks see the capture and leave it alone
(``AREnergy``'s [MASK] check); ``AREnergy``'s x_θ comes as ``ProposalLogProbs``, whose ``gather`` needs no host
decision (``SubsLogProbs.gather`` asks the host which rows it has not normalised yet).
"""

from __future__ import annotations

import torch
from torch import Tensor

from edlm.accel.compiling import is_compiled
from edlm.diffusion.categorical import REDRAW_SLOTS, draw_rows
from edlm.errors import NumericalError
from edlm.samplers.importance import effective_sample_size, importance_log_weights

__all__ = ["ImportanceReveal", "ProposalLogProbs"]

# an energy that reads log_p_x0 as a tensor gets one float32 (chunk, L, V+1) copy per call; as loop.py, a chunk
# stays under 2 GiB unless `energy_batch_size` says otherwise
_LOGP_CHUNK_BYTES = 2 * 1024**3


class ProposalLogProbs:
    """log x_θ of the proposals' sequences as ``AREnergy`` reads it (``uses_log_p_x0 = "gather"``): ``gather(-1,
    index)`` only, the values of ``SubsLogProbs.gather`` (SPEC 1.3), with the rows' log-normalisers known up front.

    Args:
        rows: the denoiser's logits as (B·L, V+1) rows. lse: (B·L,) float64 log-normalisers of those rows, [MASK]
            excluded (what the proposal draw returned). seqs: (N,) the sequence of the batch each proposal belongs
            to. x_t: (N, L) each proposal's x_t. mask_id: the [MASK] id.
    """

    def __init__(self, rows: Tensor, lse: Tensor, seqs: Tensor, x_t: Tensor, mask_id: int):
        self.rows, self.lse, self.seqs, self.x_t, self.mask_id = rows, lse, seqs, x_t, mask_id

    def gather(self, dim: int, index: Tensor) -> Tensor:
        """log x_θ at the classes ``index`` (N, L, K) → (N, L, K) float32, as ``Tensor.gather(-1, index)``."""
        N, L = self.x_t.shape
        if dim not in (-1, 2) or index.dim() != 3 or index.shape[:2] != (N, L):
            raise ValueError("ProposalLogProbs.gather supports gather(-1, index) with index (N, L, K).")
        flat = self.seqs[:, None] * L + torch.arange(L, device=index.device)  # (N, L) rows of the logits
        z = self.rows[flat[..., None], index].double() - self.lse[flat][..., None]  # (N, L, K)
        out = torch.where(index == self.mask_id, float("-inf"), z)  # SPEC 1.3(a)
        carry = torch.where(index == self.x_t[..., None], 0.0, float("-inf"))  # SPEC 1.3(b)
        return torch.where((self.x_t == self.mask_id)[..., None], out, carry).float()


def _dense(logits: Tensor, x_t: Tensor, mask_id: int) -> Tensor:
    """``subs_log_probs`` (SPEC 1.3) as device work alone: float32 (N, L, V+1) from logits (N, L, V+1), x_t (N, L)."""
    mask_col = torch.full((1,), mask_id, device=logits.device)  # made on the device: a capture copies no host data
    work = logits.float().index_fill(-1, mask_col, float("-inf"))  # SPEC 1.3(a)
    log_p = torch.log_softmax(work, dim=-1)
    carry = torch.full_like(log_p, float("-inf")).scatter_(-1, x_t[..., None], 0.0)  # log one-hot(x_t)
    return torch.where((x_t != mask_id)[..., None], carry, log_p)  # 1.3(b)


def _pick(log_w: Tensor, u: Tensor) -> Tensor:
    """j* ~ Categorical(exp(log_w)) per row by inversion of the cumulative weights: log_w (B, k) normalised float64,
    u (B, 1) uniforms -> (B, 1). Here rather than through ``draw_rows``: its compiled draw would add variants of its own
    (another vocabulary size, no [MASK] column), and dynamo runs a function eagerly once it has 8 variants."""
    cdf = torch.cumsum(torch.exp(log_w), dim=-1)  # (B, k)
    total = cdf[:, -1:]
    r = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))  # in [0, total): rounding guard
    return torch.searchsorted(cdf, r, right=True).clamp_max(log_w.shape[-1] - 1)  # the first j with cdf_j > r


class ImportanceReveal:
    """The reveals of a planned step inside the window, from one of k proposals picked by the energy (SPEC 2.5).

    ``draw_uniforms()`` before each step, then ``reveal(x, logits, where, t, faults)``, device work of fixed shapes:
    it reads x (B, L), the denoiser's logits (B, L, V+1), the step's planned flat positions ``where`` (M,) and its
    time t (1,), writes the picked proposal's tokens at ``where`` into x, and sets ``faults`` for NaN / +inf logits at
    a masked position. The counts a ``GenerateOutput`` reports are known on the host: ``calls`` energy calls and
    ``evals`` = B·k sequences scored per step.

    Args:
        energy: ``energy(x_0 (N, L), x_t (N, L), t (N,), log_p_x0) -> (N,)`` as ``generate`` takes it.
        x: the (B, L) tokens the loop updates in place. k: proposals per sequence (≥ 2). temperature: τ.
        vocab_size, mask_id: V (the logits have V + 1 classes) and the [MASK] id. generator: the sampling stream (on
        x's device). n_steps: importance-sampled steps of the run (the length of ``ess``). energy_batch_size:
        sequences per energy call, as ``generate``'s.
    """

    def __init__(self, energy, x: Tensor, *, k: int, temperature: float, vocab_size: int, mask_id: int,
                 generator: torch.Generator | None, n_steps: int, energy_batch_size: int | None = None):
        B, L = x.shape
        device = x.device
        self.energy, self.k, self.temperature, self.mask_id, self.generator = energy, k, temperature, mask_id, generator
        self.reads = getattr(energy, "uses_log_p_x0", True)  # True: a dense tensor; "gather": a view; False: None
        N = B * k
        if self.reads:  # a (chunk, L, V+1) float32 copy, or (AREnergy) the AR model's own logits per chunk
            chunk = energy_batch_size or max(1, _LOGP_CHUNK_BYTES // (L * (vocab_size + 1) * 4))
        else:
            chunk = energy_batch_size or N
        chunk = min(chunk, N)
        pad = is_compiled(energy)  # a compiled energy gets one shape: the last chunk padded with copies
        self.chunks = []  # (proposals of the call (n,), how many of them are kept) per energy call
        for i in range(0, N, chunk):
            idx = torch.arange(i, min(i + chunk, N), device=device)
            m = idx.numel()
            if pad and m < chunk:  # copies of the last proposal; their energies are dropped
                idx = torch.cat([idx, idx[-1:].expand(chunk - m)])
            self.chunks.append((idx, m))
        self.faults = torch.zeros((), dtype=torch.bool, device=device)  # an energy that is NaN or ±inf
        self.overflow = torch.zeros((), dtype=torch.bool, device=device)  # more rejected draws than REDRAW_SLOTS
        self.ess = torch.zeros(max(n_steps, 1), dtype=torch.float64, device=device)  # mean ESS of each step
        self.done = torch.zeros(1, dtype=torch.long, device=device)  # importance-sampled steps taken
        # one buffer of uniforms per step: the proposals' tokens (B, k, L), then the pick (B, 1), as the eager step
        self.uniforms = torch.empty(B * k * L + B, dtype=torch.float64, device=device)
        self.u_tokens = self.uniforms[: B * k * L].view(B, k, L)
        self.u_pick = self.uniforms[B * k * L:].view(B, 1)
        self.calls = len(self.chunks)  # energy calls per step
        self.evals = N  # sequences scored per step

    @property
    def state(self) -> tuple[Tensor, ...]:
        """The device state the step updates (a capture restores it)."""
        return self.faults, self.overflow, self.ess, self.done

    def draw_uniforms(self) -> None:
        """Fill the next step's uniforms from the generator (before the step runs, outside its graph)."""
        torch.rand(self.uniforms.shape, generator=self.generator, dtype=torch.float64, device=self.uniforms.device,
                   out=self.uniforms)

    def _score(self, x_0: Tensor, x_t: Tensor, t: Tensor, logits: Tensor, lse: Tensor) -> Tensor:
        """Energies (N,) float64 of the proposals x_0 (N, L) against x_t (N, L), sequence n // k's x_θ each."""
        rows = logits.reshape(-1, logits.shape[-1])
        parts = []
        for idx, m in self.chunks:
            seqs = idx // self.k  # the batch row of each proposal
            if self.reads is True:
                lp = _dense(logits[seqs], x_t[idx], self.mask_id)  # (n, L, V+1) float32
            elif self.reads:
                lp = ProposalLogProbs(rows, lse, seqs, x_t[idx], self.mask_id)
            else:
                lp = None
            e = self.energy(x_0[idx], x_t[idx], t.expand(idx.numel()), lp)
            if e.shape not in ((idx.numel(),), (idx.numel(), 1)):
                raise ValueError(f"the energy returned shape {tuple(e.shape)}; expected ({idx.numel()},).")
            parts.append(e.reshape(-1)[:m])
        return torch.cat(parts).double() if len(parts) > 1 else parts[0].double()

    def reveal(self, x: Tensor, logits: Tensor, where: Tensor, t: Tensor, faults: Tensor) -> None:
        """One importance-sampled step's reveals (module docstring), written into x."""
        B, L = x.shape
        k, V1 = self.k, logits.shape[-1]
        masked = x == self.mask_id  # (B, L)
        rows = logits.reshape(B * L, V1)
        u = self.u_tokens.transpose(1, 2).reshape(B * L, k)  # row (b, i), column j: proposal j at position (b, i)
        ids, lse = draw_rows(rows, u, exclude=self.mask_id, overflow=self.overflow)  # exact, no host sync
        faults.logical_or_(~(torch.isfinite(lse) | ~masked.view(-1)).all())  # only masked rows are read
        proposals = torch.where(masked[..., None], ids.view(B, L, k), x[..., None])  # (B, L, k); SPEC 1.3(b)
        x_0 = proposals.permute(0, 2, 1).reshape(B * k, L)  # (B·k, L), row-major: (sequence, proposal)
        x_t = x.repeat_interleave(k, dim=0)  # (B·k, L)
        e = self._score(x_0, x_t, t, logits, lse)  # (B·k,) float64
        finite = torch.isfinite(e)
        self.faults.logical_or_(~finite.all())  # read once after the loop: the weights would be NaN
        log_w = importance_log_weights(torch.where(finite, e, 0.0).view(B, k), self.temperature)  # (B, k), SPEC 2.5
        j_star = _pick(log_w, self.u_pick)  # (B, 1)
        chosen = x_0.view(B, k, L).gather(1, j_star[..., None].expand(B, 1, L)).view(-1)  # (B·L,) x̂_0^(j*)
        x.view(-1).index_copy_(0, where, chosen.index_select(0, where))  # x_θ := one-hot(x̂_0^(j*)), SPEC 1.4
        # the mean ESS over the sequences this step reveals in, as the eager loop reports it
        active = torch.zeros(B, dtype=torch.float64, device=x.device).index_fill_(0, where // L, 1.0)
        mean_ess = (effective_sample_size(log_w) * active).sum() / active.sum()
        self.ess.index_copy_(0, self.done, mean_ess.reshape(1))
        self.done.add_(1)

    def check_energies(self) -> None:
        """Raise ``NumericalError`` if an energy was NaN or ±inf at some step, or a step's proposals needed more exact
        redraws than it has slots (one host sync, after the loop)."""
        if bool(self.faults):
            raise NumericalError("the energy returned NaN or inf at an importance-sampled step; refusing its samples.")
        if bool(self.overflow):
            raise NumericalError(f"more than {REDRAW_SLOTS} proposal rows needed an exact redraw in one step (each draw "
                                 "needs one with probability ~1e-6); run again with another seed or graph=False.")
