"""Re-save a save_pretrained checkpoint with float16 parameters (half the bytes; loads back as float32).

    python benchmarks/wiki/export_half.py runs/wiki/mdlm/model runs/wiki/mdlm/model-fp16
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


def main(src: str, dst: str) -> None:
    config = read_checkpoint_config(src)
    model = load_denoiser(src) if "denoiser" in config else from_pretrained(src)
    save_pretrained(model, dst, tokenizer=load_tokenizer_from(src), extra=config.get("extra"), dtype=torch.float16)
    size = (Path(dst) / "model.safetensors").stat().st_size
    print(f"{src} -> {dst}: {size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
