"""Session-8 probe (issue #7) on the GPU: the NCE block's large kernels alone, at its B = 32 call (32 768 tokens,
12 × 768, head dimension 64), against the other kernels this card offers for each of them.

  PYTHONPATH=. python3 benchmarks/gpu/probe_s8.py --out $OUT/probe [--sections A,G] [--smoke]

Sections: (A) attention (B = 32, H = 12, L = 1024, Dh = 64, bf16, not causal): SDPA's cuDNN, flash and
memory-efficient kernels, on q/k/v laid out as the block makes them ((B, L, H, Dh) transposed, as ``attention``
passes them) and contiguous (B, H, L, Dh); FlexAttention (compiled, Triton) with its default blocks and a few
others. (G) the block's GEMMs (M = 32 768 rows): QKV 768 → 2304, attention out 768 → 768, MLP up 768 → 3072 with
cuBLASLt's GELU + bias epilogue, bias only and none, MLP down 3072 → 768 with bias; the weight as the module
stores it (N, K) and transposed to (K, N) contiguous; cuBLAS and cuBLASLt (``preferred_blas_library``).
Each case: ms per call back to back (median of 3 runs of 20 calls) and TFLOP/s; the largest difference to the
first case of its group.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_s4  # noqa: E402
from probe_s3 import RES  # noqa: E402
from probe_s4 import setup, streamed  # noqa: E402

CUDA = torch.cuda.is_available()


def back_to_back(fn) -> float:
    """ms per call: median of three runs of 20 calls back to back."""
    return statistics.median(streamed(fn, 20) for _ in range(3))


def case(r: dict, key: str, fn, flop: float, ref: torch.Tensor | None):
    """Times ``fn`` under ``key`` (ms, TFLOP/s, largest difference to ``ref``); returns its output (or ``ref`` when
    it failed), so that the first case of a group becomes the group's reference."""
    try:
        with torch.no_grad():
            out = fn()
            ms = back_to_back(fn)
        r[key] = {"ms": ms, "tflops": flop / ms / 1e9,
                  "max_diff": None if ref is None else float((out.float() - ref.float()).abs().max())}
    except Exception as exc:  # noqa: BLE001
        r[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        out = ref
    print(key, r[key], flush=True)
    return out if ref is None else ref


def main():
    args, out = probe_s4.parse_probe_args("A,G")
    dev, g, section_if = setup(args.sections)
    dtype = torch.bfloat16 if CUDA else torch.float32
    B, L = probe_s4.B, probe_s4.L
    H, Dh = (12, 64) if CUDA else (2, 16)
    D = H * Dh

    @section_if("A_attention")
    def _():
        from torch.nn.attention import SDPBackend, sdpa_kernel

        r = RES.setdefault("A_attention", {})
        flop = 4 * B * H * L * L * Dh
        blhd = [torch.randn(B, L, H, Dh, device=dev, dtype=dtype, generator=g) for _ in range(3)]
        layouts = {"blhd_view": [t.transpose(1, 2) for t in blhd], "bhld": [t.transpose(1, 2).contiguous() for t in blhd]}
        ref = None
        backends = [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                    ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)]
        for layout, (q, k, v) in layouts.items():
            for name, backend in backends if CUDA else backends[-1:]:
                def fn(q=q, k=k, v=v, backend=backend):
                    with sdpa_kernel(backend):
                        return F.scaled_dot_product_attention(q, k, v)
                ref = case(r, f"sdpa_{name}_{layout}", fn, flop, ref)
        try:
            from torch.nn.attention.flex_attention import flex_attention
        except ImportError as exc:
            r["flex_error"] = str(exc)
            return
        q, k, v = layouts["bhld"]
        options = {"default": None}
        if CUDA:
            options.update({f"m{m}_n{n}_w{w}_s{s}": {"BLOCK_M": m, "BLOCK_N": n, "num_warps": w, "num_stages": s}
                            for m, n, w, s in ((128, 64, 4, 3), (128, 128, 8, 2), (128, 64, 8, 3), (64, 64, 4, 3),
                                               (128, 128, 4, 2), (256, 64, 8, 2))})
        for name, opts in options.items():
            torch._dynamo.reset()
            flex = torch.compile(flex_attention, dynamic=False)

            def fn(opts=opts, flex=flex):
                return flex(q, k, v) if opts is None else flex(q, k, v, kernel_options=opts)
            ref = case(r, f"flex_{name}", fn, flop, ref)

    @section_if("G_gemm")
    def _():
        r = RES.setdefault("G_gemm", {})
        M = B * L
        shapes = {"qkv": (D, 3 * D, False), "attn_out": (D, D, False), "mlp_up": (D, 4 * D, True),
                  "mlp_down": (4 * D, D, True)}
        libraries = ("cublas", "cublaslt") if CUDA else ("default",)
        for shape, (K, N, has_bias) in shapes.items():
            x = torch.randn(M, K, device=dev, dtype=dtype, generator=g)
            w = torch.randn(N, K, device=dev, dtype=dtype, generator=g) * K ** -0.5  # nn.Linear's (out, in)
            wt = w.t().contiguous()  # (K, N)
            bias = torch.randn(N, device=dev, dtype=dtype, generator=g) * 0.1
            flop = 2 * M * K * N
            forms = {"mm": lambda W, x=x: torch.mm(x, W)}
            if has_bias:
                forms["addmm"] = lambda W, x=x, bias=bias: torch.addmm(bias, x, W)
            if shape == "mlp_up":
                forms["addmm_gelu"] = lambda W, x=x, bias=bias: torch._addmm_activation(bias, x, W, use_gelu=True)
                forms["addmm_then_gelu"] = lambda W, x=x, bias=bias: F.gelu(torch.addmm(bias, x, W),
                                                                             approximate="tanh")
            for form, f in forms.items():
                ref = None
                for lib in libraries:
                    if CUDA:
                        torch.backends.cuda.preferred_blas_library(lib)
                    for layout, W in (("w_t", w.t()), ("wt", wt)):
                        ref = case(r, f"{shape}_{form}_{lib}_{layout}", lambda f=f, W=W: f(W), flop, ref)
            if CUDA:
                torch.backends.cuda.preferred_blas_library("cublas")

    (out / "probe.json").write_text(json.dumps(RES, indent=1, default=str))


if __name__ == "__main__":
    main()
