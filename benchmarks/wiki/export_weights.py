"""Re-save a save_pretrained checkpoint smaller: float16 parameters (half the bytes), int8 weight matrices with
row-wise scales (a quarter; what the shipped model sets use), or int4 weight matrices with a float16 scale per 64
entries (about an eighth; `edlm.models.quantize`). All load back as float32.

    python benchmarks/wiki/export_weights.py runs/wiki/mdlm/model runs/wiki/mdlm/model-fp16            # float16
    python benchmarks/wiki/export_weights.py runs/wiki/mdlm/model edlm/assets/wikipedia_en/mdlm int8   # shipped
    python benchmarks/wiki/export_weights.py runs/wiki/mdlm/model runs/wiki/mdlm/model-int4 int4
"""

import sys
from pathlib import Path

import torch

import edlm.energy  # noqa: F401  (registers the nce_energy model type)
from edlm.models.checkpoints import (
    from_pretrained,
    load_denoiser,
    load_tokenizer_from,
    read_checkpoint_config,
    save_pretrained,
)

DTYPES = {"float16": torch.float16, "int8": "int8", "int4": "int4"}  # save_pretrained names its int formats


def main(src: str, dst: str, dtype: str = "float16") -> None:
    if dtype not in DTYPES:
        raise SystemExit(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    config = read_checkpoint_config(src)
    model = load_denoiser(src) if "denoiser" in config else from_pretrained(src)
    save_pretrained(model, dst, tokenizer=load_tokenizer_from(src), extra=config.get("extra"), dtype=DTYPES[dtype])
    size = (Path(dst) / "model.safetensors").stat().st_size
    print(f"{src} -> {dst}: {size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main(*sys.argv[1:4])
