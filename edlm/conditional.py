"""Conditional generation from plain strings: prompts (continue a text), infilling templates, end of text.

    bundle = load_denoiser_bundle("edlm/assets/wikipedia_en/mdlm")       # edlm.loading
    outs = complete(bundle, ["The river"], steps=32, num_samples=2)      # list[Completion], prompt by prompt
    outs[0].completion, outs[0].text, outs[0].tokens                     # the continuation, prompt + it, the ids
    outs = infill(bundle, ["The river [MASK:20] the city."], steps=32)   # 20 tokens generated between the two
    x_init, fixed = encode_condition(bundle, prompt="The river")         # (1, L) each, for generate(x_init=...)

Masked diffusion conditions by never masking the given tokens: ``edlm.samplers.loop.generate(x_init=...)`` keeps
every unmasked token of x_init where it is (the denoiser reads it, an energy scores whole sequences with it in
place, no step resamples it). ``edlm.conditional_layout`` turns strings into that x_init (pieces, spaces, the
document separator); this module samples it and turns the sampled ids back into strings.

- **Length.** The sequence is always the model's full context L (the only length it was trained on): after a
  prompt every position is generated, and the continuation is its first ``max_new_tokens``; after a template the
  positions past it are generated and dropped. A prompt plus ``max_new_tokens`` beyond L continues
  semi-autoregressively (``generate_semi_ar``, the prompt as the first block's x_init, ``stride`` new tokens per
  later block).
- **End of text.** With ``stop_at_eos`` (the default) a continuation is cut at the first end-of-text token it
  generated (the tokenizer's EOS, ``<|endoftext|>``), which is dropped with all that follows it: the document
  ended there. A template's spans are cut each at their own first one; the fixed text after a span stays.

An AR energy for conditional runs should be exact (``ar:PATH,carry_over=false``): the paper's carry-over drops
the AR terms of every unmasked position, those of fixed text after a masked span included (tests/toy
test_conditional.py); ``infill`` warns about it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch

from edlm.conditional_layout import (
    MARKER,
    Layout,
    document_separator,
    encode_condition,
    layout_condition,
    parse_template,
    refuse_length,
)
from edlm.conditional_records import ConditionalRecord, conditions_from_flags, read_prompt_file
from edlm.loading import DenoiserBundle, resolve_dtype
from edlm.pipeline import (
    SampleSettings,
    check_compile_options,
    generate_kwargs,
    prepare_networks,
    settings_record,
)
from edlm.samplers.loop import generate
from edlm.samplers.semi_ar import generate_semi_ar
from edlm.samplers.settings import check_positive_int

__all__ = [
    "MARKER",
    "Completion",
    "ConditionalRecord",
    "parse_template",
    "document_separator",
    "encode_condition",
    "complete",
    "infill",
    "read_prompt_file",
    "conditions_from_flags",
    "sample_records",
]

_CUT = " ... "  # between the spans of a template in ``Completion.completion``


# ----------------------------------------------------------------------------- sampling
@dataclass
class Completion:
    """One sample of one prompt or template."""

    prompt: str  # the prompt or template, as given
    completion: str  # the generated text (a template's spans joined by " ... "), cut at an end of text
    text: str  # the whole text: prompt + continuation, or the template with its spans filled in
    tokens: list[int]  # every sampled id (separator, prompt, continuation, and what followed an end of text)
    spans: list[str]  # the text of each generated span (a prompt: one)
    completion_tokens: list[int]  # the ids of ``completion`` (the spans' ids in order, each cut at its end of text)
    ended: bool  # True if an end-of-text token cut a span
    prompt_index: int  # which prompt or template
    index: int  # which sample of it (0 … num_samples − 1)
    seconds: float = 0.0  # wall clock of its batch / batch size
    nfe_denoiser: int = 0  # network calls of its batch
    nfe_energy: int = 0


def _listed(texts, what: str) -> list[str]:
    """A list of prompts or templates (a single string is a list of one); an empty one is refused."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError(f"no {what}s given; pass a list of at least one {what}.")
    return texts


def _settings(settings: SampleSettings | None, fields: dict) -> SampleSettings:
    if settings is not None:
        if fields:
            raise TypeError(f"give a SampleSettings or its fields as keywords, not both; got {sorted(fields)}.")
        return settings
    return SampleSettings(**{"num_samples": 1, "batch_size": 8, "length": None, "steps": 64, **fields})


