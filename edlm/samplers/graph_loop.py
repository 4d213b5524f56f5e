"""``generate(..., graph=True)``: MDLM, and EDLM importance sampling (SPEC 2.5), with every reveal decided before the
first network call, so that each step is the same fixed-shape device work, captured once as a CUDA graph and replayed.

At small batch the eager loop is bound by the host: per step it launches the denoiser's kernels, decides the
reveals (a ``nonzero``, i.e. a host sync) and draws the revealed tokens, and the GPU waits for it. Here the host
launches one graph per step and never waits inside the loop.

Why the decisions can be made up front (SPEC 1.4): on t → s a masked position is revealed with probability
r = (α_s − α_t)/(1 − α_t), independently of x_θ and of the other positions. Over the grid t_0 = 1 > … > t_T the
chance that a position is still masked after step j telescopes to S_j = (1 − α(t_{j+1}))/(1 − α(t_0)), so the step
that reveals it is drawn from one uniform u: the number of j with S_j > u (T, under noise removal, means never:
the argmax at the end). Its token uniform is drawn up front as well. The same holds inside the importance-sampling
window: SPEC 2.5 only replaces x_θ by the one-hot of the picked proposal before the reverse step, and the reveals do
not read x_θ.

Steps that reveal nothing in any sequence are skipped. They change nothing, so this is MDLM's cache (SPEC 1.6) for a
denoiser without time conditioning, and exact as well for one with it (the eager loop calls it and discards the
result); an importance-sampled step that reveals nothing changes nothing either. Every other step reveals a known set
of positions; padded to the largest set with copies of its first entry (the same position and uniform, so the same
draw is written twice), they form an (n_steps, M) table. A step reads its row of the table through a step counter on
the device, calls the denoiser, and writes those M positions of x: outside the window exact float64 draws at those
rows of the logits (``draw_rows``), inside it (with an energy and k > 1) the tokens of the proposal that importance
sampling picks (``graph_is.ImportanceReveal``: k proposals, one batched energy call, the pick, all on the device).
It then advances the counter: no shape or decision depends on the host. The two kinds of step are two graphs, each
captured once, sharing the counter. On CUDA they are captured and replayed; elsewhere (and if a network cannot be
captured) the same functions run eagerly, which is the reference the graphs must reproduce.

The draws follow the eager loop's distribution exactly, but not its tokens for a given seed: the random numbers are
drawn in another order (tests/samplers/test_graph_loop.py and test_graph_is.py compare the distributions on the
exact toy).
"""

from __future__ import annotations

import time
import warnings

import torch
from torch import Tensor

from edlm.accel.policy import captures_steps
from edlm.diffusion.categorical import draw_rows, uniform64
from edlm.diffusion.subs import SubsLogProbs, raise_on_faults
from edlm.samplers.base import GenerateOutput, Ticks
from edlm.samplers.graph_is import ImportanceReveal
from edlm.samplers.importance import ImportanceSampler

__all__ = ["plan_reveals", "generate_graphed"]


def plan_reveals(masked: Tensor, timesteps: Tensor, schedule, generator: torch.Generator | None) -> Tensor:
    """The step at which each masked position is revealed, drawn at once: (B, L) long; T = never (left for noise
    removal), T + 1 at positions that are not masked. ``timesteps``: the (T + 1,) grid."""
    T = timesteps.numel() - 1
    alpha = schedule.alpha(timesteps.to(device=masked.device, dtype=torch.float64))
    survive = (1.0 - alpha[1:]) / (1.0 - alpha[0])  # (T,) P(still masked after step j), decreasing
    u = uniform64(tuple(masked.shape), generator, masked.device)
    # the number of steps j with S_j > u: T minus those with S_j <= u (searched in the ascending order)
    survived = torch.searchsorted(survive.flip(0).contiguous(), u.reshape(-1), right=True).reshape(masked.shape)
    return torch.where(masked, T - survived, T + 1)


