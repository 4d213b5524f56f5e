"""Data: corpora (`load_corpus`, `PRESETS`), tokenizers, packing into blocks, the LightningDataModule.

Example::

    text = load_corpus("tinyshakespeare", "train")                 # Dataset, column "text"
    text = load_corpus("hf:wikitext:wikitext-2-raw-v1", "validation")  # or a file, a folder, a hub dataset
    tok = char_tokenizer_from_text(text["text"])                     # [MASK] = len(tok) - 1
    blocks = tokenize_and_pack(text, tok, length=256, mode="wrap")   # column "input_ids" (int64, 256)
    dm = TextDataModule("tinyshakespeare", tok, length=256, batch_size=32)

`TextDataModule` is imported lazily, so tokenizers and corpora load without importing Lightning.
"""

from edlm.data.packing import char_lookup_table, default_cache_dir, separator_ids, tokenize_and_pack
from edlm.data.sources import (
    PRESETS,
    CorpusPreset,
    corpus_files,
    find_data_dir,
    held_out_split,
    load_corpus,
    preset_tokenizer,
)
from edlm.data.tokenizers import (
    BOS_EOS,
    DNA_ALPHABET,
    MASK,
    PAD,
    TEXT8_ALPHABET,
    UNK,
    char_tokenizer,
    char_tokenizer_from_text,
    dna_tokenizer,
    load_tokenizer,
    save_tokenizer,
    text8_normalize,
    text8_tokenizer,
    tokenizer_fingerprint,
    train_bpe_tokenizer,
)

__all__ = [
    "BOS_EOS",
    "DNA_ALPHABET",
    "MASK",
    "PAD",
    "PRESETS",
    "TEXT8_ALPHABET",
    "UNK",
    "CorpusPreset",
    "TextDataModule",
    "char_lookup_table",
    "char_tokenizer",
    "char_tokenizer_from_text",
    "corpus_files",
    "default_cache_dir",
    "dna_tokenizer",
    "find_data_dir",
    "held_out_split",
    "load_corpus",
    "load_tokenizer",
    "preset_tokenizer",
    "save_tokenizer",
    "separator_ids",
    "text8_normalize",
    "text8_tokenizer",
    "tokenize_and_pack",
    "tokenizer_fingerprint",
    "train_bpe_tokenizer",
]


def __getattr__(name: str):
    if name == "TextDataModule":  # PEP 562: Lightning is imported only when the DataModule is used
        from edlm.data.datamodule import TextDataModule

        return TextDataModule
    raise AttributeError(f"module 'edlm.data' has no attribute {name!r}")
