"""HFMaskedLM: a tiny random BERT (built locally, no downloads) as the MDLM denoiser's backbone."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertForMaskedLM, PreTrainedTokenizerFast

from edlm.diffusion.schedules import LogLinearSchedule
from edlm.diffusion.subs import subs_log_probs
from edlm.errors import CheckpointError
from edlm.models import Denoiser, HFMaskedLM, load_denoiser, save_pretrained
from edlm.models.hf_mlm import own_pad_id

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    return PreTrainedTokenizerFast.from_pretrained(str(tiny_bert))


@pytest.fixture
def backbone(tiny_bert, tokenizer):
    return HFMaskedLM.from_pretrained(str(tiny_bert), tokenizer=tokenizer, length=32)


def _tokens(tokenizer, batch=3, length=12, seed=0):
    """Random real ids: no [PAD] and no [MASK]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(5, len(tokenizer), (batch, length), generator=g)
    x[:, 0] = tokenizer.cls_token_id
    return x


def test_forward_shapes_and_the_tokenizer_conventions(backbone, tokenizer):
    assert (tokenizer.mask_token_id, tokenizer.pad_token_id, len(tokenizer)) == (4, 0, 300)
    assert (backbone.vocab_size, backbone.length, backbone.pad_id) == (300, 32, 0)
    assert backbone.time_conditioned is False and not backbone.training  # from_pretrained: eval mode
    x = _tokens(tokenizer)
    logits = backbone(x)
    assert logits.shape == (3, 12, 300) and logits.dtype == torch.float32
    with torch.no_grad():  # the adapter's logits are the masked LM's own, [PAD] aside
        own = backbone.model(input_ids=x).logits
    keep = torch.arange(300) != tokenizer.pad_token_id
    torch.testing.assert_close(logits[..., keep], own[..., keep])
    assert torch.isneginf(logits[..., tokenizer.pad_token_id]).all()


def test_denoiser_ignores_the_time(backbone, tokenizer):
    denoiser = Denoiser(backbone, LogLinearSchedule(), tokenizer.mask_token_id)
    x_t = _tokens(tokenizer)
    x_t[:, 3:7] = tokenizer.mask_token_id
    early = denoiser(x_t, torch.full((3,), 0.1))
    late = denoiser(x_t, torch.full((3,), 0.9))
    assert torch.equal(early, late)  # time-unconditioned: the same logits at every t
    assert not torch.equal(early[:, 3], early[:, 4])  # yet a real network: positions differ


def test_subs_on_its_logits_zero_masks_and_carries_unmasked_tokens_over(backbone, tokenizer):
    mask_id = tokenizer.mask_token_id
    x_t = _tokens(tokenizer)
    x_t[:, ::2] = mask_id
    log_p = subs_log_probs(backbone(x_t), x_t, mask_id)  # (3, 12, 300)
    assert torch.isneginf(log_p[..., mask_id]).all()  # SPEC 1.3(a): never predicts [MASK] (id 4, not the last)
    unmasked = x_t != mask_id
    carried = log_p[unmasked].exp()  # SPEC 1.3(b): one-hot at the token itself
    torch.testing.assert_close(carried, torch.nn.functional.one_hot(x_t[unmasked], 300).float())
    masked = log_p[~unmasked].exp()
    torch.testing.assert_close(masked.sum(-1), torch.ones(len(masked)))
    assert (masked[:, [mask_id, tokenizer.pad_token_id]] == 0).all() and (masked > 0).sum(-1).min() > 200


def test_padding_is_not_attended_to(backbone, tokenizer):
    x = _tokens(tokenizer, batch=2, length=8)
    padded = torch.cat([x, torch.full((2, 5), tokenizer.pad_token_id)], dim=1)  # (2, 13)
    torch.testing.assert_close(backbone(padded)[:, :8], backbone(x), atol=1e-5, rtol=1e-5)


def test_output_rows_beyond_the_tokenizer_are_cut(tokenizer, tmp_path):
    from transformers import BertConfig

    torch.manual_seed(1)  # a hub model may pad its output layer: 320 rows for 300 ids
    bert = BertForMaskedLM(BertConfig(vocab_size=320, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64)).eval()
    lm = HFMaskedLM.wrap(bert, tokenizer)
    x = _tokens(tokenizer)
    with torch.no_grad():
        assert lm(x).shape == (3, 12, 300) and lm.length == 64
        assert torch.equal(lm(x)[..., 5:], bert(input_ids=x, attention_mask=torch.ones_like(x)).logits[..., 5:300])
    with pytest.raises(CheckpointError, match="the tokenizer has 400 ids but the masked LM predicts 320"):
        HFMaskedLM(model=bert, vocab_size=400)