class _Plan:
    """The steps that reveal something, as device tables: flat positions (n, M), their token uniforms (n, M) and the
    steps' start times (n,); ``steps`` (n,) their indices on the grid (host)."""

    def __init__(self, when: Tensor, token_u: Tensor, timesteps: Tensor):
        T = timesteps.numel() - 1
        device = when.device
        counts = torch.bincount(when.reshape(-1), minlength=T + 2)  # per step; then never; then not masked
        counts_host = counts.cpu()  # the loop's one host sync before its last step
        self.left = int(counts_host[T])  # masked positions that no step reveals
        counts, counts_host = counts[:T], counts_host[:T]
        self.steps = counts_host.nonzero().squeeze(-1)  # (n,) grid steps that reveal something
        n = self.steps.numel()
        self.width = int(counts_host.max()) if n else 0
        if n == 0:
            return
        flat_when = when.reshape(-1)
        order = torch.argsort(flat_when, stable=True)[: int(counts_host.sum())]  # revealed positions by step
        step_of = flat_when[order]
        starts = torch.cumsum(counts, 0) - counts  # each step's first slot in `order`
        row_of_step = torch.cumsum(counts > 0, 0) - 1  # grid step -> row of the tables
        rank = torch.arange(order.numel(), device=device) - starts[step_of]
        table = torch.full((n, self.width), -1, dtype=torch.long, device=device)
        table[row_of_step[step_of], rank] = order
        self.positions = torch.where(table >= 0, table, table[:, :1])  # padding: copies of each row's first entry
        self.uniforms = token_u.reshape(-1)[self.positions]  # (n, M) float64
        self.times = timesteps[self.steps].to(device=device, dtype=torch.float32)  # (n,) each step's t


class _Step:
    """One planned step as a function of device state only: x (B, L) is updated in place, the counter (shared by
    the steps of a run) advances. ``importance``: the step's revealed tokens come from the proposal it picks
    (``graph_is.ImportanceReveal``, inside the window), else from exact draws of x_θ at the planned rows."""

    def __init__(self, denoiser, x: Tensor, plan: _Plan, vocab_size: int, mask_id: int, counter: Tensor,
                 faults: Tensor, importance: ImportanceReveal | None = None):
        self.denoiser, self.x, self.plan, self.importance = denoiser, x, plan, importance
        self.V1, self.mask_id = vocab_size + 1, mask_id
        self.counter, self.faults = counter, faults
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self) -> None:
        p, B = self.plan, self.x.shape[0]
        where = p.positions.index_select(0, self.counter).reshape(-1)  # (M,) flat positions
        t = p.times.index_select(0, self.counter)  # (1,)
        logits = self.denoiser(self.x, t.expand(B))
        if logits.shape != (*self.x.shape, self.V1):
            raise ValueError(f"the denoiser returned logits of shape {tuple(logits.shape)}; expected "
                             f"{(*self.x.shape, self.V1)} (vocab_size + 1 for [MASK]).")
        if self.importance is not None:
            self.importance.reveal(self.x, logits, where, t, self.faults)
        else:
            u = p.uniforms.index_select(0, self.counter).reshape(-1, 1)  # (M, 1)
            ids, lse = draw_rows(logits.reshape(-1, self.V1), u, index=where, exclude=self.mask_id)
            self.faults.logical_or_(~torch.isfinite(lse).all())
            self.x.view(-1).index_copy_(0, where, ids.reshape(-1))  # duplicate (padding) entries write the same id
        self.counter.add_(1)

    def capture(self) -> bool:
        """Record one step as a CUDA graph (after the caller ran a step of this kind eagerly: lazy initialisations
        and compilations happen outside the capture). False, with a warning, if a network cannot be captured."""
        graph = torch.cuda.CUDAGraph()
        state = (self.x, self.counter, self.faults, *(self.importance.state if self.importance else ()))
        saved = tuple(tensor.clone() for tensor in state)
        # every capture registers the device's default generator; one that fails never ends that registration, and
        # the generator then refuses to draw: its state is put back from this copy
        rng = torch.cuda.default_generators[self.x.device.index if self.x.device.index is not None
                                            else torch.cuda.current_device()]
        rng_saved = rng.clone_state()
        try:
            with torch.cuda.graph(graph):
                self()
        except Exception as exc:  # a kernel that syncs or allocates outside the pool: run the steps eagerly
            warnings.warn(f"graph=True: the step could not be captured as a CUDA graph ({type(exc).__name__}: "
                          f"{exc}); running it eagerly.", RuntimeWarning, stacklevel=3)
            torch.cuda.synchronize(self.x.device)
            rng.graphsafe_set_state(rng_saved)
            return False
        finally:  # a capture records without running, but restore the state in case a kernel ran
            for tensor, before in zip(state, saved):
                tensor.copy_(before)
        self.graph = graph
        return True

    def run(self) -> None:
        if self.importance is not None:  # its uniforms, drawn outside the graph
            self.importance.draw_uniforms()
        if self.graph is not None:
            self.graph.replay()
        else:
            self()


