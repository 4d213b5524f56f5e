"""Prompts and infilling templates laid out over the model's context as fixed tokens and masks.

    parse_template("The river [MASK:20] the city.")                      # ["The river ", 20, " the city."]
    x_init, fixed = encode_condition(bundle, prompt="The river")         # (1, L) each, for generate(x_init=...)

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
- **Length.** The layout always spans the model's full context L (the only length it was trained on): after a
  prompt every position is generated; after a template the positions past it are generated.

Sampling these layouts and decoding the result: ``edlm.conditional``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import torch

from edlm.loading import DenoiserBundle
from edlm.samplers.settings import check_positive_int

__all__ = [
    "MARKER",
    "Layout",
    "parse_template",
    "document_separator",
    "layout_condition",
    "encode_condition",
    "refuse_length",
]

MARKER = "[MASK:n]"  # a masked span of n generated tokens, in a template
_SPAN = re.compile(r"\[MASK:([0-9]+)\]")
# what looks like a marker but is not one: [MAKS:3], [MASK:x], [MASK:-3], [MASK: 3], [MASK], [mask:3]
_LOOKALIKE = re.compile(r"\[[A-Z]+:|\[\s*(?i:mask)\b")
_ONE_DOCUMENT = {"dna_ecoli_k12"}  # FASTA presets of a single record (a .txt corpus is one document by definition)


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


def refuse_length(length) -> None:
    """Raise the one-line ``ValueError`` for a ``length`` given with prompts or templates (the layout is L long)."""
    raise ValueError(f"length does not apply to prompts or templates (got {length}): the sequence is the model's "
                     "context; give max_new_tokens to bound a continuation.")


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


@dataclass(frozen=True)
class Layout:
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


def layout_condition(bundle: DenoiserBundle, sep: int | None, *, prompt: str | None = None,
                     template: str | None = None, length: int | None = None) -> Layout:
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
        return Layout(prompt, ids + [bundle.mask_id] * (length - len(ids)), [(len(ids), length)], len(ids))
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
    return Layout(template, ids + [bundle.mask_id] * (length - len(ids)), spans, len(ids))


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
    lay = layout_condition(bundle, document_separator(bundle, bos), prompt=prompt, template=template, length=length)
    x_init = torch.tensor([lay.ids], dtype=torch.long)
    return x_init, x_init != bundle.mask_id
