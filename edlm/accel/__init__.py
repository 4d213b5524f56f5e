"""The GPU fast path, behind one wall: custom ops and their kernels, the tuned GEMMs, torch.compile / CUDA-graph
set-up, and the predicates that decide where each fast piece runs.

This package imports only torch and the standard library (triton lazily, on the CUDA path), never the rest of
``edlm``: the networks and samplers call into it, not the other way round. Every fast piece has a plain-PyTorch
reference that the CPU runs and the tests compare against.

- `ops`: ``addmm_gelu``, ``tuned_linear``, ``rotary_cos_sin``, ``padded_linear`` (custom ops and references).
- `cublaslt`: cuBLASLt's candidate algorithms through ctypes, and the `cublaslt.Tuner` behind ``tuned_linear``.
- `block_bounds`: ``edlm::block_parts``, stage 1 of the fast exact categorical draw; `triton_kernels` its kernel.
- `compiling`: ``compile_networks``, ``is_compiled``, multi-kernel's persistent preference, CUDA-graph replay.
- `policy`: one predicate per fast-path decision, from device and dtype.
"""