@torch.no_grad()
def generate_graphed(denoiser, x: Tensor, steps: int, *, vocab_size: int, mask_id: int,
                     generator: torch.Generator | None, sampler: ImportanceSampler, device: torch.device,
                     energy=None, energy_batch_size: int | None = None, progress=False) -> GenerateOutput:
    """Sampling from ``x`` (B, L) with the reveals planned up front (module docstring); ``sampler`` gives the
    schedule, the grid, noise removal and, with an ``energy`` and k > 1, the importance-sampling window, k and τ.
    Called by ``generate`` (which checks the arguments)."""
    start = time.perf_counter()
    timesteps = sampler.set_timesteps(steps, device="cpu")
    masked = x == mask_id
    when = plan_reveals(masked, timesteps, sampler.schedule, generator)
    token_u = uniform64(tuple(x.shape), generator, device)  # one token uniform per position
    plan = _Plan(when, token_u, timesteps)
    out = GenerateOutput(tokens=x, nfe_denoiser=0, nfe_energy=0, steps=steps)
    n = plan.steps.numel()
    # which planned steps are importance-sampled (SPEC 2.5; k = 1 is MDLM: no energy, no extra draws)
    weighted = [energy is not None and sampler.k > 1 and sampler.in_window(timesteps[j]) for j in plan.steps.tolist()]
    counter = torch.zeros(1, dtype=torch.long, device=x.device)  # the row of the plan the next step reads
    faults = torch.zeros((), dtype=torch.bool, device=x.device)
    importance = ImportanceReveal(energy, x, k=sampler.k, temperature=sampler.temperature, vocab_size=vocab_size,
                                  mask_id=mask_id, generator=generator, n_steps=sum(weighted),
                                  energy_batch_size=energy_batch_size) if any(weighted) else None
    kinds = (_Step(denoiser, x, plan, vocab_size, mask_id, counter, faults),  # two graphs, each captured once
             _Step(denoiser, x, plan, vocab_size, mask_id, counter, faults, importance))
    ran = [0, 0]
    ticks = Ticks(progress, steps)
    for i in range(n):
        step = kinds[weighted[i]]
        if ran[weighted[i]] == 1 and captures_steps(device):  # after one eager step (it compiled what it uses)
            torch.cuda.current_stream(device).synchronize()
            step.capture()
        step.run()
        ran[weighted[i]] += 1
        ticks.update(int(plan.steps[i]) + 1 - ticks.done)  # the skipped steps before this one count as done
    ticks.finish()
    out.nfe_denoiser = n
    if importance is not None:
        out.is_steps = ran[1]
        out.nfe_energy, out.energy_evals = ran[1] * importance.calls, ran[1] * importance.evals
    if plan.left:  # noise removal (SPEC 1.6): the argmax of x_θ at the positions no step revealed
        t_end = torch.full((x.shape[0],), float(timesteps[-1]), device=device)
        x = sampler.finish(SubsLogProbs(denoiser(x, t_end), x, mask_id), x)
        out.nfe_denoiser += 1
    raise_on_faults(faults)
    if importance is not None:
        importance.check_energies()
        out.ess = importance.ess[: ran[1]].tolist()
    return out.done(x, start, device)
