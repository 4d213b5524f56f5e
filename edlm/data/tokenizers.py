"""Tokenizers: byte-level BPE, character level (text, DNA, text8), and any Hugging Face tokenizer.

Every tokenizer is a ``transformers.PreTrainedTokenizerFast`` carrying the special tokens of
docs/design.md ("Token-id conventions"):

- ``<|endoftext|>`` — BOS = EOS, the document separator of "wrap" packing (GPT-2 style);
- ``[PAD]``         — padding of "pad" packing (never masked, never counted);
- ``[MASK]``        — the absorbing state m, always the **last** id of tokenizers made here,
  so ``mask_id = len(tok) - 1`` and the number of real tokens is ``V = len(tok) - 1``.

Tokenizers made here round-trip exactly: ``tok.decode(tok.encode(s)) == s`` for any text (BPE: any
text at all; char level: any text over the alphabet, newlines included).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from edlm.errors import DataError, first_line

__all__ = [
    "BOS_EOS",
    "PAD",
    "UNK",
    "MASK",
    "DNA_ALPHABET",
    "TEXT8_ALPHABET",
    "train_bpe_tokenizer",
    "char_tokenizer",
    "char_tokenizer_from_text",
    "dna_tokenizer",
    "text8_tokenizer",
    "text8_normalize",
    "load_tokenizer",
    "save_tokenizer",
    "tokenizer_fingerprint",
]

BOS_EOS = "<|endoftext|>"  # GPT-2's separator: BOS and EOS at once
PAD = "[PAD]"
UNK = "[UNK]"
MASK = "[MASK]"

DNA_ALPHABET = "ACGT"
TEXT8_ALPHABET = "abcdefghijklmnopqrstuvwxyz "

# One pre-token per code point; `.` would skip newlines, so match any char explicitly.
_EVERY_CHAR = Regex(r"[\s\S]")
_NOT_TEXT8 = re.compile(r"[^a-z]+")


# ----------------------------------------------------------------------------- helpers
def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` into the transformers class, naming the special tokens it holds."""
    vocab = backend.get_vocab(with_added_tokens=True)
    specials = {
        "bos_token": BOS_EOS,
        "eos_token": BOS_EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "mask_token": MASK,
    }
    kwargs = {key: tok for key, tok in specials.items() if tok in vocab}
    if MASK not in vocab:
        raise DataError(
            f"the tokenizer has no {MASK} token; give the tokenizer/ folder of an `edlm train` run or a hub name "
            "(e.g. gpt2), which edlm extends with one."
        )
    # clean_up_tokenization_spaces would rewrite " ." as "." on decode and break the round trip.
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False, **kwargs)


def _append_mask_last(backend: Tokenizer) -> None:
    """Add ``[MASK]`` as a special token; it takes the next free id, i.e. the last one."""
    backend.add_special_tokens([MASK])
    mask_id = backend.token_to_id(MASK)
    if mask_id != backend.get_vocab_size(with_added_tokens=True) - 1:  # design.md: mask is the last id
        raise DataError(
            f"{MASK} got id {mask_id}, not the last id; the vocabulary already holds a {MASK} token."
        )


def tokenizer_fingerprint(tok: PreTrainedTokenizerFast) -> str:
    """A short hash of everything that decides how text becomes ids (vocab, merges, specials)."""
    state = {
        "backend": tok.backend_tokenizer.to_str(),
        "specials": [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.mask_token_id, len(tok)],
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- BPE
def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2 pre-tokenisation, byte-level decoder).

    Args:
        texts: training documents (any iterable of strings; a `datasets` column works).
        vocab_size: the total number of ids, specials and ``[MASK]`` included, so
            ``len(tok) <= vocab_size`` (fewer if the texts support fewer merges).
        min_frequency: a pair must occur this often to be merged.

    Returns:
        ids ``0 = <|endoftext|>``, ``1 = [PAD]``, then the 256 byte symbols and the merges, then
        ``[MASK]`` last. Every string round-trips, since every byte has a symbol.
    """
    min_size = 2 + 256 + 1  # two specials, the byte alphabet, [MASK]
    if vocab_size < min_size:
        raise DataError(
            f"vocab_size must be >= {min_size} for byte-level BPE (2 specials + 256 bytes + mask), got {vocab_size}."
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # GPT-2 regex
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # one id is kept for [MASK]
        min_frequency=min_frequency,
        special_tokens=[BOS_EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    backend.train_from_iterator(_nonempty(texts), trainer=trainer)
    _append_mask_last(backend)
    return _wrap(backend)


def _nonempty(texts: Iterable[str]) -> Iterable[str]:
    n = 0
    for text in texts:
        n += 1
        yield text
    if n == 0:
        raise DataError("no texts to train the BPE tokenizer on; pass a non-empty corpus.")


# ----------------------------------------------------------------------------- character level
def char_tokenizer(alphabet: str | Iterable[str]) -> PreTrainedTokenizerFast:
    """One id per character of ``alphabet`` (ids 0 … n−1 in the order given, duplicates dropped).

    After the characters come ``<|endoftext|>``, ``[PAD]``, ``[UNK]`` (any character outside the
    alphabet) and ``[MASK]`` last. Decoding joins characters without spaces, so text over the
    alphabet round-trips exactly, newlines included.
    """
    chars = list(dict.fromkeys(alphabet))  # keeps order, drops repeats
    if not chars:
        raise DataError("the alphabet of a char tokenizer is empty; pass at least one character.")
    bad = [c for c in chars if len(c) != 1]
    if bad:
        raise DataError(f"char tokenizer entries must be single characters, got {bad[:3]!r}.")
    vocab = {c: i for i, c in enumerate(chars)}
    for special in (BOS_EOS, PAD, UNK):
        vocab[special] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(_EVERY_CHAR, behavior="isolated")
    backend.decoder = decoders.Fuse()  # join tokens with no separator
    backend.add_special_tokens([BOS_EOS, PAD, UNK])
    _append_mask_last(backend)
    return _wrap(backend)


def char_tokenizer_from_text(text: str | Iterable[str]) -> PreTrainedTokenizerFast:
    """A char tokenizer over the sorted set of characters of ``text`` (a string or iterable of them)."""
    if isinstance(text, str):
        text = [text]
    chars: set[str] = set()
    for piece in text:
        chars.update(piece)
    return char_tokenizer(sorted(chars))


def dna_tokenizer() -> PreTrainedTokenizerFast:
    """``A C G T`` = ids 0–3; anything else (N, IUPAC codes, lowercase) is ``[UNK]``."""
    return char_tokenizer(DNA_ALPHABET)


def text8_tokenizer() -> PreTrainedTokenizerFast:
    """text8's 27 symbols, ``a``–``z`` = ids 0–25 and space = 26; run text through `text8_normalize` first."""
    return char_tokenizer(TEXT8_ALPHABET)


