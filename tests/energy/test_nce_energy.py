"""SPEC 2.4: the NCE energy network — shapes, initialisation from a DiT, checkpoints, use in `generate`."""

import json

import pytest
import torch
from safetensors.torch import save_file

from edlm import generate
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy.nce_energy import NCEEnergy
from edlm.models import MODEL_TYPES, Denoiser, DiT, from_pretrained, save_pretrained

V1, LEN = 13, 16  # 12 real tokens + [MASK] = 12
MASK = V1 - 1


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize_(model, std=0.3, seed=0):
    """Replace every parameter by N(0, std²): the zero inits would make the checks below vacuous."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_dit(time_conditioning=False):
    return randomize_(DiT(V1, LEN, hidden_size=32, n_blocks=2, n_heads=4, cond_dim=16, dropout=0.0,
                          time_conditioning=time_conditioning)).eval()


def batch(n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x_0 = torch.randint(0, MASK, (n, LEN), generator=g)
    x_t = torch.where(torch.rand(n, LEN, generator=g) < 0.5, MASK, x_0)
    return x_0, x_t, torch.rand(n, generator=g)


def test_shapes_zero_init_and_dependence_on_both_inputs():
    energy = NCEEnergy(V1, LEN, hidden_size=32, n_blocks=2, n_heads=4, cond_dim=16, dropout=0.0)
    x_0, x_t, t = batch()
    e = energy(x_0, x_t, t, None)
    assert e.shape == (5,) and e.dtype == torch.float32
    assert torch.equal(e, torch.zeros(5))  # zero-initialised head: EDLM starts as MDLM
    randomize_(energy).eval()
    e = energy(x_0, x_t, t)
    x_0b = x_0.clone()
    x_0b[:, 3] = (x_0b[:, 3] + 1) % MASK
    x_tb = x_t.clone()
    x_tb[:, 5] = torch.where(x_tb[:, 5] == MASK, x_0[:, 5], MASK)
    assert not torch.allclose(energy(x_0b, x_t, t), e)  # reads x_0
    assert not torch.allclose(energy(x_0, x_tb, t), e)  # reads x_t
    # per-sequence: row i depends on row i only
    torch.testing.assert_close(energy(x_0[:2], x_t[:2], t[:2]), e[:2])
    # the mean-pool runs over real tokens only: padding content is ignored
    mask = torch.ones(5, LEN, dtype=torch.long)
    mask[:, -4:] = 0
    with_pad = energy(x_0, x_t, t, None, mask)
    # a not-time-conditioned energy ignores t
    torch.testing.assert_close(energy(x_0, x_t, torch.zeros(5)), e)
    assert with_pad.shape == (5,) and not torch.allclose(with_pad, e)
    with pytest.raises(ValueError, match="same shape"):
        energy(x_0, x_t[:, :-1], t)
    with pytest.raises(ValueError, match="maximum length"):
        energy(torch.zeros(1, LEN + 1, dtype=torch.long), torch.zeros(1, LEN + 1, dtype=torch.long), t[:1])


def test_from_denoiser_takes_the_first_blocks_for_a_cheaper_energy():
    dit = tiny_dit()
    energy = NCEEnergy.from_denoiser(Denoiser(dit, LogLinearSchedule(), MASK), n_blocks=1)
    assert energy.n_blocks == len(energy.blocks) == 1 and energy.get_config()["n_blocks"] == 1
    for k, v in energy.blocks[0].state_dict().items():
        assert torch.equal(v, dit.blocks[0].state_dict()[k]), k
    assert sum(p.numel() for p in energy.parameters()) < sum(p.numel() for p in NCEEnergy.from_denoiser(dit).parameters())
    for bad in (0, 3):
        with pytest.raises(ValueError, match="n_blocks must be in"):
            NCEEnergy.from_denoiser(dit, n_blocks=bad)


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_from_denoiser_copies_the_blocks_exactly(time_conditioning):
    dit = tiny_dit(time_conditioning)
    denoiser = Denoiser(dit, LogLinearSchedule(), MASK)
    energy = NCEEnergy.from_denoiser(denoiser)
    assert energy.get_config() == dict(vocab_size=V1, length=LEN, hidden_size=32, n_blocks=2, n_heads=4, cond_dim=16,
                                       dropout=0.0, time_conditioning=time_conditioning, mask_id=MASK,
                                       schedule="loglinear")
    dit_state, e_state = dit.state_dict(), energy.state_dict()
    shared = [k for k in dit_state if k.split(".")[0] in ("vocab_embed", "sigma_map", "rotary_emb", "blocks")]
    assert len(shared) == 1 + 4 + 1 + 2 * 10  # embedding, σ-MLP, rotary, 10 tensors per block
    for k in shared:
        assert torch.equal(e_state[k], dit_state[k]), k
    assert not e_state["blocks.0.attn_qkv.weight"].data_ptr() == dit_state["blocks.0.attn_qkv.weight"].data_ptr()
    # with [I | 0] input projection, the energy's blocks see exactly what the denoiser's blocks see for x_0
    x_0, x_t, t = batch()
    sigma = LogLinearSchedule().sigma(t) if time_conditioning else torch.zeros(5)
    h_dit = dit.vocab_embed(x_0)
    c = torch.nn.functional.silu(dit.sigma_map(sigma))
    for block in dit.blocks:
        h_dit = block(h_dit, dit.rotary_emb(LEN, x_0.device), c)
    randomize_(energy.head, seed=3)
    expected = energy.head(h_dit.mean(1)).squeeze(-1)
    torch.testing.assert_close(energy(x_0, x_t, t), expected)


def test_from_denoiser_reads_checkpoints_including_mdlm_hub_layout(tmp_path):
    dit = tiny_dit()
    save_pretrained(Denoiser(dit, LogLinearSchedule(), MASK), tmp_path / "edlm")
    hub = tmp_path / "hub"
    hub.mkdir()
    config = {"model_type": "mdlm", "vocab_size": V1, "model_length": LEN, "hidden_dim": 32, "cond_dim": 16,
              "n_blocks": 2, "n_heads": 4, "dropout": 0.0, "time_conditioning": False}
    (hub / "config.json").write_text(json.dumps(config))
    save_file({"backbone." + k: v.contiguous() for k, v in dit.state_dict().items()}, hub / "model.safetensors")
    for path in (tmp_path / "edlm", hub):
        energy = NCEEnergy.from_denoiser(path)
        assert torch.equal(energy.blocks[1].mlp[2].weight, dit.blocks[1].mlp[2].weight)
        assert torch.equal(energy.vocab_embed.embedding, dit.vocab_embed.embedding)
    with pytest.raises(TypeError, match="DiT"):
        NCEEnergy.from_denoiser(torch.nn.Linear(2, 2))


def test_save_and_load_give_identical_energies(tmp_path):
    assert MODEL_TYPES["nce_energy"] is NCEEnergy
    energy = randomize_(NCEEnergy(V1, LEN, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.0,
                                  time_conditioning=True, mask_id=MASK)).eval()
    save_pretrained(energy, tmp_path)
    loaded = from_pretrained(tmp_path, expected_type="nce_energy")
    assert type(loaded) is NCEEnergy and loaded.get_config() == energy.get_config()
    x_0, x_t, t = batch()
    assert torch.equal(loaded(x_0, x_t, t), energy(x_0, x_t, t))


def test_generate_with_the_nce_energy():
    denoiser = Denoiser(tiny_dit(), LogLinearSchedule(), MASK)
    energy = randomize_(NCEEnergy.from_denoiser(denoiser)).eval()
    out = generate(denoiser, LEN, 3, MASK, MASK, steps=4, energy=energy, k=4,
                   generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (3, LEN) and (out.tokens != MASK).all()
    assert out.nfe_energy >= 1 and out.energy_evals >= 4 and out.is_steps >= 1