def complete(bundle: DenoiserBundle, prompts: list[str], settings: SampleSettings | None = None, *, energy=None,
             max_new_tokens: int | None = None, stop_at_eos: bool = True, bos: bool | None = None,
             device: str | torch.device = "cpu", progress: bool = False, dtype: str | torch.dtype | None = None,
             compile: bool = False, freeze: bool = True, cuda_graphs: bool = True, **fields) -> list[Completion]:
    """Continue each prompt ``num_samples`` times; returns ``len(prompts) × num_samples`` completions, prompt by
    prompt.

    ``settings`` or its fields as keywords are ``edlm.pipeline.SampleSettings`` (defaults here: ``num_samples=1,
    batch_size=8, steps=64``; ``k``, ``window``, ``temperature`` with an ``energy``; ``seed``, ``top_p``, ...);
    ``length`` does not apply (``max_new_tokens`` does). Rows of every prompt share the batches (``batch_size``
    rows, one ``generate`` call each; each row keeps its own prompt fixed); one ``torch.Generator`` seeded with
    ``seed`` drives the run, as in ``pipeline.sample``. ``max_new_tokens`` (default: up to the context, L −
    the prompt): beyond the context, semi-autoregressive blocks of ``stride`` new tokens (default L // 2).
    ``stop_at_eos``: the module docstring; ``bos``: ``edlm.conditional_layout``. ``dtype``, ``compile``,
    ``freeze``, ``cuda_graphs``: as ``pipeline.sample``.
    """
    s = _settings(settings, fields)
    if max_new_tokens is not None:
        check_positive_int("max_new_tokens", max_new_tokens)
    sep = document_separator(bundle, bos)
    layouts = [layout_condition(bundle, sep, prompt=p) for p in _listed(prompts, "prompt")]
    if max_new_tokens is not None:
        layouts = [dataclasses.replace(lay, spans=[(lay.end, lay.end + max_new_tokens)]) for lay in layouts]
    return _sample(bundle, layouts, s, energy, stop_at_eos, device, progress,
                   dict(dtype=dtype, compile=compile, freeze=freeze, cuda_graphs=cuda_graphs))


def infill(bundle: DenoiserBundle, templates: list[str], settings: SampleSettings | None = None, *, energy=None,
           stop_at_eos: bool = True, bos: bool | None = None, device: str | torch.device = "cpu",
           progress: bool = False, dtype: str | torch.dtype | None = None, compile: bool = False,
           freeze: bool = True, cuda_graphs: bool = True, **fields) -> list[Completion]:
    """Fill each template's ``[MASK:n]`` spans ``num_samples`` times (``parse_template``); as ``complete``,
    without ``max_new_tokens``. Warns if an AR energy uses carry-over (module docstring)."""
    s = _settings(settings, fields)
    sep = document_separator(bundle, bos)
    layouts = [layout_condition(bundle, sep, template=t) for t in _listed(templates, "template")]
    if getattr(energy, "carry_over", False) and any(lay.spans[-1][1] < lay.end for lay in layouts):
        warnings.warn("an AR energy with carry_over=True ignores the fixed text after a masked span (its AR terms "
                      "are dropped); use carry_over=false (ar:PATH,carry_over=false) for infilling.", stacklevel=2)
    return _sample(bundle, layouts, s, energy, stop_at_eos, device, progress,
                   dict(dtype=dtype, compile=compile, freeze=freeze, cuda_graphs=cuda_graphs))


def _eos_id(tokenizer) -> int | None:
    return next((i for i in (tokenizer.eos_token_id, tokenizer.sep_token_id, tokenizer.bos_token_id)
                 if i is not None), None)


