"""SUBS parameterisation of the denoiser (SPEC 1.3)."""

from __future__ import annotations

import torch
from torch import Tensor

from edlm.diffusion.categorical import draw_rows
from edlm.errors import NumericalError

__all__ = ["subs_log_probs", "log_likelihood_of", "SubsLogProbs", "raise_on_faults"]


def _check(logits: Tensor, x_t: Tensor, mask_id: int) -> None:
    if logits.shape[:-1] != x_t.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match tokens {tuple(x_t.shape)}.")
    if not 0 <= mask_id < logits.shape[-1]:
        raise ValueError(f"mask_id {mask_id} is out of range for {logits.shape[-1]} classes.")


def subs_log_probs(logits: Tensor, x_t: Tensor, mask_id: int) -> Tensor:
    """log x_θ(· | x_t) under SUBS (SPEC 1.3).

    (a) zero-masking: the ``[MASK]`` logit is −∞; (b) carry-over: where x_tⁱ ≠ m the distribution
    is one-hot(x_tⁱ). Never writes into ``logits``.

    Args:
        logits: raw network output, (B, L, V+1), any float dtype.
        x_t: noisy tokens, LongTensor (B, L).
        mask_id: the ``[MASK]`` id.

    Returns:
        float32 log-probabilities, (B, L, V+1); −∞ off the support.
    """
    _check(logits, x_t, mask_id)
    work = logits.float()  # a new tensor when the input is bf16/fp16; the same one when fp32
    if work is logits or work.requires_grad:
        mask_col = torch.tensor([mask_id], device=logits.device)
        work = work.index_fill(-1, mask_col, float("-inf"))  # SPEC 1.3(a), out of place
    else:
        work[..., mask_id] = float("-inf")  # SPEC 1.3(a), in our own copy: no extra full pass
    log_p = torch.log_softmax(work, dim=-1)  # (B, L, V+1)
    unmasked = x_t != mask_id  # (B, L)
    if log_p.requires_grad:  # out-of-place, for autograd
        carry = torch.full_like(log_p, float("-inf")).scatter_(-1, x_t[..., None], 0.0)  # log one-hot
        return torch.where(unmasked[..., None], carry, log_p)  # SPEC 1.3(b)
    b, i = unmasked.nonzero(as_tuple=True)  # only the unmasked rows are rewritten, in place
    log_p[b, i] = float("-inf")
    log_p[b, i, x_t[b, i]] = 0.0  # SPEC 1.3(b): one-hot(x_tⁱ) in log space
    return log_p


def log_likelihood_of(logits: Tensor, x_0: Tensor, mask_id: int) -> Tensor:
    """log x_θⁱ(x_0ⁱ | x_t) at every position, from raw logits, without building (B, L, V+1) log-probs.

    Equal to ``subs_log_probs(logits, x_t, mask_id).gather(-1, x_0)`` at masked positions (the only
    ones the NELBO uses). Returns float32 (B, L).
    """
    _check(logits, x_0, mask_id)
    logits = logits.float()
    mask_col = torch.tensor([mask_id], device=logits.device)
    lse = torch.logsumexp(logits.index_fill(-1, mask_col, float("-inf")), dim=-1)  # (B, L)
    return logits.gather(-1, x_0[..., None]).squeeze(-1) - lse


def raise_on_faults(faults: Tensor | None) -> None:
    """Raise ``NumericalError`` for NaN / +inf denoiser logits: at once for None, else if ``faults`` is set (one
    host sync)."""
    if faults is None or bool(faults):
        raise NumericalError("denoiser logits contain NaN or +inf; refusing to turn them into samples.")


