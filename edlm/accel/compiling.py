"""``compile_networks``: torch.compile the networks of a sampler or a training run, in place."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils import _pytree

__all__ = ["GRAPH_OUTPUT_BYTES", "INFERENCE_OPTIONS", "PERSISTENT_PREFERENCE", "compile_cache_dir", "compile_networks",
           "compiled_target", "is_compiled", "pick_cache_dir", "prefer_persistent"]


INFERENCE_OPTIONS = {"triton.multi_kernel": 1}
"""Inductor options `compile_networks` adds by default. ``triton.multi_kernel``: each reduction that could run as
one persistent pass is compiled both persistent and looped, and the faster is kept on the first call. Inductor's
own rule had made the blocks' post-attention LayerNorm a looped two-pass kernel (H200, B = 32, L = 1024: 104 → 48 µs
persistent), −0.75 ms per compiled NCE call at B = 32. It changes Triton (CUDA) kernels only; on CPU it does
nothing.

With it, `compile_networks` also sets ``TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE=1`` (unless already set): in torch
2.11 / triton 3.6 a graph that inductor loads from its FX graph cache (the same network compiled again, in this
process or a later one) fails while multi-kernel looks up its cached pick (``TypeError: 'NoneType' object does not
support the context manager protocol``). `prefer_persistent` keeps the picks itself instead (`pick_cache_dir`), so a
later process does not time the candidates again: each timing takes ~40 ms of benchmarking per version, at every
reduction of every compiled graph."""


PERSISTENT_PREFERENCE = 1.15
"""With multi-kernel on, a reduction's persistent version is kept unless its looped version timed faster by more than
this factor on the first call. Multi-kernel times each version alone, on inputs left in L2 by the previous repeat,
and there the two versions of the NCE's post-attention LayerNorm time within noise of each other: in some processes
it kept the looped one, which takes 1.03-1.20 ms per NCE call at B = 32 inside the network against 0.68-0.72 ms
(H200). Forcing every persistent version instead (``triton.multi_kernel = 3``) made the NCE's final mean
0.05 → 0.52 ms, which this factor leaves looped. 1.0 is inductor's own rule."""

MULTI_KERNEL_PICKS: list[dict] = []
"""Each multi-kernel pick made in this process with `PERSISTENT_PREFERENCE` installed: the versions' kernel names,
their first-call timings (ms) and the index kept (read by the benchmarks)."""


def _is_persistent(kernel) -> bool:
    return str(getattr(kernel, "inductor_meta", {}).get("kernel_name", "")).startswith("triton_per_")


def pick_cache_dir() -> Path:
    """Where `prefer_persistent` keeps multi-kernel picks: ``picks/`` beside inductor's cache (`compile_cache_dir`), a
    file per multi-kernel named by the hash of its versions' Triton sources, size hints and device, holding the index
    kept. Deleting `compile_cache_dir`'s parent clears them with the compiled graphs."""
    return compile_cache_dir().parent / "picks"


def _pick_key(kernels) -> str | None:
    """The versions' identity: their Triton source, name, size hints and Triton meta (which holds the device's
    properties), and `PERSISTENT_PREFERENCE`; None for kernels that do not carry it. (Not ``JITFunction.cache_key``,
    which inductor's own pick cache uses: on a kernel loaded from the FX graph cache it raises.)"""
    try:
        parts = [f"{k.fn.src}|{k.inductor_meta.get('kernel_name')}|{k.size_hints!r}|{k.triton_meta!r}"
                 for k in kernels]
    except Exception:  # noqa: BLE001 - another triton's kernels: time them, keep nothing
        return None
    text = f"{torch.__version__}|{PERSISTENT_PREFERENCE}|" + ",".join(parts)
    return hashlib.sha256(text.encode()).hexdigest()


def _cached_pick(path: Path | None, n: int) -> int | None:
    if path is None or not path.is_file():
        return None
    try:
        kept = int(path.read_text())
    except (OSError, ValueError):  # a damaged entry is timed again and rewritten
        return None
    return kept if 0 <= kept < n else None


