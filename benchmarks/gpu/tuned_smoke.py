"""Session 10, last check on the GPU: ``edlm::tuned_linear`` as committed (its dtype guard and device context came
after the measured runs) gives torch's output bit for bit for each epilogue, bf16, 4 096 × 768 → 3 072 / 768 rows,
and a DiT block in bf16 with the tuned GEMMs on and off gives the same output. Prints JSON lines.

  PYTHONPATH=. python3 benchmarks/gpu/tuned_smoke.py
"""

import json

import torch

from edlm.models import cublaslt
from edlm.models import dit as dit_module
from edlm.models.ops import tuned_linear


def main() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    dt = torch.bfloat16
    with torch.no_grad():
        for n, k, epi in ((3072, 768, "gelu_bias"), (2304, 768, "none"), (768, 3072, "bias")):
            x = torch.randn(4096, k, device="cuda", dtype=dt, generator=g)
            w = torch.randn(n, k, device="cuda", dtype=dt, generator=g) / k ** 0.5
            b = None if epi == "none" else torch.randn(n, device="cuda", dtype=dt, generator=g)
            same = torch.equal(tuned_linear(x, w, b, epi), cublaslt.reference(x, w, b, epi))
            print(json.dumps({"gemm": [4096, n, k, epi], "same_as_torch": same}), flush=True)
        torch.manual_seed(0)
        block = dit_module.DiTBlock(768, 12, 128).cuda().to(dt).eval()
        x = torch.randn(8, 1024, 768, device="cuda", dtype=dt, generator=g)
        c = torch.randn(8, 128, device="cuda", dtype=dt, generator=g)
        rot = dit_module.Rotary(64, max_len=1024).cuda()(1024, x.device)
        tuned = block(x, rot, c)
        dit_module.DiTBlock.tuned_gemms = False
        plain = block(x, rot, c)
        print(json.dumps({"block_same": torch.equal(tuned, plain),
                          "max_diff": float((tuned.float() - plain.float()).abs().max())}), flush=True)
    print(json.dumps({"picks": cublaslt.picks()}), flush=True)


if __name__ == "__main__":
    main()
