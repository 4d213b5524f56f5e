"""cuBLASLt's algorithm list for one GEMM, through ctypes: y = epilogue(x · Wᵀ + bias), row-major torch tensors.

PyTorch asks cuBLASLt's heuristic for one algorithm per GEMM and runs it. The heuristic ranks its candidates by a
model of the plain GEMM, so for a GEMM with an epilogue (tanh-GELU + bias: the MLP's up projection) a lower-ranked
candidate may be faster on the card. This module asks for up to ``count`` candidates and runs any one of them on the
current stream, and `Tuner` times them against torch's own call.

GPU only; nothing here runs on import. The library is the one that torch's CUDA build loaded, found in
``/proc/self/maps``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from dataclasses import dataclass

import torch
from torch import Tensor

# cublasLt.h / library_types.h constants (CUDA 12 and 13)
_COMPUTE_32F, _R_32F, _R_16F, _R_16BF = 68, 0, 2, 14
_OP_N, _OP_T = 0, 1
_DESC_TRANSA, _DESC_TRANSB, _DESC_EPILOGUE, _DESC_BIAS_POINTER, _DESC_BIAS_DATA_TYPE = 3, 4, 7, 8, 26
_PREF_MAX_WORKSPACE_BYTES = 1
_ALGO_CONFIG_TILE_ID, _ALGO_CONFIG_STAGES_ID, _ALGO_CONFIG_CLUSTER_SHAPE_ID = 1, 6, 8
EPILOGUES = {"none": 1, "bias": 4, "gelu_bias": 36}  # DEFAULT, BIAS, GELU | BIAS (tanh approximation)
_TYPES = {torch.float16: _R_16F, torch.bfloat16: _R_16BF}
WORKSPACE_BYTES = 32 << 20  # what torch gives cuBLASLt on Hopper


class _Algo(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64 * 8)]


class _Heuristic(ctypes.Structure):
    _fields_ = [("algo", _Algo), ("workspace_size", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


def _loaded_path() -> str | None:
    """The libcublasLt that this process has mapped (torch's CUDA build links it), or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if "libcublasLt.so" in path:
                    return path
    except OSError:
        return None
    return None


@functools.cache
def _lib():
    if not torch.cuda.is_available():
        raise RuntimeError("cuBLASLt needs a CUDA device.")
    torch.cuda.init()
    x = torch.ones(16, 16, device="cuda", dtype=torch.bfloat16)
    torch.nn.functional.linear(x, x, x[0])  # a bias GEMM: torch runs it through cuBLASLt, so the library is loaded
    path = _loaded_path()
    if path is None:
        raise RuntimeError("libcublasLt is not loaded in this process (is torch a CUDA build?).")
    return ctypes.CDLL(path)


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"cuBLASLt {what} failed with status {status}.")


def _set(fn, obj, attr: int, value) -> None:
    _check(fn(obj, attr, ctypes.byref(value), ctypes.sizeof(value)), f"attribute {attr}")


@functools.cache
def _handle(device: int) -> ctypes.c_void_p:
    lib, handle = _lib(), ctypes.c_void_p()
    with torch.cuda.device(device):
        _check(lib.cublasLtCreate(ctypes.byref(handle)), "create")
    return handle


@functools.cache
def _workspace(device: int) -> Tensor:
    return torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=f"cuda:{device}")


@dataclass(frozen=True)
class Problem:
    """y (m, n) = epilogue(x (m, k) · w (n, k)ᵀ + bias (n)), all contiguous, ``dtype`` in and out."""

    m: int
    n: int
    k: int
    epilogue: str = "none"
    dtype: torch.dtype = torch.bfloat16