def test_save_and_reload_give_identical_logits_with_ties_stored_once(backbone, tokenizer, tmp_path):
    denoiser = Denoiser(backbone, LogLinearSchedule(), tokenizer.mask_token_id)
    save_pretrained(denoiser, tmp_path / "m", tokenizer=tokenizer)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "hf_mlm" and config["denoiser"]["mask_id"] == 4
    assert config["tied"] == {"model.cls.predictions.decoder.weight": "model.bert.embeddings.word_embeddings.weight",
                              "model.cls.predictions.decoder.bias": "model.cls.predictions.bias"}
    stored = load_file(tmp_path / "m" / "model.safetensors")
    assert "model.cls.predictions.decoder.weight" not in stored and "model.bert.embeddings.word_embeddings.weight" in stored

    loaded = load_denoiser(tmp_path / "m")
    assert isinstance(loaded.backbone, HFMaskedLM) and loaded.mask_id == 4
    assert (loaded.vocab_size, loaded.length, loaded.backbone.pad_id) == (300, 32, 0)
    bert = loaded.backbone.model
    assert bert.cls.predictions.decoder.weight is bert.bert.embeddings.word_embeddings.weight  # still tied
    x_t = _tokens(tokenizer)
    x_t[:, 2:6] = 4
    t = torch.rand(3)
    with torch.no_grad():
        assert torch.equal(loaded(x_t, t), denoiser(x_t, t))


def test_from_config_takes_any_tokenizer(tiny_bert_config, tokenizer):
    lm = HFMaskedLM.from_config(str(tiny_bert_config), tokenizer=tokenizer, length=16)  # config: 100 ids, pad 0
    assert (lm.vocab_size, lm.length, lm.pad_id) == (300, 16, 0)
    assert lm.model.config.vocab_size == 300 and lm.model.config.num_hidden_layers == 1
    assert lm(_tokens(tokenizer, length=16)).shape == (3, 16, 300)
    with pytest.raises(ValueError, match="positions"):
        HFMaskedLM.from_config(str(tiny_bert_config), tokenizer=tokenizer, length=65)  # 64 positions
    with pytest.raises(ValueError, match="sequence length 17 exceeds"):
        lm(_tokens(tokenizer, length=17))


def test_a_modernbert_config_takes_the_tokenizers_special_ids(tokenizer):
    from transformers import ModernBertConfig

    # ModernBERT's own ids (50281 ...) lie outside this 300-id vocabulary: a random init takes the tokenizer's
    config = ModernBertConfig(vocab_size=50368, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=64, reference_compile=False)
    assert config.sep_token_id > len(tokenizer)
    lm = HFMaskedLM.from_config(config, tokenizer=tokenizer, length=16)
    c = lm.model.config
    assert (c.vocab_size, c.pad_token_id, c.cls_token_id, c.sep_token_id) == (
        300, tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
    denoiser = Denoiser(lm, LogLinearSchedule(), tokenizer.mask_token_id)
    x_t = _tokens(tokenizer, length=16)
    x_t[:, 4:9] = tokenizer.mask_token_id
    log_p = denoiser(x_t, torch.full((3,), 0.5))
    assert log_p.shape == (3, 16, 300) and torch.isfinite(log_p[:, 4:9, 5:]).all()
    log_p[:, 4].sum().backward()  # a trainable pre-norm backbone: gradients reach the embeddings
    assert lm.model.model.embeddings.tok_embeddings.weight.grad.abs().sum() > 0


def test_own_pad_id_is_none_when_padding_doubles_as_a_separator(tokenizer):
    from edlm.data import load_tokenizer

    assert own_pad_id(tokenizer) == 0
    gpt2_style = load_tokenizer("edlm/assets/wikipedia_en")
    assert own_pad_id(gpt2_style) == gpt2_style.pad_token_id == 1  # its [PAD] is its own
    gpt2_style.pad_token = gpt2_style.eos_token  # as edlm pads a hub tokenizer without [PAD]
    assert own_pad_id(gpt2_style) is None


def test_refuses_pickled_weights_and_missing_paths(tiny_bert, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_bert / "config.json").read_text())
    torch.save(BertForMaskedLM.from_pretrained(str(tiny_bert)).state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only pickled weights.*pytorch_model.bin"):
        HFMaskedLM.from_pretrained(str(pickled))
    with pytest.raises(CheckpointError, match="no such model directory: ./not-here"):
        HFMaskedLM.from_pretrained("./not-here")
