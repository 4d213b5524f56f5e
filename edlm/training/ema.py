"""Exponential moving average of a module's weights, with clean swap-in / swap-out.

Plain tensors, not buffers: buffers would be broadcast by DDP on every forward and would land in the
backbone's state dict. The shadow copy follows the parameters' device lazily and is saved through the
LightningModule's checkpoint hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    """θ̄ ← d·θ̄ + (1 − d)·θ after every optimizer step, over the trainable parameters of ``module``.

    Args:
        module: the network whose weights are averaged (the backbone).
        decay: d in [0, 1); 0 makes the average equal the weights (EMA off).
        warmup: use d_n = min(d, (1 + n) / (10 + n)) at update n, so that the first averages do not
            keep the random initialisation for ~1/(1 − d) steps.
    """

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"`decay` must be in [0, 1), got {decay}.")
        self.module = module
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = [p.detach().clone().float() for p in self._params()]
        self._backup: list[Tensor] | None = None

    def _params(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def _follow_device(self, params: list[nn.Parameter]) -> None:
        if self.shadow and self.shadow[0].device != params[0].device:
            self.shadow = [s.to(params[0].device) for s in self.shadow]

    def current_decay(self) -> float:
        """The decay used by the next update."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (call after each optimizer step)."""
        params = self._params()
        self._follow_device(params)
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in params], weight)
        self.num_updates += 1

    @torch.no_grad()
    def swap_in(self) -> None:
        """Keep the training weights aside and load the averaged ones into the module."""
        if self._backup is not None:
            raise RuntimeError("EMA weights are already swapped in; call swap_out() first.")
        params = self._params()
        self._follow_device(params)
        self._backup = [p.detach().clone() for p in params]
        for p, s in zip(params, self.shadow):
            p.copy_(s)

    @torch.no_grad()
    def swap_out(self) -> None:
        """Put the training weights back (no-op if they were never swapped out)."""
        if self._backup is None:
            return
        for p, b in zip(self._params(), self._backup):
            p.copy_(b)
        self._backup = None

    @property
    def swapped_in(self) -> bool:
        return self._backup is not None

    @contextmanager
    def averaged(self) -> Iterator[nn.Module]:
        """``with ema.averaged() as m:`` — the module carries the EMA weights inside the block.

        Re-entrant: if the EMA weights are already in (e.g. during validation), it changes nothing.
        """
        if self.swapped_in:
            yield self.module
            return
        self.swap_in()
        try:
            yield self.module
        finally:
            self.swap_out()

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.cpu() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state has {len(state['shadow'])} tensors, the module {len(self.shadow)}.")
        device = self.shadow[0].device if self.shadow else "cpu"
        self.shadow = [s.to(device=device, dtype=torch.float32) for s in state["shadow"]]
        self.num_updates = int(state["num_updates"])