class Gemm:
    """The cuBLASLt descriptors of one `Problem` and its heuristic's candidates (``algos``).

    Row-major y = x·wᵀ is column-major yᵀ = w·xᵀ: cuBLASLt's A is w (stored k × n, transposed), B is xᵀ (k × m),
    D is yᵀ (n × m), and the bias runs along D's rows (n), which is what its BIAS epilogues want."""

    def __init__(self, problem: Problem, device: int = 0, count: int = 32):
        if problem.epilogue not in EPILOGUES:
            raise ValueError(f"unknown epilogue {problem.epilogue!r}; expected one of {sorted(EPILOGUES)}")
        if problem.dtype not in _TYPES:
            raise ValueError(f"cuBLASLt GEMMs here take float16 or bfloat16, not {problem.dtype}")
        self.problem, self.device, lib = problem, device, _lib()
        self.handle = _handle(device)
        m, n, k, t = problem.m, problem.n, problem.k, _TYPES[problem.dtype]
        self.desc = ctypes.c_void_p()
        _check(lib.cublasLtMatmulDescCreate(ctypes.byref(self.desc), _COMPUTE_32F, _R_32F), "desc create")
        _set(lib.cublasLtMatmulDescSetAttribute, self.desc, _DESC_TRANSA, ctypes.c_int32(_OP_T))
        _set(lib.cublasLtMatmulDescSetAttribute, self.desc, _DESC_TRANSB, ctypes.c_int32(_OP_N))
        _set(lib.cublasLtMatmulDescSetAttribute, self.desc, _DESC_EPILOGUE,
             ctypes.c_uint32(EPILOGUES[problem.epilogue]))
        if problem.epilogue != "none":
            _set(lib.cublasLtMatmulDescSetAttribute, self.desc, _DESC_BIAS_DATA_TYPE, ctypes.c_int32(t))
        self.layouts = []
        for rows, cols in ((k, n), (k, m), (n, m)):  # A = w, B = xᵀ, C = D = yᵀ
            layout = ctypes.c_void_p()
            _check(lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), t, ctypes.c_uint64(rows),
                                                  ctypes.c_uint64(cols), ctypes.c_int64(rows)), "layout")
            self.layouts.append(layout)
        self.algos = self._heuristic(count)

    def _heuristic(self, count: int) -> list[_Heuristic]:
        lib, pref = _lib(), ctypes.c_void_p()
        _check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "preference")
        _set(lib.cublasLtMatmulPreferenceSetAttribute, pref, _PREF_MAX_WORKSPACE_BYTES,
             ctypes.c_uint64(WORKSPACE_BYTES))
        results, returned = (_Heuristic * count)(), ctypes.c_int(0)
        if self.problem.epilogue != "none":  # the heuristic checks the bias pointer's alignment: give it one
            self._bias_pointer(_workspace(self.device).data_ptr())
        a, b, d = self.layouts
        _check(lib.cublasLtMatmulAlgoGetHeuristic(self.handle, self.desc, a, b, d, d, pref, count, results,
                                                  ctypes.byref(returned)), "heuristic")
        lib.cublasLtMatmulPreferenceDestroy(pref)
        return [results[i] for i in range(returned.value) if results[i].state == 0]

    def _bias_pointer(self, ptr: int) -> None:
        _set(_lib().cublasLtMatmulDescSetAttribute, self.desc, _DESC_BIAS_POINTER, ctypes.c_void_p(ptr))

    def describe(self, i: int) -> dict:
        """Tile, stages and cluster ids of candidate ``i`` (cuBLASLt's enums), with its workspace and waves."""
        lib, out = _lib(), {}
        for name, attr in (("tile", _ALGO_CONFIG_TILE_ID), ("stages", _ALGO_CONFIG_STAGES_ID),
                           ("cluster", _ALGO_CONFIG_CLUSTER_SHAPE_ID)):
            algo, size = ctypes.byref(self.algos[i].algo), ctypes.c_size_t(0)
            lib.cublasLtMatmulAlgoConfigGetAttribute(algo, attr, None, 0, ctypes.byref(size))  # its size first
            value = ctypes.c_uint64(0)
            ok = 0 < size.value <= 8 and lib.cublasLtMatmulAlgoConfigGetAttribute(
                algo, attr, ctypes.byref(value), size.value, ctypes.byref(size)) == 0
            out[name] = int(value.value) if ok else None
        out["workspace"] = int(self.algos[i].workspace_size)
        out["waves"] = float(self.algos[i].waves)
        return out

    def __call__(self, x: Tensor, w: Tensor, bias: Tensor | None = None, algo: int = 0,
                 out: Tensor | None = None) -> Tensor:
        """Runs candidate ``algo`` on the current stream: x (m, k), w (n, k), bias (n,) -> (m, n)."""
        p = self.problem
        if x.shape != (p.m, p.k) or w.shape != (p.n, p.k) or not (x.is_contiguous() and w.is_contiguous()):
            raise ValueError(f"expected contiguous x {(p.m, p.k)} and w {(p.n, p.k)}, got {tuple(x.shape)} and "
                             f"{tuple(w.shape)}")
        if (bias is None) != (p.epilogue == "none"):
            raise ValueError(f"epilogue {p.epilogue!r} {'takes no' if bias is not None else 'needs a'} bias")
        y = torch.empty(p.m, p.n, dtype=p.dtype, device=x.device) if out is None else out
        self.launch(x, w, bias, algo, y)
        return y

    def launch(self, x: Tensor, w: Tensor, bias: Tensor | None, algo: int, y: Tensor) -> None:
        """`__call__` without its checks (`Tuner` checked the shapes when it built this GEMM): y = epilogue(x·wᵀ +
        bias) on the current stream. The host's share of a network call matters (the DiT's forward is not replayed
        from a CUDA graph), so the ctypes arguments are made once, in `_bind`."""
        if self._args is None:
            self._bind()
        lib, args = _lib(), self._args
        if bias is not None:
            self._bias.value = bias.data_ptr()
            lib.cublasLtMatmulDescSetAttribute(self.desc, _DESC_BIAS_POINTER, self._bias_ref, 8)
        y_ptr = y.data_ptr()
        status = lib.cublasLtMatmul(args[0], args[1], args[2], w.data_ptr(), args[3], x.data_ptr(), args[4], args[5],
                                    y_ptr, args[6], y_ptr, args[6], self._algo_refs[algo], args[7], WORKSPACE_BYTES,
                                    self._stream(self.device))
        if status != 0:
            _check(status, "matmul")

    _args = None

    def _bind(self) -> None:
        lib = _lib()
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # what inductor's code calls; else the public way
        self._stream = raw or (lambda device: torch.cuda.current_stream(device).cuda_stream)
        lib.cublasLtMatmul.argtypes = [ctypes.c_void_p] * 14 + [ctypes.c_size_t, ctypes.c_void_p]
        lib.cublasLtMatmulDescSetAttribute.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
        self._one, self._zero, self._bias = ctypes.c_float(1.0), ctypes.c_float(0.0), ctypes.c_void_p(0)
        self._bias_ref = ctypes.addressof(self._bias)
        self._algo_refs = [ctypes.addressof(h.algo) for h in self.algos]
        a, b, d = self.layouts
        self._args = (self.handle.value, self.desc.value, ctypes.addressof(self._one), a.value, b.value,
                      ctypes.addressof(self._zero), d.value, _workspace(self.device).data_ptr())


