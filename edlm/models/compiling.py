"""``compile_networks``: torch.compile the networks of a sampler or a training run, in place."""

from __future__ import annotations

from torch import nn

__all__ = ["compile_networks"]


def compile_networks(*networks) -> None:
    """``nn.Module.compile`` each network in place, so parameters, state-dict keys and EMA swaps are
    unchanged and only the forward is compiled. Accepts modules, a `Denoiser` (its backbone is compiled:
    SUBS stays eager), an `AREnergy` (its AR model) and ``None`` (skipped). The first call of each
    input shape compiles (tens of seconds); on a GPU a DiT forward then runs ~2.4 x faster
    (benchmarks/results/speed_notes.md)."""
    for net in networks:
        if net is None:
            continue
        target = getattr(net, "backbone", None) or getattr(net, "ar_model", None) or net
        if not isinstance(target, nn.Module):
            raise TypeError(f"cannot compile {type(net).__name__}: not a torch module and holds none.")
        if getattr(target, "_compiled_call_impl", None) is None:  # compiling twice would recompile
            target.compile()