class SubsLogProbs:
    """log x_θ(· | x_t) under SUBS (SPEC 1.3), normalised only where it is read.

    ``generate`` reads few rows of x_θ per denoiser call: the positions a plain step reveals (about L/T
    per sequence), the masked positions of an importance-sampling step, log x_θ(x̂_0) at the proposals'
    tokens (the AR energy), and the masked positions' argmax at the end. This object keeps the raw
    logits (bf16 on a GPU) and works on those rows only, instead of ``subs_log_probs``'s float32
    (B, L, V+1) tensor per call (18.7 ms of a 21.7 ms compiled forward at B = 32, L = 1024 on an H100,
    docs/performance.md): ``lp.sample(where, u)`` draws straight from the logits rows in
    float64, and ``lp[where]`` gives their float32 log-probabilities, the values of
    ``subs_log_probs(logits, x_t, mask_id)`` at those rows (the same float32 log-softmax).

    It supports the tensor operations the samplers and ``AREnergy`` use: ``lp[where]`` with a (B, L)
    bool mask or its ``nonzero`` indices (b, i) → (n, V+1) rows; ``lp[seqs]`` with a (N,) index → the same
    object over those sequences (no copy); ``lp.gather(-1, index)``; ``lp.dense()`` → the full tensor; and ``lp.sample``. Rows it
    reads are checked: NaN or +inf logits there raise ``NumericalError`` (rows that are never read cannot
    affect a sample and are not checked). Never writes into ``logits``.

    Args:
        logits: raw network output (B, L, V+1), any float dtype.
        x_t: noisy tokens (B, L).
        mask_id: the ``[MASK]`` id.
        faults: optional 0-dim bool tensor on the logits' device. Given, a NaN / +inf row sets it instead of
            raising at once, so reading rows needs no host sync; the owner (``generate``) checks it with
            ``raise_on_faults`` where it syncs anyway, and before it returns.
    """

    def __init__(self, logits: Tensor, x_t: Tensor, mask_id: int, faults: Tensor | None = None,
                 _seqs: Tensor | None = None, _lse: Tensor | None = None):
        if _seqs is None:
            _check(logits, x_t, mask_id)
        self.logits, self.x_t, self.mask_id, self.faults = logits, x_t, mask_id, faults
        self._seqs = _seqs  # (N,) rows of `logits` this view reads, or None for all of them
        # row log-normalisers (B, L) of the underlying logits, filled as rows are normalised (NaN = not yet)
        self._lse = _lse if _lse is not None else torch.full(logits.shape[:2], float("nan"), device=logits.device)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.x_t.shape, self.logits.shape[-1]))

    @property
    def device(self) -> torch.device:
        return self.logits.device

    dtype = torch.float32

    def dim(self) -> int:
        return 3

    def __getitem__(self, key):
        mask = isinstance(key, Tensor) and key.dtype == torch.bool and key.shape == self.x_t.shape
        if mask or isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, Tensor) and k.dim() == 1 for k in key):
            return self.rows(key)
        if isinstance(key, Tensor) and key.dtype == torch.long and key.dim() == 1:
            seqs = key if self._seqs is None else self._seqs[key]
            return SubsLogProbs(self.logits, self.x_t[key], self.mask_id, self.faults, _seqs=seqs, _lse=self._lse)
        raise TypeError("SubsLogProbs supports lp[(B, L) bool mask], lp[(b, i) positions] and lp[(N,) long index]; "
                        "use lp.dense() for anything else.")

    def _flat(self, b: Tensor, i: Tensor) -> Tensor:
        """Indices into ``logits.view(-1, V+1)`` of this view's (sequence b, position i) pairs."""
        seq = b if self._seqs is None else self._seqs[b]
        return seq * self.logits.shape[1] + i

    def _normalise(self, flat: Tensor) -> Tensor:
        """float32 log-softmax (mask column −∞) of the logits rows ``flat``; records and checks their lse."""
        z = self.logits.reshape(-1, self.logits.shape[-1]).index_select(0, flat)  # (n, V+1), our copy
        z[:, self.mask_id] = float("-inf")  # SPEC 1.3(a)
        lp = torch.log_softmax(z, dim=-1, dtype=torch.float32)
        top, j = lp.max(-1)  # lse = z_j − log p_j at any finite entry; the largest is the most accurate
        self._record(flat, z.gather(-1, j[:, None]).squeeze(-1).float() - top)
        return lp

    def _record(self, flat: Tensor, lse: Tensor) -> None:
        """Keep the log-normalisers ``lse`` of the logits rows ``flat`` for ``gather``, refusing NaN / +inf (at once,
        or through ``faults``)."""
        if self.faults is not None:
            self.faults.logical_or_(~torch.isfinite(lse).all())
        elif not torch.isfinite(lse).all():
            raise_on_faults(None)
        self._lse.view(-1)[flat] = lse.float()

    def sample(self, where: Tensor, u: Tensor, masked: bool = False) -> Tensor:
        """Exact float64 draws from x_θ at the positions ``where`` ((B, L) bool, or its ``nonzero``
        indices (b, i)), with uniforms ``u`` (n,) or (n, K) in row-major order: the ids, shaped as ``u``.

        Draws from the raw logits (``edlm.diffusion.categorical.draw_rows``, [MASK] excluded), with no
        float32 (n, V+1) log-probabilities in between; records the rows' log-normalisers for ``gather``
        and refuses NaN / +inf there. Unmasked positions give x_tⁱ (carry-over); ``masked=True`` says
        the caller knows there are none (the samplers: fewer kernels per step)."""
        b, i = where.nonzero(as_tuple=True) if isinstance(where, Tensor) else where
        flat = self._flat(b, i)
        uu = u.reshape(flat.shape[0], -1)
        ids, lse = draw_rows(self.logits.reshape(-1, self.logits.shape[-1]), uu, flat, exclude=self.mask_id)
        self._record(flat, lse)
        if not masked:
            x = self.x_t[b, i][:, None]
            ids = torch.where(x != self.mask_id, x, ids)  # SPEC 1.3(b)
        return ids.reshape(u.shape)

    def rows(self, where) -> Tensor:
        """float32 log x_θ at the positions ``where`` ((B, L) bool, in row-major order, or its (b, i)): (n, V+1)."""
        b, i = where.nonzero(as_tuple=True) if isinstance(where, Tensor) else where
        lp = self._normalise(self._flat(b, i))
        x = self.x_t[b, i]
        carry = x != self.mask_id  # SPEC 1.3(b): one-hot(x_tⁱ) at unmasked positions
        if carry.any():
            lp[carry] = float("-inf")
            lp[carry, x[carry]] = 0.0
        return lp

    def gather(self, dim: int, index: Tensor) -> Tensor:
        """log x_θ at the classes ``index`` (B, L, 1) → (B, L, 1) float32, as ``Tensor.gather(-1, index)``."""
        if dim not in (-1, 2) or index.shape[:2] != self.x_t.shape or index.dim() != 3:
            raise ValueError("SubsLogProbs.gather supports gather(-1, index) with index (B, L, K).")
        B, L = self.x_t.shape
        masked = self.x_t == self.mask_id
        b = torch.arange(B, device=index.device)[:, None].expand(B, L)
        i = torch.arange(L, device=index.device)[None, :].expand(B, L)
        flat = self._flat(b, i)  # (B, L)
        lse = self._lse.view(-1)[flat]  # (B, L)
        todo = masked & torch.isnan(lse)
        if todo.any():  # rows never normalised yet
            self._normalise(flat[todo])
            lse = self._lse.view(-1)[flat]
        z = self.logits.reshape(-1, self.logits.shape[-1])[flat[..., None], index].float()  # (B, L, K)
        out = torch.where(index == self.mask_id, float("-inf"), z - lse[..., None])  # SPEC 1.3(a)
        carry = torch.where(index == self.x_t[..., None], 0.0, float("-inf"))  # SPEC 1.3(b)
        return torch.where(masked[..., None], out, carry)

    def dense(self) -> Tensor:
        """The full float32 (B, L, V+1) tensor (= ``subs_log_probs``); what energies that read more get."""
        logits = self.logits if self._seqs is None else self.logits[self._seqs]
        return subs_log_probs(logits, self.x_t, self.mask_id)
