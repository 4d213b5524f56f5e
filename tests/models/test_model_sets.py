"""A shipped model set stores its tokenizer once, beside its checkpoints, and every checkpoint of it finds it."""

import shutil
from pathlib import Path

import pytest

import edlm
from edlm.models.checkpoints import check_vocab, from_pretrained, load_tokenizer_from

ASSETS = Path(edlm.__file__).parent / "assets"
SETS = sorted(p.name for p in ASSETS.iterdir() if p.is_dir())


@pytest.mark.parametrize("model_set", SETS)
def test_each_set_stores_one_tokenizer_that_every_checkpoint_loads(model_set):
    root = ASSETS / model_set
    assert sorted(p.parent.name for p in root.rglob("tokenizer.json")) == [model_set]
    checkpoints = sorted(p.parent for p in root.glob("*/config.json"))
    assert [c.name for c in checkpoints] == ["ar", "mdlm", "nce"]
    for directory in checkpoints:
        tokenizer = load_tokenizer_from(directory)
        assert tokenizer is not None and tokenizer.mask_token == "[MASK]"
        if directory.name != "nce":  # the NCE energy's vocabulary is the denoiser's, checked by load_energy
            check_vocab(from_pretrained(directory), tokenizer)


def test_a_checkpoint_with_its_own_tokenizer_uses_it_and_one_without_any_gets_none(tmp_path):
    lonely = tmp_path / "alone" / "mdlm"
    shutil.copytree(ASSETS / "tiny-shakespeare" / "mdlm", lonely)
    assert load_tokenizer_from(lonely) is None
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ASSETS / "wikipedia_en" / name, lonely / name)  # its own (here: another set's) wins
    shutil.copy(ASSETS / "tiny-shakespeare" / "tokenizer.json", lonely.parent / "tokenizer.json")
    assert len(load_tokenizer_from(lonely)) == len(load_tokenizer_from(ASSETS / "wikipedia_en" / "mdlm"))
