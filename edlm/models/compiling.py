"""``compile_networks``: torch.compile the networks of a sampler or a training run, in place."""

from __future__ import annotations

import os

from torch import nn

__all__ = ["INFERENCE_OPTIONS", "compile_networks", "is_compiled"]


INFERENCE_OPTIONS = {"triton.multi_kernel": 1}
"""Inductor options `compile_networks` adds by default. ``triton.multi_kernel``: each reduction that could run as
one persistent pass is compiled both persistent and looped, and the faster is kept on the first call. Inductor's
own rule had made the blocks' post-attention LayerNorm a looped two-pass kernel (104 µs; persistent: 48 µs at
B = 32, L = 1024 on an H200), −0.75 ms per compiled NCE call at B = 32 (benchmarks/results/speed_notes.md,
session 6). It changes Triton (CUDA) kernels only; on CPU it does nothing.

With it, `compile_networks` also sets ``TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE=1`` (unless already set): in torch
2.11 / triton 3.6 a graph that inductor loads from its FX graph cache (the same network compiled again, in this
process or a later one) fails while multi-kernel looks up its cached pick (``TypeError: 'NoneType' object does not
support the context manager protocol``, benchmarks/gpu/multi_kernel_recompile.py). Without that pick cache each
process times the candidates once on its first call; the compiled graphs stay cached."""


def compile_networks(*networks, mode: str | None = None, options: dict | None = None, freeze: bool = False) -> None:
    """``nn.Module.compile`` each network in place, so parameters, state-dict keys and EMA swaps are
    unchanged and only the forward is compiled. Accepts modules, a `Denoiser` (its backbone is compiled:
    SUBS stays eager), an `AREnergy` (its AR model) and ``None`` (skipped). The first call of each
    input shape compiles (tens of seconds); on a GPU a DiT forward then runs ~2.4 x faster
    (benchmarks/results/speed_notes.md). Shapes are static (``dynamic=False``): the sampling loop calls
    each network at one batch size (energies get fixed-size chunks), and static kernels are the faster
    ones; another batch size compiles again.

    Args:
        mode: torch.compile's (None = default; e.g. ``"max-autotune-no-cudagraphs"`` searches GEMM kernels
            for minutes). Its inductor options are applied first.
        options: inductor options on top of ``mode``'s; default `INFERENCE_OPTIONS`, ``{}`` for inductor's
            defaults (training passes ``{}``: multi-kernel was measured on forwards only).
        freeze: compile calls made without autograd with inductor's ``freezing``: the parameters are constants
            of the compiled graph, and what depends on them alone is computed once, when it compiles (an
            unconditioned DiT's or NCE's σ-map and all its adaLN modulations: 14 small GEMMs per NCE forward, 15 per
            DiT forward, and their host launches). `edlm sample --compile` freezes. On an H200
            (speed_notes.md, session 7): an MDLM-small NCE call 0.17 ms (1 %) faster at B = 32 and 0.4 ms at
            B = 64, the DiT's host dispatch 6.2 → 3.7 ms, and the host-bound shipped MDLM's T = 128 run 0.62 →
            0.40 s; but peak memory rose by 0.9–1.0 GiB with DiT, AR and NCE frozen, the size of their bf16
            weights (0.87 GiB), i.e. a second copy. Off by default, because a frozen graph **keeps the weights it
            was compiled with**: changing them in place afterwards (an optimiser step, ``load_state_dict``, an
            EMA swap) is not seen, or only in part. Calls with autograd on compile as without ``freeze``.
    """
    opts = {}
    if mode not in (None, "default"):
        from torch._inductor import list_mode_options  # here: importing inductor takes ~1 s

        opts.update(list_mode_options(mode, False))
    opts.update(INFERENCE_OPTIONS if options is None else options)
    if opts.get("triton.multi_kernel"):
        os.environ.setdefault("TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE", "1")  # see INFERENCE_OPTIONS
    for net in networks:
        if net is None:
            continue
        target = _target(net)
        if not isinstance(target, nn.Module):
            raise TypeError(f"cannot compile {type(net).__name__}: not a torch module and holds none.")
        if getattr(target, "_compiled_call_impl", None) is None:  # compiling twice would recompile
            target.compile(options=opts, dynamic=False)
            if freeze:
                target._compiled_call_impl = _Frozen(target._compiled_call_impl)


class _Frozen:
    """A compiled call run with inductor's ``freezing`` on. Dynamo reads that setting from inductor's global config
    while it traces (to make the parameters graph constants), not from ``torch.compile``'s options, so it is set
    around each call (a few µs) rather than for the whole process: other compiles keep their parameters as inputs."""

    def __init__(self, call):
        # here, not at module level: importing edlm.models must not import inductor
        from torch._inductor import config

        self.call, self.config = call, config

    def __call__(self, *args, **kwargs):
        saved, self.config.freezing = self.config.freezing, True
        try:
            return self.call(*args, **kwargs)
        finally:
            self.config.freezing = saved


def _target(net):
    """The module whose forward runs the network: a Denoiser's backbone, an AREnergy's AR model, or itself."""
    return getattr(net, "backbone", None) or getattr(net, "ar_model", None) or net


def is_compiled(net) -> bool:
    """True when ``compile_networks`` (or ``nn.Module.compile``) compiled ``net``'s network in place."""
    return net is not None and getattr(_target(net), "_compiled_call_impl", None) is not None