# ----------------------------------------------------------------------------- tuned GEMMs
def reference(x: Tensor, w: Tensor, bias: Tensor | None, epilogue: str) -> Tensor:
    """What torch runs for ``epilogue(x · wᵀ + bias)``: ``F.linear``, or ``aten._addmm_activation`` for GELU + bias
    (cuBLASLt's GELU_BIAS epilogue, tanh approximation)."""
    if epilogue == "gelu_bias":
        return torch.ops.aten._addmm_activation.default(bias, x, w.t(), use_gelu=True)
    return torch.nn.functional.linear(x, w, bias if epilogue == "bias" else None)


@dataclass
class Choice:
    """What `Tuner` picked for one problem: ``algo`` is a cuBLASLt candidate's index, or -1 for torch's own call;
    ``ms`` maps each timed option to its ms per call; ``rejected`` lists candidates whose output differed."""

    algo: int
    ms: dict
    rejected: list
    gemm: Gemm | None = None


class Tuner:
    """Picks, once per problem and device, the fastest way to run it among torch's own call and cuBLASLt's
    candidates, on the first call's inputs; a candidate counts only if its output equals torch's bit for bit, so the
    networks' outputs do not change. A candidate must beat torch's call by ``margin`` (timing noise is ~1 %).

    Like PyTorch's TunableOp (which on CUDA offers only cuBLASLt's first candidate in torch 2.11), but per problem
    and in this process. One cuBLASLt workspace per device: GEMMs of two streams must not run at the same time.
    H200, a DiT block's GEMMs at 32 768 rows: the QKV GEMM 0.164 → 0.150 ms, the
    attention output 0.061 → 0.057 ms, the MLP's GELU GEMM 0.258 → 0.252 ms."""

    margin = 0.01
    calls, rounds = 10, 3

    def __init__(self):
        self.choices: dict[tuple, Choice] = {}

    def __call__(self, x: Tensor, w: Tensor, bias: Tensor | None, epilogue: str) -> Tensor:
        if w.dtype != x.dtype or (bias is not None and (bias.dtype != x.dtype or bias.stride(0) != 1)):
            return reference(x, w, bias, epilogue)  # cuBLASLt is told one dtype for all of them
        key = (x.device.index, x.shape[0], w.shape[0], x.shape[1], epilogue, x.dtype)
        choice = self.choices.get(key)
        if choice is None:
            if torch.cuda.is_current_stream_capturing():  # no timing inside a capture: torch's call is always right
                return reference(x, w, bias, epilogue)
            with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():  # events on x's device
                choice = self.choices[key] = self.tune(x, w, bias, epilogue)
        if choice.algo < 0:
            return reference(x, w, bias, epilogue)
        y = torch.empty(x.shape[0], w.shape[0], dtype=x.dtype, device=x.device)
        choice.gemm.launch(x, w, bias, choice.algo, y)
        return y

    def _ms(self, fn) -> float:
        fn()
        times = []
        for _ in range(self.rounds):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(self.calls):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / self.calls)
        return sorted(times)[len(times) // 2]

    def tune(self, x: Tensor, w: Tensor, bias: Tensor | None, epilogue: str) -> Choice:
        ref = reference(x, w, bias, epilogue)
        ms = {-1: self._ms(lambda: reference(x, w, bias, epilogue))}
        gemm = Gemm(Problem(x.shape[0], w.shape[0], x.shape[1], epilogue, x.dtype), device=x.device.index or 0)
        rejected, out = [], torch.empty_like(ref)
        for i in range(len(gemm.algos)):
            try:
                if not torch.equal(gemm(x, w, bias, algo=i, out=out), ref):
                    rejected.append(i)
                    continue
                ms[i] = self._ms(lambda i=i: gemm(x, w, bias, algo=i, out=out))
            except RuntimeError:
                rejected.append(i)
        best = min(ms, key=ms.get)
        algo = best if ms[best] < (1 - self.margin) * ms[-1] else -1
        return Choice(algo, ms, rejected, gemm)


TUNER = Tuner()


def picks(tuner: Tuner = TUNER) -> list[dict]:
    """What ``tuner`` picked so far, one dict per problem (for benchmark records): the shape, the pick (-1: torch's
    call), its ms and torch's, and the candidates rejected for a different output."""
    out = []
    for (device, m, n, k, epilogue, dtype), c in tuner.choices.items():
        out.append({"device": device, "m": m, "n": n, "k": k, "epilogue": epilogue, "dtype": str(dtype),
                    "algo": c.algo, "ms": round(c.ms[c.algo], 5), "torch_ms": round(c.ms[-1], 5),
                    "candidates": len(c.ms) - 1 + len(c.rejected), "rejected": c.rejected})
    return out
