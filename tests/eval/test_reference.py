import pytest

from edlm.errors import DataError
from edlm.eval import entropy_report, real_text_reference


@pytest.fixture(scope="module")
def bpe(wiki_train_articles):
    """A byte-level BPE (vocab 600) trained on the first 40 train articles; the valid articles are held out."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(wiki_train_articles[:40], trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_chunks_have_the_sample_length_and_come_from_the_texts(bpe, wiki_articles):
    # an ASCII opening: a slice of its first tokens decodes to a prefix (no UTF-8 character cut in two)
    held_out = [t for t in wiki_articles if t[:2000].isascii()]
    ref = real_text_reference(held_out, length_tokens=64, tokenizer=bpe, n=5)
    assert ref.tokens.shape == (5, 64)
    assert ref.source_index == sorted(set(ref.source_index))  # one chunk per document, in order
    for text, ids, src in zip(ref.texts, ref.tokens, ref.source_index):
        full = bpe(held_out[src], add_special_tokens=False)["input_ids"]
        assert ids.tolist() == full[:64]  # the document's first 64 tokens
        assert held_out[src].startswith(text) and len(text) < 2000  # decoded back to the real text
    assert entropy_report(ref.tokens).num_samples == 5  # the same measures run on the reference


def test_chunks_per_text_and_lazy_input(bpe, wiki_articles):
    consumed = []

    def stream():
        for t in wiki_articles:
            consumed.append(t)
            yield t

    ref = real_text_reference(stream(), length_tokens=32, tokenizer=bpe, n=6, chunks_per_text=3)
    assert ref.tokens.shape == (6, 32)
    assert ref.source_index[:3] == [0, 0, 0]  # consecutive chunks of one document
    assert len(consumed) <= 2  # stopped reading once it had 6 chunks
    full = bpe(consumed[0], add_special_tokens=False)["input_ids"]
    assert ref.tokens[1].tolist() == full[32:64]


def test_too_little_text_is_an_error(bpe):
    with pytest.raises(DataError, match="only 0 chunks of 64 tokens"):
        real_text_reference(["too short"], length_tokens=64, tokenizer=bpe, n=1)
    with pytest.raises(TypeError, match="one string"):
        real_text_reference("a string, not a list", length_tokens=2, tokenizer=bpe, n=1)
