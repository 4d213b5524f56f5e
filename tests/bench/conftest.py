"""Micro models saved in a temp dir, a tiny fake judge, and a sweep config over them (runs in seconds)."""

import textwrap

import pytest
import torch

from edlm.bench import load_sweep_config

ALPHABET = "abcdefgh \n"
TEXT = ("abc def gha bed\nface fade bad cab\n" * 40)  # held-out "corpus" of the real-text reference


def _randomize(model: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """MDLM's init zeroes the output layer, which would make every sample the same; use noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


@pytest.fixture(scope="session")
def micro_models(tmp_path_factory):
    """{"denoiser": dir, "ar": dir, "corpus": dir} of a 1-block DiT and AR model (length 16) sharing a char tokenizer."""
    from edlm.data import char_tokenizer
    from edlm.diffusion.schedules import get_schedule
    from edlm.models import ARTransformer, Denoiser, DiT, save_pretrained

    root = tmp_path_factory.mktemp("bench-models")
    tok = char_tokenizer(ALPHABET)
    V1 = len(tok)  # real tokens + [MASK]
    sizes = dict(vocab_size=V1, length=16, hidden_size=32, n_blocks=1, n_heads=2, dropout=0.0)
    dit = _randomize(DiT(**sizes, cond_dim=16), seed=1)
    ar = _randomize(ARTransformer(**sizes, mask_id=V1 - 1), seed=2)
    save_pretrained(Denoiser(dit, get_schedule("loglinear"), V1 - 1), root / "mdlm", tokenizer=tok)
    save_pretrained(ar, root / "ar", tokenizer=tok)
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "valid.txt").write_text(TEXT)
    return {"denoiser": root / "mdlm", "ar": root / "ar", "corpus": corpus, "tokenizer": tok}


@pytest.fixture(scope="session")
def fake_judge(micro_models):
    """A random 1-layer GPT-2 over the same characters, as an ``edlm.eval.Judge``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from edlm.eval import Judge

    tok = micro_models["tokenizer"]
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.bos_token_id)
    return Judge(GPT2LMHeadModel(cfg), tok, name="fake-gpt2")


@pytest.fixture(scope="session")
def sweep_yaml(micro_models, tmp_path_factory):
    """A sweep config file: steps {2, 4} × energy {none, ar} × k {1, 2}, 4 samples per cell, + 2 references."""
    path = tmp_path_factory.mktemp("bench-config") / "micro.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: micro
        denoiser: {micro_models['denoiser']}
        energies:
          ar: ar:{micro_models['ar']}
        grid:
          steps: [2, 4]
          energy: [none, ar]
          k: [1, 2]
        num_samples: 4
        batch_size: 2
        length: 12
        device: cpu
        judge: none
        reference:
          corpus: {micro_models['corpus']}
          split: valid
        """))
    return path


@pytest.fixture
def sweep_cfg(sweep_yaml):
    return lambda *overrides: load_sweep_config(sweep_yaml, list(overrides))