def text8_normalize(text: str) -> str:
    """Lowercase, strip accents (é → e), and turn every run of other characters into one space.

    Like Mahoney's ``wikifil.pl`` that made text8, but digits are dropped, not spelled out.
    The result holds only ``a``–``z`` and single spaces, with no space at either end.
    """
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return _NOT_TEXT8.sub(" ", decomposed).strip()


# ----------------------------------------------------------------------------- load / save
def save_tokenizer(tok: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(directory))
    return directory


def load_tokenizer(spec: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer from a directory, a ``tokenizer.json`` file, or a Hugging Face hub name.

    A hub tokenizer without a mask token gets ``[MASK]`` appended as a new last id (GPT-2 → 50258
    ids, ``mask_id = 50257``, as in MDLM). One without a pad token pads with its EOS token, so no
    id is added before ``[MASK]``; padding is told apart by ``attention_mask``.
    """
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".json":
            raise DataError(f"{spec} is not a tokenizer: pass a directory or a tokenizer.json file.")
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises a bare Exception
            raise DataError(f"could not read tokenizer file {spec}: {first_line(exc)}") from exc
        return _wrap(backend)
    if path.is_dir():
        if not (path / "tokenizer_config.json").exists():
            if (path / "tokenizer.json").exists():
                return load_tokenizer(path / "tokenizer.json")
            raise DataError(
                f"{spec} holds no tokenizer.json or tokenizer_config.json; give the tokenizer/ folder of an `edlm train` "
                "run, a tokenizer.json file or a hub name (e.g. gpt2)."
            )
        if (path / "tokenizer.json").exists():
            # the base class reads any tokenizer.json and tokenizer_config.json, whichever transformers
            # version saved them (v5 records tokenizer_class "TokenizersBackend", unknown to v4's AutoTokenizer)
            try:
                tok = PreTrainedTokenizerFast.from_pretrained(str(path))
            except Exception as exc:
                raise DataError(f"could not read the tokenizer in {spec}: {first_line(exc)}") from exc
            return _with_mask(tok, spec)
        return _with_mask(_auto(str(path)), spec)
    if _looks_like_path(spec):
        raise DataError(
            f"no tokenizer at {spec}: the path does not exist (give a directory, a tokenizer.json, or a hub name)."
        )
    return _with_mask(_auto(spec), spec)


def _auto(spec: str) -> PreTrainedTokenizerFast:
    try:
        tok = AutoTokenizer.from_pretrained(spec)
    except Exception as exc:
        raise DataError(
            f"could not load tokenizer {spec!r} (hub name or directory): {first_line(exc)}"
        ) from exc
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise DataError(
            f"tokenizer {spec!r} is a slow (Python) tokenizer; edlm needs a fast one with a tokenizer.json."
        )
    return tok


def _with_mask(tok: PreTrainedTokenizerFast, spec: str) -> PreTrainedTokenizerFast:
    if tok.mask_token is None:
        tok.add_special_tokens({"mask_token": MASK})
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if tok.bos_token is None and tok.eos_token is None and tok.cls_token is None and tok.sep_token is None:
        raise DataError(f"tokenizer {spec!r} has no BOS/EOS/CLS/SEP token to separate documents.")
    return tok


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith(".json") or spec.count("/") > 1 or "\\" in spec
