"""Named outputs shared by the samplers and the generation loop."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["StepOutput", "GenerateOutput", "Ticks"]


@dataclass
class StepOutput:
    """The result of one reverse step t → s."""

    x_s: Tensor  # (B, L) tokens after the step
    changed: bool  # did any position of any sequence get revealed? (False: x_θ may be reused)
    ess: Tensor | None = None  # (B,) effective sample size of the importance weights (IS steps only)
    revealed: int | None = None  # positions revealed, when the step knows it without another host sync
    x_0: Tensor | None = None  # (B, L) the proposal x̂_0 the step revealed from (IS steps only)


@dataclass
class GenerateOutput:
    """What ``edlm.generate`` returns."""

    tokens: Tensor  # (B, L) LongTensor, no mask id left
    nfe_denoiser: int  # batched denoiser calls
    nfe_energy: int  # batched energy calls (a chunk counts as one call)
    energy_evals: int = 0  # sequences scored by the energy (B_active · k summed over IS steps)
    seconds: float = 0.0  # wall-clock time of the whole loop
    steps: int = 0  # T
    is_steps: int = 0  # steps taken inside the importance-sampling window with k > 1
    ess: list[float] = field(default_factory=list)  # mean effective sample size at each IS step
    log_z: Tensor | None = None  # (B,) SMC only: log of the normalising-constant estimate Ẑ of each sequence
    energy_spent: Tensor | None = None  # (B,) adaptive only: energy evaluations spent on each sequence
    resampled: int = 0  # SMC only: resampling events (sequence × step)

    def done(self, tokens: Tensor, start: float, device: torch.device) -> GenerateOutput:
        """Itself with the final ``tokens``, and ``seconds`` since ``start`` (``time.perf_counter``) once the device's
        queued work has finished."""
        self.tokens = tokens
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.seconds = time.perf_counter() - start
        return self


class Ticks:
    """A loop's progress: one ``update(1)`` per step; ``finish`` adds the steps an early end skipped. ``progress``:
    True for a bar of its own (closed by ``finish``), a caller's tqdm-like bar (semi-AR: one bar over all its
    blocks), or a falsy value for none."""

    def __init__(self, progress, steps: int):
        self.steps, self.done, self.own = steps, 0, None
        if progress and not hasattr(progress, "update"):
            from tqdm.auto import tqdm

            self.own = tqdm(total=steps, desc="sampling", unit="step", leave=False)
        self.bar = self.own if self.own is not None else (progress or None)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def finish(self) -> None:
        if self.done < self.steps:
            self.update(self.steps - self.done)
        if self.own is not None:
            self.own.close()