def _sample(bundle, layouts, s: SampleSettings, energy, stop_at_eos, device, progress, options) -> list[Completion]:
    if s.length is not None:
        refuse_length(s.length)
    L = bundle.length
    beyond = max(lay.spans[-1][1] for lay in layouts) > L
    if s.stride is not None and (not beyond or s.stride > L):
        raise ValueError(f"stride {s.stride} applies only where a prompt plus max_new_tokens exceeds the model's "
                         f"context of {L} tokens, and must be at most {L}.")
    s.check_energy(energy is not None)
    dtype = resolve_dtype(options.pop("dtype"))
    check_compile_options(**options)
    device = torch.device(device)
    denoiser = prepare_networks(bundle, energy, block=L, device=device, dtype=dtype, **options)
    generator = torch.Generator(device).manual_seed(s.seed)
    kwargs = generate_kwargs(s, energy, generator, device=device, progress=progress)
    rows = [(i, j) for i in range(len(layouts)) for j in range(s.num_samples)]
    eos = _eos_id(bundle.tokenizer) if stop_at_eos else None
    out_list: list[Completion] = []
    for start in range(0, len(rows), s.batch_size):
        batch = rows[start:start + s.batch_size]
        x_init = torch.tensor([layouts[i].ids for i, _ in batch], dtype=torch.long, device=device)
        total = max(layouts[i].spans[-1][1] for i, _ in batch)
        if total > L:  # a prompt's first block, then `stride` new tokens per block (SPEC 1.6)
            out = generate_semi_ar(denoiser, total, L, s.stride or L // 2, len(batch), bundle.vocab_size,
                                   bundle.mask_id, s.steps, x_init=x_init, **kwargs)
        else:
            out = generate(denoiser, L, len(batch), bundle.vocab_size, bundle.mask_id, s.steps, x_init=x_init,
                           **kwargs)
        fixed = x_init != bundle.mask_id
        if not torch.equal(out.tokens[:, :L][fixed], x_init[fixed]):  # generate's contract; never expected
            raise RuntimeError("a fixed token changed while sampling; please report this.")
        for (i, j), row in zip(batch, out.tokens.cpu().tolist()):
            out_list.append(_finish(bundle.tokenizer, layouts[i], row, eos, i, j, out.seconds / len(batch),
                                    out.nfe_denoiser, out.nfe_energy))
    return out_list


def _finish(tokenizer, lay: Layout, row: list[int], eos: int | None, i: int, j: int, seconds: float,
            nfe_denoiser: int, nfe_energy: int) -> Completion:
    """The strings of one sampled row: fixed text and spans, each span cut at its first ``eos`` (None: not cut)."""
    kept: list[int] = []
    generated: list[int] = []
    spans: list[str] = []
    ended = False
    cursor = 0
    for a, b in lay.spans:
        kept += row[cursor:a]
        span = row[a:b]
        if eos is not None and eos in span:
            span, ended = span[:span.index(eos)], True
        kept += span
        generated += span
        spans.append(tokenizer.decode(span, skip_special_tokens=True))
        cursor = b
    kept += row[cursor:max(cursor, lay.end)]
    return Completion(prompt=lay.source, completion=_CUT.join(spans), spans=spans,
                      text=tokenizer.decode(kept, skip_special_tokens=True), tokens=row, completion_tokens=generated,
                      ended=ended, prompt_index=i, index=j, seconds=seconds, nfe_denoiser=nfe_denoiser,
                      nfe_energy=nfe_energy)


# ----------------------------------------------------------------------------- records (edlm sample)
def sample_records(bundle: DenoiserBundle, settings: SampleSettings, *, prompts: list[str] | None = None,
                   templates: list[str] | None = None, max_new_tokens: int | None = None, stop_at_eos: bool = True,
                   energy=None, device: str | torch.device = "cpu", **options) -> list[ConditionalRecord]:
    """``complete`` (prompts) or ``infill`` (templates) as records for ``pipeline.write_jsonl``: ``text`` is the
    whole text, prompt included, beside ``prompt``, ``completion`` and ``spans``; ``settings`` say which."""
    if prompts:
        out = complete(bundle, prompts, settings, energy=energy, max_new_tokens=max_new_tokens,
                       stop_at_eos=stop_at_eos, device=device, **options)
    else:
        out = infill(bundle, templates, settings, energy=energy, stop_at_eos=stop_at_eos, device=device, **options)
    record_settings = settings_record(bundle, settings, energy, bundle.denoiser, length=bundle.length,
                                      device=torch.device(device))
    record_settings.update(mode="prompt" if prompts else "infill", max_new_tokens=max_new_tokens,
                           stop_at_eos=stop_at_eos)
    return to_records(out, record_settings)


def to_records(completions: list[Completion], settings: dict) -> list[ConditionalRecord]:
    """One record per completion, in order (``index`` counts through the run), each with a copy of ``settings``."""
    return [ConditionalRecord(index=n, text=c.text, tokens=c.tokens, settings=dict(settings), seconds=c.seconds,
                              nfe_denoiser=c.nfe_denoiser, nfe_energy=c.nfe_energy, prompt=c.prompt,
                              completion=c.completion, spans=c.spans) for n, c in enumerate(completions)]
