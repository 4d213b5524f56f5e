"""Semi-autoregressive sampling for text longer than the model's context (SPEC 1.6, MDLM's SAR)."""

from __future__ import annotations

import torch

from edlm.samplers.base import GenerateOutput
from edlm.samplers.loop import generate

__all__ = ["generate_semi_ar"]


def generate_semi_ar(denoiser, total_length: int, block_length: int, stride: int, batch_size: int,
                     vocab_size: int, mask_id: int, steps: int, **kwargs) -> GenerateOutput:
    """Generate ``total_length`` tokens with a model of context ``block_length`` (L).

    Denoise a block of L tokens; then keep its last L − S tokens as a fixed prefix, append S masks
    (S = ``stride``) and denoise again; repeat until ``total_length`` tokens exist. Each block takes
    ``steps`` reverse steps. ``kwargs`` go to ``generate`` (energy, k, window, generator, ...); an ``x_init``
    (B, L) starts the first block only (a prompt: its unmasked tokens stay fixed, and later blocks carry them as
    long as they lie in the kept tail); ``progress=True`` shows one bar over all blocks × steps, labelled with the
    block it is in ("block 2/5").
    """
    if not 0 < stride <= block_length:
        raise ValueError(f"`stride` must be in (0, block_length={block_length}], got {stride}.")
    if total_length < block_length:
        raise ValueError(f"`total_length` {total_length} is shorter than one block ({block_length}); "
                         "use generate() directly.")
    blocks = 1 + -(-(total_length - block_length) // stride)
    progress = kwargs.pop("progress", False)
    own = bool(progress) and not hasattr(progress, "update")
    bar = progress or None  # a caller's bar, or None
    if own:  # one bar over every step of every block, with the block it is in
        from tqdm.auto import tqdm

        bar = tqdm(total=blocks * steps, desc=f"block 1/{blocks}", unit="step", leave=False, dynamic_ncols=True)
    try:
        return _blocks(denoiser, total_length, block_length, stride, batch_size, vocab_size, mask_id, steps, blocks,
                       bar, own, kwargs)
    finally:
        if own:
            bar.close()


def _blocks(denoiser, total_length, block_length, stride, batch_size, vocab_size, mask_id, steps, blocks, bar,
            own_bar, kwargs) -> GenerateOutput:
    """The blocks of ``generate_semi_ar``, advancing ``bar`` (None: no bar) step by step."""
    kwargs = dict(kwargs, progress=bar if bar is not None else False)
    x_init = kwargs.pop("x_init", None)  # the first block's start; later blocks start from the previous tail
    first = generate(denoiser, block_length, batch_size, vocab_size, mask_id, steps, x_init=x_init, **kwargs)
    tokens = [first.tokens]
    total = GenerateOutput(tokens=first.tokens, nfe_denoiser=first.nfe_denoiser, nfe_energy=first.nfe_energy,
                           energy_evals=first.energy_evals, seconds=first.seconds, steps=steps,
                           is_steps=first.is_steps, ess=list(first.ess))
    have = block_length
    last = first.tokens
    block_index = 1
    while have < total_length:
        block_index += 1
        if own_bar:
            bar.set_description(f"block {block_index}/{blocks}", refresh=False)
        prefix = last[:, stride:]  # (B, L − S) fixed context
        masks = torch.full((batch_size, stride), mask_id, dtype=torch.long, device=last.device)
        block = generate(denoiser, block_length, batch_size, vocab_size, mask_id, steps,
                         x_init=torch.cat([prefix, masks], dim=1), **kwargs)
        last = block.tokens
        tokens.append(last[:, -stride:])
        have += stride
        total.nfe_denoiser += block.nfe_denoiser
        total.nfe_energy += block.nfe_energy
        total.energy_evals += block.energy_evals
        total.seconds += block.seconds
        total.is_steps += block.is_steps
        total.ess.extend(block.ess)
    total.tokens = torch.cat(tokens, dim=1)[:, :total_length]
    return total
