"""Conditional generation from plain strings: prompts (continue a text), infilling templates, end of text.

    bundle = load_denoiser_bundle("edlm/assets/wikipedia_en/mdlm")       # edlm.loading
    outs = complete(bundle, ["The river"], steps=32, num_samples=2)      # list[Completion], prompt by prompt
    outs[0].completion, outs[0].text, outs[0].tokens                     # the continuation, prompt + it, the ids
    outs = infill(bundle, ["The river [MASK:20] the city."], steps=32)   # 20 tokens generated between the two
    x_init, fixed = encode_condition(bundle, prompt="The river")         # (1, L) each, for generate(x_init=...)

Masked diffusion conditions by never masking the given tokens: ``edlm.samplers.loop.generate(x_init=...)`` keeps
every unmasked token of x_init where it is (the denoiser reads it, an energy scores whole sequences with it in
place, no step resamples it). This module turns strings into that x_init and the sampled ids back into strings.

How text becomes fixed tokens:

- **Pieces.** A prompt is one text piece, followed by masks; a template (``parse_template``) is text pieces with
  ``[MASK:n]`` spans (n generated tokens) between them. Each piece is tokenized on its own, as written, with
  special-token strings read as text (as training read its documents: a literal ``<|endoftext|>`` stays text).
  BPE merges therefore never cross a piece boundary: ``"[MASK:2]ing"`` puts ``ing`` after two generated tokens.
- **Spaces.** A leading space is kept as written (byte-level BPE: ``" the city."`` -> ``Ġthe Ġcity .``, as in
  running text). A tokenizer that glues a space to the word after it (byte-level BPE) would end ``"The river "``
  in a lone ``Ġ`` token, which running text hardly ever has; so one trailing space right before generated tokens
  is dropped there, and the first generated token brings its own space. Char-level tokenizers keep it.
- **Document start.** Where the model was trained on many documents packed with a separator (``edlm.data.packing``,
  "wrap": every document is ``<|endoftext|> text <|endoftext|>``, so a document's first token always follows a
  separator), a prompt or template starts with that separator: it says "a document starts here", and the text
  is read as a document's opening (wikipedia_en, the 48 document openings of tests/corpora: the denoiser's loss
  on the first token drops from 2.19 to 0.76 nats with it; a second separator, as the packed stream has between
  two documents, changes nothing). A model of one stream (tinyshakespeare: the whole corpus is one document) gets none. ``bos``
  overrides the choice (``document_separator``).
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
import json
import re
import warnings
from dataclasses import dataclass, field

import torch

from edlm.errors import describe_os_error
from edlm.loading import DenoiserBundle, resolve_dtype
from edlm.pipeline import (
    SampleRecord,
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

MARKER = "[MASK:n]"  # a masked span of n generated tokens, in a template
_SPAN = re.compile(r"\[MASK:([0-9]+)\]")
# what looks like a marker but is not one: [MAKS:3], [MASK:x], [MASK:-3], [MASK: 3], [MASK], [mask:3]
_LOOKALIKE = re.compile(r"\[[A-Z]+:|\[\s*(?i:mask)\b")
_ONE_DOCUMENT = {"dna_ecoli_k12"}  # FASTA presets of a single record (a .txt corpus is one document by definition)
_CUT = " ... "  # between the spans of a template in ``Completion.completion``


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


# ----------------------------------------------------------------------------- templates
def parse_template(text: str) -> list[str | int]:
    """``"The river [MASK:20] the city."`` -> ``["The river ", 20, " the city."]``: the text pieces (empty ones
    left out) and, for each ``[MASK:n]`` marker, the number n > 0 of tokens to generate there.

    Raises:
        ValueError (one line): no marker; a marker that is not ``[MASK:n]`` with n > 0 (``[MASK]``, ``[MASK:0]``,
            ``[MASK:-3]``, ``[MASK:x]``, ``[MAKS:3]``: anything like ``[WORD:`` or ``[mask``).
    """
    if not isinstance(text, str):
        raise ValueError(f"a template must be a string, got {type(text).__name__}.")
    parts: list[str | int] = []
    pos = 0
    for match in _SPAN.finditer(text):
        _check_piece(text[pos:match.start()], text)
        n = int(match[1])
        if n == 0:
            raise ValueError(f"[MASK:{match[1]}] in template {_short(text)} asks for no tokens: a masked span is "
                             f"written {MARKER} with n > 0 tokens to generate, e.g. [MASK:20].")
        parts += [text[pos:match.start()], n]
        pos = match.end()
    _check_piece(text[pos:], text)
    parts.append(text[pos:])
    if not any(isinstance(p, int) for p in parts):
        raise ValueError(f"template {_short(text)} has no {MARKER} marker: mark each span to generate with one, "
                         "e.g. 'The river [MASK:20] the city.' (to continue a text, give it as a prompt).")
    return [p for p in parts if p != ""]


def _check_piece(piece: str, text: str) -> None:
    bad = _LOOKALIKE.search(piece)
    if bad:
        end = piece.find("]", bad.start())
        shown = piece[bad.start(): end + 1] if 0 <= end - bad.start() < 20 else piece[bad.start(): bad.start() + 12]
        raise ValueError(f"unknown marker {shown!r} in template {_short(text)}: a masked span is written {MARKER}, "
                         "n > 0 tokens to generate (e.g. [MASK:20]).")


# ----------------------------------------------------------------------------- text -> fixed tokens
def _tokenize(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _glues_space(tokenizer) -> bool:
    """True if the tokenizer joins a space to the word after it (byte-level BPE: "a b" -> a Ġb)."""
    return len(_tokenize(tokenizer, "a b")) < len(_tokenize(tokenizer, "a ")) + len(_tokenize(tokenizer, "b"))


def _run_corpus(bundle: DenoiserBundle) -> str | None:
    """The corpus the denoiser was trained on, from its checkpoint's run config (None if not recorded)."""
    try:
        config = json.loads((bundle.path / "config.json").read_text(encoding="utf-8"))
        return config["extra"]["run_config"]["data"]["corpus"] or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def document_separator(bundle: DenoiserBundle, bos: bool | None = None) -> int | None:
    """The id a prompt or template starts with, or None.

    ``bos=None`` (auto): the tokenizer's BOS (else CLS, else EOS: ``edlm.data.packing.separator_ids``) when the
    model was trained on a corpus of many documents, which packing opens each with; None for a one-document
    corpus (a ``.txt`` file such as tinyshakespeare, a one-record FASTA), whose separator the model saw once.
    A checkpoint that records no corpus (a hub model) gets the separator. ``True`` / ``False`` force it.
    """
    tok = bundle.tokenizer
    sep = next((i for i in (tok.bos_token_id, tok.cls_token_id, tok.eos_token_id) if i is not None), None)
    if bos is False or sep is None:
        if bos is True:
            raise ValueError("bos=True, but the tokenizer has no BOS / document separator token.")
        return None
    if bos is None:
        corpus = _run_corpus(bundle)
        if corpus is not None:
            from edlm.data.sources import PRESETS  # only when a corpus is recorded

            train = PRESETS[corpus].files["train"] if corpus in PRESETS else corpus
            if corpus in _ONE_DOCUMENT or str(train).endswith((".txt", ".txt.gz")):
                return None
    return sep


def _eos_id(tokenizer) -> int | None:
    return next((i for i in (tokenizer.eos_token_id, tokenizer.sep_token_id, tokenizer.bos_token_id)
                 if i is not None), None)


@dataclass(frozen=True)
class _Layout:
    """One condition laid out over the context: ``ids`` (L: fixed ids, ``mask_id`` where generated), the generated
    ``spans`` ([start, end) each; a prompt's runs to L) and ``end``, one past the template (a prompt: its length)."""

    source: str
    ids: list[int]
    spans: list[tuple[int, int]]
    end: int


def _piece_ids(bundle: DenoiserBundle, text: str, before_mask: bool, what: str) -> list[int]:
    if before_mask and text.endswith(" ") and _glues_space(bundle.tokenizer):
        text = text[:-1]  # the first generated token brings its own space (module docstring)
    ids = _tokenize(bundle.tokenizer, text) if text else []
    if text and not ids:
        raise ValueError(f"{what} tokenizes to nothing.")
    unk = bundle.tokenizer.unk_token_id
    if unk is not None and unk in ids:
        chars = sorted({c for c in text if unk in _tokenize(bundle.tokenizer, c)})
        raise ValueError(f"{what} holds characters the tokenizer does not know ({''.join(chars)[:20]!r}); they "
                         "would all become one [UNK] token, which the model never saw.")
    return ids


def _layout(bundle: DenoiserBundle, sep: int | None, *, prompt: str | None = None, template: str | None = None,
            length: int | None = None) -> _Layout:
    """One prompt or template over ``length`` positions, opened by ``sep`` (``document_separator``; None: none)."""
    if (prompt is None) == (template is None):
        raise ValueError("give either a prompt or a template, not both (and not neither).")
    length = bundle.length if length is None else check_positive_int("length", length)
    if length > bundle.length:
        raise ValueError(f"length {length} exceeds the model's context of {bundle.length} tokens.")
    ids = [] if sep is None else [sep]
    with_sep = "" if sep is None else ", with the document separator"
    if prompt is not None:
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a string, got {type(prompt).__name__}.")
        ids += _piece_ids(bundle, prompt, True, f"the prompt {_short(prompt)}")
        if len(ids) == (sep is not None):
            raise ValueError(f"the prompt {_short(prompt)} tokenizes to nothing; give some text to continue.")
        if len(ids) >= length:
            raise ValueError(f"the prompt {_short(prompt)} is {len(ids)} tokens{with_sep}, but the model's context "
                             f"is {length}: no token is left to generate; shorten the prompt.")
        return _Layout(prompt, ids + [bundle.mask_id] * (length - len(ids)), [(len(ids), length)], len(ids))
    parts = parse_template(template)
    spans = []
    for i, part in enumerate(parts):
        if isinstance(part, int):
            spans.append((len(ids), len(ids) + part))
            ids += [bundle.mask_id] * part
            continue
        ids += _piece_ids(bundle, part, i + 1 < len(parts), f"the template piece {_short(part)}")
    if len(ids) > length:
        raise ValueError(f"the template {_short(template)} needs {len(ids)} tokens ({sum(b - a for a, b in spans)} "
                         f"generated{with_sep}) but the model's context is {length}; shorten it or its spans.")
    return _Layout(template, ids + [bundle.mask_id] * (length - len(ids)), spans, len(ids))


def encode_condition(bundle: DenoiserBundle, *, prompt: str | None = None, template: str | None = None,
                     length: int | None = None, bos: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_init, fixed)``, each (1, length) (default: the model's L): a prompt as a fixed prefix followed by masks,
    or a template (``parse_template``) as its pieces with masks in between, then masks up to ``length``; ``fixed``
    is True where x_init holds a token. Give exactly one of ``prompt`` and ``template``. Tokenization, spaces and
    the document separator (``bos``): the module docstring. ``x_init`` goes to ``generate(x_init=...)``.

    Raises:
        ValueError (one line): a prompt that fills the context (no token left to generate) or tokenizes to
            nothing, a template longer than the context or with a bad marker, characters the tokenizer lacks.
    """
    lay = _layout(bundle, document_separator(bundle, bos), prompt=prompt, template=template, length=length)
    x_init = torch.tensor([lay.ids], dtype=torch.long)
    return x_init, x_init != bundle.mask_id


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
    ``stop_at_eos``, ``bos``: the module docstring. ``dtype``, ``compile``, ``freeze``, ``cuda_graphs``: as
    ``pipeline.sample``.
    """
    s = _settings(settings, fields)
    if max_new_tokens is not None:
        check_positive_int("max_new_tokens", max_new_tokens)
    sep = document_separator(bundle, bos)
    layouts = [_layout(bundle, sep, prompt=p) for p in _listed(prompts, "prompt")]
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
    layouts = [_layout(bundle, sep, template=t) for t in _listed(templates, "template")]
    if getattr(energy, "carry_over", False) and any(lay.spans[-1][1] < lay.end for lay in layouts):
        warnings.warn("an AR energy with carry_over=True ignores the fixed text after a masked span (its AR terms "
                      "are dropped); use carry_over=false (ar:PATH,carry_over=false) for infilling.", stacklevel=2)
    return _sample(bundle, layouts, s, energy, stop_at_eos, device, progress,
                   dict(dtype=dtype, compile=compile, freeze=freeze, cuda_graphs=cuda_graphs))


def _refuse_length(length) -> None:
    raise ValueError(f"length does not apply to prompts or templates (got {length}): the sequence is the model's "
                     "context; give max_new_tokens to bound a continuation.")


def _sample(bundle, layouts, s: SampleSettings, energy, stop_at_eos, device, progress, options) -> list[Completion]:
    if s.length is not None:
        _refuse_length(s.length)
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


def _finish(tokenizer, lay: _Layout, row: list[int], eos: int | None, i: int, j: int, seconds: float,
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
@dataclass
class ConditionalRecord(SampleRecord):
    """A ``SampleRecord`` (``text``: the whole text, prompt included) with its ``prompt``, ``completion`` and
    the generated ``spans``; ``edlm.pipeline.write_jsonl`` and ``format_records`` take it as they are."""

    prompt: str = ""
    completion: str = ""
    spans: list[str] = field(default_factory=list)


def read_prompt_file(path) -> list[str]:
    """The prompts of a text file, one a line (line ends dropped, blank lines skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.rstrip("\r\n") for line in f if line.strip()]
    except OSError as exc:
        raise ValueError(f"the prompt file: {describe_os_error(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"the prompt file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    if not prompts:
        raise ValueError(f"the prompt file {path} holds no prompts (one a line).")
    return prompts


def conditions_from_flags(prompts: list[str], prompt_file, templates: list[str], max_new_tokens: int | None,
                          stop_at_eos: bool, length: int | None = None) -> dict | None:
    """``edlm sample``'s --prompt, --prompt-file, --infill, --max-new-tokens and --no-stop-at-eos (and --length),
    checked together before any model loads: the keywords of ``sample_records`` (None: an unconditional run)."""
    prompts = list(prompts) + (read_prompt_file(prompt_file) if prompt_file is not None else [])
    if prompts and templates:
        raise ValueError("give prompts (--prompt, --prompt-file) or templates (--infill), not both.")
    if (prompts or templates) and length is not None:
        _refuse_length(length)
    if max_new_tokens is not None:
        check_positive_int("max_new_tokens", max_new_tokens)
        if not prompts:
            raise ValueError("--max-new-tokens applies to prompts (--prompt, --prompt-file) only.")
    if not prompts and not templates:
        if not stop_at_eos:
            raise ValueError("--no-stop-at-eos applies to prompts and templates (--prompt, --infill) only.")
        return None
    for template in templates:
        parse_template(template)  # a bad marker fails before any model loads
    return dict(prompts=prompts or None, templates=templates or None, max_new_tokens=max_new_tokens,
                stop_at_eos=stop_at_eos)


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
