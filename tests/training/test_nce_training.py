"""SPEC 2.4: NCE training of the energy against a frozen denoiser — the batch, the freezing, `train_energy`."""

import json
import os

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from edlm.config import EnergyConfig, load_config
from edlm.data import load_tokenizer
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy.nce_energy import NCEEnergy
from edlm.energy.nce_loss import nce_loss
from edlm.errors import ConfigError
from edlm.models import Denoiser, DiT, from_pretrained, read_checkpoint_config
from edlm.training.callbacks import AtomicCheckpointIO
from edlm.training.energy_trainer import train_energy
from edlm.training.nce_module import NCEModule

V1, MASK, LEN = 12, 11, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_denoiser():
    dit = DiT(V1, LEN, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.0)
    with torch.no_grad():
        dit.output_layer.linear.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))  # not uniform
    return Denoiser(dit, LogLinearSchedule(), MASK)


class Recorder(torch.nn.Module):
    """An energy that remembers what it was asked to score: E = a learned scale × (number of token 0s)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.3))
        self.calls = []

    def forward(self, x_0, x_t, t, log_p_x0=None, attention_mask=None):
        self.calls.append((x_0.clone(), x_t.clone(), t.clone()))
        return self.scale * (x_0 == 0).sum(-1).float() - 1.0


def test_nce_batch_scores_data_first_and_exact_negatives_for_the_same_x_t():
    energy = Recorder()
    module = NCEModule(energy, tiny_denoiser(), LogLinearSchedule(), MASK, n_neg=3)
    x_0 = torch.randint(0, MASK, (8, LEN), generator=torch.Generator().manual_seed(2))
    out = module.nce_batch(x_0, None, torch.Generator().manual_seed(5))
    (x0_all, xt_all, t_all), = energy.calls
    assert x0_all.shape == (8 * 4, LEN)
    x0_all, xt_all, t_all = x0_all.view(8, 4, LEN), xt_all.view(8, 4, LEN), t_all.view(8, 4)
    assert torch.equal(x0_all[:, 0], x_0)  # the data come first in each group
    x_t = xt_all[:, 0]
    assert (xt_all == x_t[:, None]).all() and (t_all == t_all[:, :1]).all()  # one x_t and t per group
    # x_t ~ q: unmasked positions are x_0; t antithetic over the batch (one point per stratum of width 1/8)
    assert ((x_t == MASK) | (x_t == x_0)).all() and (x_t == MASK).any()
    strata = ((t_all[:, 0] - 1e-3) / (1 - 1e-3) * 8).floor().long().sort().values
    assert torch.equal(strata, torch.arange(8))
    negatives = x0_all[:, 1:]
    unmasked = (x_t != MASK)[:, None].expand_as(negatives)
    assert torch.equal(negatives[unmasked], x_t[:, None].expand_as(negatives)[unmasked])  # copied
    assert (negatives != MASK).all()  # never the mask
    assert (negatives[~unmasked] != x_0[:, None].expand_as(negatives)[~unmasked]).any()  # real draws
    e = energy.scale.detach() * (x0_all == 0).sum(-1).float() - 1.0
    ref = nce_loss(e[:, 0], e[:, 1:])
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-6)
    assert out.accuracy.item() == pytest.approx(ref.accuracy.item())


def test_the_denoiser_stays_frozen_and_out_of_the_checkpoint(tmp_path):
    denoiser = tiny_denoiser()
    before = {k: v.clone() for k, v in denoiser.state_dict().items()}
    energy = NCEEnergy.from_denoiser(denoiser)
    with torch.no_grad():
        energy.head[-1].weight.normal_(0, 0.1)  # a non-zero head, so every energy weight gets a gradient
    module = NCEModule(energy, denoiser, LogLinearSchedule(), MASK, n_neg=2, ema_decay=0.5)
    assert all(not p.requires_grad for p in module.denoiser.parameters())
    assert len(module.ema.shadow) == len(list(energy.parameters()))  # the EMA covers the energy only

    modes = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append((pl_module.denoiser.training, pl_module.model.training))

    data = [{"input_ids": torch.randint(0, MASK, (LEN,))} for _ in range(32)]
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Spy()])
    trainer.fit(module, DataLoader(data, batch_size=8))
    assert modes and all(m == (False, True) for m in modes)  # denoiser in eval mode, energy training
    for k, v in denoiser.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(energy.blocks[0].attn_qkv.weight, denoiser.backbone.blocks[0].attn_qkv.weight)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert not any(k.startswith("denoiser.") for k in ckpt["state_dict"])
    assert ckpt["edlm"]["kind"] == "energy" and ckpt["edlm"]["n_neg"] == 2
    # a resume restores the energy strictly and keeps the (separately loaded) denoiser
    fresh = NCEModule(NCEEnergy.from_denoiser(denoiser), denoiser, LogLinearSchedule(), MASK, n_neg=2)
    trainer2 = L.Trainer(accelerator="cpu", devices=1, max_steps=5, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer2.fit(fresh, DataLoader(data, batch_size=8), ckpt_path=tmp_path / "last.ckpt")
    assert trainer2.global_step == 5 and fresh.ema.num_updates == 5


def test_train_energy_from_a_trained_mdlm_run(mdlm_run, tmp_path, cache_dir, micro, monkeypatch):
    mdlm_dir = mdlm_run[0] / "model"
    run_dir = tmp_path / "energy"
    cfg = load_config("tiny", micro(run_dir, cache_dir, max_steps=40))
    written, save = [], AtomicCheckpointIO.save_checkpoint
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", lambda io, ckpt, path, storage_options=None: (
        written.append(os.path.basename(path)), save(io, ckpt, path, storage_options)))
    result = train_energy(cfg, str(mdlm_dir), EnergyConfig(n_neg=2))
    assert written and set(written) == {"last.ckpt"}  # every checkpoint goes through the atomic writer
    print(result.summary())
    for name in ("config.yaml", "energy.yaml", "metrics.json", "checkpoints/last.ckpt", "tokenizer/tokenizer.json",
                 "model/config.json", "model/model.safetensors", "model/tokenizer.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["kind"] == "energy" and metrics["global_step"] == 40 and metrics["n_neg"] == 2
    assert metrics["denoiser"] == str(mdlm_dir)
    # a 40-step energy already tells data from the micro denoiser's samples: > 0.5 by more than 3 SE
    assert result.val_nce_acc - 0.5 > 3 * result.val_nce_acc_se > 0
    assert result.val_nce_loss < 2 * 0.6931 and result.val_energy_margin > 0
    energy = from_pretrained(run_dir / "model", expected_type="nce_energy")
    assert isinstance(energy, NCEEnergy)
    config = read_checkpoint_config(run_dir / "model")
    assert config["extra"]["energy_config"]["n_neg"] == 2
    assert config["extra"]["metrics"]["val/nce_acc"] == pytest.approx(result.val_nce_acc)
    assert len(load_tokenizer(run_dir / "model")) == len(load_tokenizer(mdlm_dir)) == energy.vocab_size
    # resume: continue to 50 steps
    cfg = load_config("tiny", micro(run_dir, cache_dir, max_steps=50, **{"train.resume": "true"}))
    again = train_energy(cfg, str(mdlm_dir), EnergyConfig(n_neg=2))
    assert (again.start_step, again.global_step) == (40, 50)


def test_train_energy_rejects_bad_setups(mdlm_run, tmp_path, cache_dir, micro):
    cfg = load_config("tiny", micro(tmp_path / "a", cache_dir))
    with pytest.raises(ConfigError, match="denoiser"):
        train_energy(cfg)
    long = load_config("tiny", micro(tmp_path / "b", cache_dir, **{"data.length": 64}))
    with pytest.raises(ConfigError, match="exceeds the denoiser's maximum length"):
        train_energy(long, str(mdlm_run[0] / "model"))
    with pytest.raises(ConfigError, match="n_neg"):
        EnergyConfig(n_neg=0)


def test_a_resumed_energy_run_continues_exactly(mdlm_run, tmp_path, cache_dir, micro, logged):
    """Stop at step 10, resume to 20: the same batches, times, masks and negatives as one 20-step run."""
    mdlm_dir, settings = str(mdlm_run[0] / "model"), {"optim.decay": "constant", "train.val_check_interval": 5}
    train_energy(load_config("tiny", micro(tmp_path / "ref", cache_dir, max_steps=20, **settings)), mdlm_dir)
    train_energy(load_config("tiny", micro(tmp_path / "run", cache_dir, max_steps=10, **settings)), mdlm_dir)
    resumed = load_config("tiny", micro(tmp_path / "run", cache_dir, max_steps=20, **settings, **{"train.resume": 1}))
    train_energy(resumed, mdlm_dir)
    ref, run = logged(tmp_path / "ref", "train/nce_loss"), logged(tmp_path / "run", "train/nce_loss")
    assert sorted(ref) == sorted(run) == list(range(20))
    assert [run[s] for s in range(20)] == [ref[s] for s in range(20)]


def test_energy_keep_best_reports_the_validation_of_the_weights_it_keeps(mdlm_run, tmp_path, cache_dir, micro, logged):
    run_dir = tmp_path / "energy"
    cfg = load_config("tiny", micro(run_dir, cache_dir, max_steps=30, **{"train.keep": "best", "optim.lr": 3e-2}))
    result = train_energy(cfg, str(mdlm_run[0] / "model"), EnergyConfig(n_neg=2))
    val = logged(run_dir, "val/nce_loss")  # CSV step = global step - 1
    assert len(val) == 3
    assert result.model_step == min(val, key=val.get) + 1
    assert result.val_nce_loss == pytest.approx(min(val.values()), rel=1e-6)
    extra = read_checkpoint_config(run_dir / "model")["extra"]
    assert extra["global_step"] == result.model_step
    assert extra["metrics"]["val/nce_acc"] == pytest.approx(result.val_nce_acc)