def _keep_pick(path: Path, kept: int) -> None:
    """Write the pick through a temporary file and a rename, so a process reading it never sees half of it (edlm.accel
    imports nothing from the rest of edlm, so not through ``edlm.atomic``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(str(kept))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache: the pick holds for this process
        warnings.warn(f"could not keep a multi-kernel pick ({exc}).", RuntimeWarning, stacklevel=3)


def prefer_persistent(call_cls=None) -> None:
    """Makes inductor's multi-kernel pick (``MultiKernelCall.benchmark_sub_kernels``, the timings its ``run`` takes
    the fastest of) divide the persistent versions' timings by `PERSISTENT_PREFERENCE`, once per process; records the
    picks in `MULTI_KERNEL_PICKS` and keeps them in `pick_cache_dir`, from which a later process takes them without
    timing. ``call_cls``: the class to patch (tests pass a stand-in)."""
    if call_cls is None:
        try:
            from torch._inductor.codegen.multi_kernel import MultiKernelCall as call_cls
        except ImportError:  # another torch: inductor's own rule
            return
    if vars(call_cls).get("_edlm_prefers_persistent") or not hasattr(call_cls, "benchmark_sub_kernels"):
        return
    timed = call_cls.benchmark_sub_kernels

    def benchmark_sub_kernels(self, *args, **kwargs):
        kernels = list(self.kernels)
        key = _pick_key(kernels)
        path = None if key is None else pick_cache_dir() / key
        kept = _cached_pick(path, len(kernels))
        if kept is not None:  # `run` keeps the smallest "timing"
            return [0.0 if i == kept else 1.0 for i in range(len(kernels))]
        timings = list(timed(self, *args, **kwargs))
        scaled = [t / PERSISTENT_PREFERENCE if _is_persistent(k) else t for t, k in zip(timings, kernels)]
        kept = scaled.index(min(scaled))
        MULTI_KERNEL_PICKS.append({"kernels": [k.inductor_meta.get("kernel_name") for k in kernels],
                                   "ms": [float(t) for t in timings], "kept": kept})
        if path is not None:
            _keep_pick(path, kept)
        return scaled

    call_cls.benchmark_sub_kernels = benchmark_sub_kernels
    call_cls._edlm_prefers_persistent = True


def compile_cache_dir() -> Path:
    """Where compiled networks are kept for the next process: ``$TORCHINDUCTOR_CACHE_DIR`` if set, else
    ``<edlm cache>/compile/inductor`` (the packed data's root, ``$EDLM_CACHE_DIR`` or ``~/.cache/edlm``), set as that
    variable, and Triton's kernels beside it (``$TRITON_CACHE_DIR``, else ``<edlm cache>/compile/triton``). Inductor's FX-graph and
    AOTAutograd caches live there: a later process compiling the same network at the same shapes loads its kernels
    instead of generating and building them. Called by `compile_networks` and ``compile_draws``; delete the folder to
    clear it (a torch or triton upgrade changes the keys, so stale entries are never read)."""
    root = Path(os.environ.get("EDLM_CACHE_DIR") or Path.home() / ".cache" / "edlm") / "compile"
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    return Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor")))


GRAPH_OUTPUT_BYTES = 64 * 2**20
"""With ``compile_networks(..., cuda_graphs=True)``, calls whose outputs add up to at most this many bytes replay a
CUDA graph (the output is copied out of the graph's buffer on every call): an energy's (N,) or (N, L) scores. A
denoiser's (B, L, V + 1) logits are larger (3.3 GB at B = 32, L = 1024, V = 50 257 in bf16), so its calls run as before."""


def compile_networks(*networks, mode: str | None = None, options: dict | None = None, freeze: bool = False,
                     cuda_graphs: bool = False) -> None:
    """``nn.Module.compile`` each network in place, so parameters, state-dict keys and EMA swaps are
    unchanged and only the forward is compiled. Accepts modules, a `Denoiser` (its backbone is compiled:
    SUBS stays eager), an `AREnergy` (its AR model) and ``None`` (skipped). The first call of each
    input shape compiles (tens of seconds); on a GPU a DiT forward then runs ~2.4 x faster. Shapes are
    static (``dynamic=False``): the sampling loop calls each network at one batch size (energies get
    fixed-size chunks), and static kernels are the faster ones; another batch size compiles again.

    Args:
        mode: torch.compile's (None = default; e.g. ``"max-autotune-no-cudagraphs"`` searches GEMM kernels
            for minutes). Its inductor options are applied first.
        options: inductor options on top of ``mode``'s; default `INFERENCE_OPTIONS`, ``{}`` for inductor's
            defaults (training passes ``{}``: multi-kernel was measured on forwards only).
        freeze: compile calls made without autograd with inductor's ``freezing``: the parameters are constants
            of the compiled graph, and what depends on them alone is computed once, when it compiles (an
            unconditioned DiT's or NCE's σ-map and all its adaLN modulations: 14 small GEMMs per NCE forward, 15 per
            DiT forward, and their host launches). `edlm sample --compile` freezes. On an H200: an MDLM-small
            NCE call 0.17 ms (1 %) faster at B = 32 and 0.4 ms at B = 64, the DiT's host dispatch 6.2 → 3.7 ms,
            and the host-bound shipped MDLM's T = 128 run 0.62 → 0.40 s; but peak memory rose by 0.9–1.0 GiB
            with DiT, AR and NCE frozen, the size of their bf16 weights (0.87 GiB), i.e. a second copy. Off by
            default, because a frozen graph **keeps the weights it was compiled with**: changing them in place
            afterwards (an optimiser step, ``load_state_dict``, an EMA swap) is not seen, or only in part.
            Calls with autograd on compile as without ``freeze``.
        cuda_graphs: replay each no-grad CUDA call of a new input signature (shapes, strides, dtypes, the other
            arguments) from a CUDA graph captured on its first call, if its outputs are small
            (`GRAPH_OUTPUT_BYTES`: energies, not logits). The host then launches one graph instead of ~170 kernels,
            so the GPU does not wait for it after a synchronisation (the sampler syncs after every energy call). The
            graph reads its inputs from buffers of its own (each call copies them in) and its outputs are copied
            out, so callers see ordinary tensors. Like ``freeze`` it bakes in where the weights live: in-place
            changes are seen, a parameter replaced by another tensor is not. Each signature keeps a memory pool
            of one forward's activations. Other calls (autograd on, CPU, large outputs) run as before.
    """
    compile_cache_dir()
    opts = {}
    if mode not in (None, "default"):
        from torch._inductor import list_mode_options  # here: importing inductor takes ~1 s

        opts.update(list_mode_options(mode, False))
    opts.update(INFERENCE_OPTIONS if options is None else options)
    if opts.get("triton.multi_kernel"):
        os.environ.setdefault("TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE", "1")  # see INFERENCE_OPTIONS
        if opts["triton.multi_kernel"] == 1 and torch.cuda.is_available():  # CPU compiles have no multi-kernels
            prefer_persistent()
    for net in networks:
        if net is None:
            continue
        target = compiled_target(net)
        if not isinstance(target, nn.Module):
            raise TypeError(f"cannot compile {type(net).__name__}: not a torch module and holds none.")
        if getattr(target, "_compiled_call_impl", None) is None:  # compiling twice would recompile
            target.compile(options=opts, dynamic=False)
            if freeze:
                target._compiled_call_impl = _Frozen(target._compiled_call_impl)
            if cuda_graphs:
                target._compiled_call_impl = _Graphed(target._compiled_call_impl)


class _Frozen:
    """A compiled call run with inductor's ``freezing`` on. Dynamo reads that setting from inductor's global config
    while it traces (to make the parameters graph constants), not from ``torch.compile``'s options, so it is set
    around each call (a few µs) rather than for the whole process: other compiles keep their parameters as inputs."""

    def __init__(self, call):
        # here, not at module level: importing this module must not import inductor
        from torch._inductor import config

        self.call, self.config = call, config

    def __call__(self, *args, **kwargs):
        saved, self.config.freezing = self.config.freezing, True
        try:
            return self.call(*args, **kwargs)
        finally:
            self.config.freezing = saved


class _Graphed:
    """A compiled call replayed from one CUDA graph per input signature (``compile_networks(cuda_graphs=True)``).

    The first call of a signature runs plainly (it compiles, and multi-kernel times its candidates, outside any
    capture). If its outputs are small, ``warmup`` more calls run on a side stream, as capture wants, and the call is
    captured reading from copies of the inputs. Later calls copy their inputs into those copies, replay, and return
    clones of the graph's outputs. A signature whose outputs are larger than ``max_output_bytes``, or whose capture
    fails (with a warning), keeps calling ``call``."""

    warmup = 2

    def __init__(self, call, max_output_bytes: int = GRAPH_OUTPUT_BYTES):
        self.call, self.max_output_bytes = call, max_output_bytes
        self.graphs: dict = {}  # signature -> _Capture, or None: not graphed

    def __call__(self, *args, **kwargs):
        key = _signature(args, kwargs)
        if key is None or _capturing():  # inside a caller's capture (graph_loop.py): its graph holds this call
            return self.call(*args, **kwargs)
        if key not in self.graphs:
            out, self.graphs[key] = self._record(args, kwargs)
            return out
        graph = self.graphs[key]
        return self.call(*args, **kwargs) if graph is None else graph.run(args, kwargs)

    def _record(self, args, kwargs):
        out = self.call(*args, **kwargs)
        leaves = _pytree.tree_leaves(out)
        if not all(isinstance(t, torch.Tensor) and _on_gpu(t) for t in leaves) or \
                sum(t.numel() * t.element_size() for t in leaves) > self.max_output_bytes:
            return out, None
        try:
            self._warm(args, kwargs)
            return out, self.capture(self.call, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - an op that cannot be captured: this signature runs ungraphed
            warnings.warn(f"CUDA graph capture failed ({type(exc).__name__}: {exc}); calls of this signature run "
                          "without a graph.", RuntimeWarning, stacklevel=3)
            return out, None

    def _warm(self, args, kwargs) -> None:
        """``warmup`` calls on a side stream (lazy per-stream set-up happens there, not in the capture)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.call(*args, **kwargs)
        torch.cuda.current_stream().wait_stream(side)


class _Capture:
    """One captured call: copies of its input tensors, the graph, and the graph's output tensors."""

    def __init__(self, call, args, kwargs):
        flat, spec = _pytree.tree_flatten((args, kwargs))
        self.inputs = [t.clone() for t in flat if isinstance(t, torch.Tensor)]
        it = iter(self.inputs)
        s_args, s_kwargs = _pytree.tree_unflatten([next(it) if isinstance(t, torch.Tensor) else t for t in flat], spec)
        self.outputs = self._capture(call, s_args, s_kwargs)

    def _capture(self, call, args, kwargs):
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            return call(*args, **kwargs)

    def _replay(self) -> None:
        self.graph.replay()

    def run(self, args, kwargs):
        tensors = [t for t in _pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        for dst, src in zip(self.inputs, tensors):
            dst.copy_(src)
        self._replay()
        return _pytree.tree_map(lambda t: t.clone(), self.outputs)  # the next replay overwrites self.outputs


_Graphed.capture = _Capture


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _on_gpu(t: torch.Tensor) -> bool:
    return t.is_cuda


def _signature(args, kwargs):
    """What a captured graph depends on, or None when the call must not be graphed: autograd on, a tensor off the
    GPU or needing grad, no tensor at all, or an argument that is neither a tensor nor a plain constant."""
    if torch.is_grad_enabled():
        return None
    flat, spec = _pytree.tree_flatten((args, kwargs))
    key, any_tensor = [], False
    for t in flat:
        if isinstance(t, torch.Tensor):
            if not _on_gpu(t) or t.requires_grad:
                return None
            any_tensor = True
            key.append((tuple(t.shape), t.stride(), t.dtype, t.device))
        elif t is None or isinstance(t, (bool, int, float, str)):
            key.append(t)
        else:
            return None
    # inference mode too: buffers made under it cannot be written outside it
    return (str(spec), torch.is_inference_mode_enabled(), *key) if any_tensor else None


def compiled_target(net):
    """The module whose forward runs the network, which `compile_networks` compiles: a Denoiser's backbone, an
    AREnergy's AR model, or ``net`` itself."""
    return getattr(net, "backbone", None) or getattr(net, "ar_model", None) or net


def is_compiled(net) -> bool:
    """True when ``compile_networks`` (or ``nn.Module.compile``) compiled ``net``'s network in place."""
    return net is not None and getattr(compiled_target(net), "_compiled_call_impl", None) is not None
