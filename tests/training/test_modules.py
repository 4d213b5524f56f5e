"""The LightningModules compute SPEC 1.5 / next-token losses exactly; EMA, lr schedule, unigram baseline."""

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from edlm.config import OptimConfig
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.models import ARTransformer, DiT, from_pretrained, load_denoiser
from edlm.training.ar_module import ARModule
from edlm.training.base import lr_factor
from edlm.training.callbacks import save_pretrained_atomic
from edlm.training.ema import EMA
from edlm.training.mdlm_module import MDLMModule
from edlm.training.unigram import unigram_perplexity

V, MASK, LEN = 12, 11, 16  # 11 real tokens + [MASK] = the last id


def tiny_dit(time_conditioning=False):
    return DiT(V, LEN, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.0,
               time_conditioning=time_conditioning)


def tiny_ar():
    return ARTransformer(V, LEN, hidden_size=32, n_blocks=1, n_heads=2, dropout=0.0, mask_id=MASK)


def quiet_trainer():
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)


def nelbo_by_hand(module, x_0, seed, attention_mask=None):
    """SPEC 1.5 written out: Σ_b Σ_{i: x_tⁱ=m} (α'_t/(1−α_t)) · log x_θ(x_0ⁱ | x_t) / #real tokens."""
    B = x_0.shape[0]
    real = torch.ones_like(x_0, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    g = torch.Generator().manual_seed(seed)  # replay the module's draws: antithetic t, then the masks
    u = torch.rand((), generator=g)
    t = 1e-3 + (1 - 1e-3) * ((u + torch.arange(B) / B) % 1.0)
    alpha = 1 - (1 - 1e-3) * t
    masked = (torch.rand(x_0.shape, generator=g) >= alpha[:, None]) & real  # padding is never masked
    x_t = torch.where(masked, MASK, x_0)
    time_conditioned = module.model.backbone.time_conditioned
    logits = module.model.backbone(x_t, -torch.log(alpha) if time_conditioned else torch.zeros(B))
    logits[..., MASK] = float("-inf")  # SPEC 1.3(a)
    log_p = logits.log_softmax(-1).gather(-1, x_0[..., None]).squeeze(-1)  # (B, L)
    weight = -(1 - 1e-3) / (1 - alpha)  # α'_t / (1 − α_t)
    return (weight[:, None] * torch.where(masked, log_p, 0.0)).sum() / real.sum()


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_mdlm_loss_is_the_nelbo_by_hand(time_conditioning):
    module = MDLMModule(tiny_dit(time_conditioning), LogLinearSchedule(), MASK)
    x_0 = torch.randint(0, MASK, (6, LEN))
    out = module.nelbo(x_0, None, torch.Generator().manual_seed(3))
    assert out.loss.item() == pytest.approx(nelbo_by_hand(module, x_0, 3).item(), rel=1e-5)
    assert out.loss.item() > 0


def test_mdlm_training_step_returns_the_nelbo():
    module = MDLMModule(tiny_dit(), LogLinearSchedule(), MASK)
    x_0 = torch.randint(0, MASK, (4, LEN))
    torch.manual_seed(5)
    loss = module.training_step({"input_ids": x_0}, 0)
    torch.manual_seed(5)
    again = module.nelbo(x_0, None, None).loss
    assert loss.item() == pytest.approx(again.item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in module.model.parameters() if p.requires_grad)


def test_mdlm_padding_is_never_masked_nor_counted():
    module = MDLMModule(tiny_dit(), LogLinearSchedule(), MASK)
    x_0 = torch.randint(0, MASK, (4, LEN))
    attention_mask = torch.ones_like(x_0)
    attention_mask[:, 10:] = 0
    out = module.nelbo(x_0, attention_mask, torch.Generator().manual_seed(0))
    assert out.num_tokens.tolist() == [10.0] * 4
    expected = nelbo_by_hand(module, x_0, 0, attention_mask)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ar_loss_is_cross_entropy_by_hand():
    module = ARModule(tiny_ar())
    x = torch.randint(0, MASK, (3, LEN))
    loss = module.training_step({"input_ids": x}, 0)
    logits = module.model(x)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, V), x[:, 1:].reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


class _ListData(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def test_validation_is_token_weighted_over_the_split():
    """Two batches with 15 and 2 real tokens: the number is Σ NLL / Σ tokens, not a mean of batch means."""
    module = ARModule(tiny_ar(), ema_decay=0.0)
    x = torch.randint(0, MASK, (2, LEN))
    mask = torch.zeros(2, LEN, dtype=torch.long)
    mask[0, :] = 1  # 15 scored tokens (the first is given)
    mask[1, :3] = 1  # 2 scored tokens
    rows = [{"input_ids": x[i], "attention_mask": mask[i]} for i in range(2)]
    metrics = quiet_trainer().validate(module, DataLoader(_ListData(rows), batch_size=1), verbose=False)[0]
    nll_sum, count = module.nll(x, mask)
    assert count.tolist() == [15.0, 2.0]
    assert metrics["val/nll"] == pytest.approx((nll_sum.sum() / count.sum()).item(), rel=1e-5)
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/nll"]), rel=1e-5)


def test_mdlm_validation_is_reproducible():
    module = MDLMModule(tiny_dit(), LogLinearSchedule(), MASK, ema_decay=0.0, val_seed=4)
    rows = [{"input_ids": torch.randint(0, MASK, (LEN,))} for _ in range(8)]
    loader = DataLoader(_ListData(rows), batch_size=4)
    first = quiet_trainer().validate(module, loader, verbose=False)[0]["val/ppl_bound"]
    torch.manual_seed(123)  # the global stream must not matter
    second = quiet_trainer().validate(module, loader, verbose=False)[0]["val/ppl_bound"]
    assert first == second


def test_validation_uses_ema_weights_and_restores_training_weights():
    module = ARModule(tiny_ar(), ema_decay=0.5, ema_warmup=False)
    before = [p.detach().clone() for p in module.model.parameters()]
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(1.0)
    module.ema.update()  # shadow = 0.5·before + 0.5·(before + 1) = before + 0.5
    rows = [{"input_ids": torch.randint(0, MASK, (LEN,))} for _ in range(2)]
    seen = []
    module.on_validation_batch_start = lambda *a: seen.append(next(module.model.parameters()).detach().clone())
    quiet_trainer().validate(module, DataLoader(_ListData(rows), batch_size=2), verbose=False)
    assert torch.allclose(seen[0], before[0] + 0.5)
    for p, b in zip(module.model.parameters(), before):
        assert torch.equal(p, b + 1.0)


def test_ema_update_by_hand_and_swaps():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net, decay=0.9, warmup=True)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update()  # warm-up decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.shadow[0], 0.1 * w0 + 0.9 * (w0 + 1.0))
    assert ema.current_decay() == pytest.approx(min(0.9, 2 / 11))
    trained = net.weight.detach().clone()
    with ema.averaged():
        assert torch.allclose(net.weight, ema.shadow[0])
        with ema.averaged():  # re-entrant
            pass
        assert torch.allclose(net.weight, ema.shadow[0])
    assert torch.equal(net.weight, trained)
    state = ema.state_dict()
    other = EMA(torch.nn.Linear(3, 2), decay=0.9)
    other.load_state_dict(state)
    assert other.num_updates == 1 and torch.equal(other.shadow[0], ema.shadow[0])


def test_saved_ema_weights_reload_with_identical_logits(tmp_path):
    module = MDLMModule(tiny_dit(), LogLinearSchedule(), MASK, ema_decay=0.5)
    for _ in range(3):
        with torch.no_grad():
            for p in module.model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        module.ema.update()
    x_t = torch.randint(0, V, (2, LEN))
    t = torch.full((2,), 0.5)
    with module.ema.averaged() as model:
        save_pretrained_atomic(model, tmp_path / "model")
        expected = model.eval()(x_t, t)
    again = save_pretrained_atomic(module.model, tmp_path / "model")  # overwrite in place works
    assert again == tmp_path / "model"
    with module.ema.averaged() as model:
        save_pretrained_atomic(model, tmp_path / "model")
    assert torch.equal(load_denoiser(tmp_path / "model")(x_t, t), expected)
    assert torch.equal(from_pretrained(tmp_path / "model", expected_type="dit")(x_t), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folders left


@pytest.mark.parametrize(
    "decay, step, expected",
    [
        ("constant", 0, 0.1),
        ("constant", 9, 1.0),
        ("constant", 500, 1.0),
        ("cosine", 10, 1.0),
        ("cosine", 55, 0.1 + 0.9 * 0.5),
        ("cosine", 100, 0.1),
        ("linear", 55, 0.1 + 0.9 * 0.5),
    ],
)
def test_lr_factor(decay, step, expected):
    assert lr_factor(step, warmup_steps=10, max_steps=100, decay=decay, min_lr_ratio=0.1) == pytest.approx(expected)


def test_optimizer_is_adamw_with_the_configured_settings():
    module = ARModule(tiny_ar(), OptimConfig(lr=1e-3, weight_decay=0.1, warmup_steps=4))
    module.trainer = quiet_trainer()
    conf = module.configure_optimizers()
    opt = conf["optimizer"]
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["weight_decay"] == 0.1
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 4)  # first warm-up step


def test_unigram_perplexity_by_hand():
    # train counts of ids 0, 1 = 2, 1; add-one -> 3, 2 over the support {0, 1} (id 2 = [MASK] excluded)
    ppl = unigram_perplexity(torch.tensor([0, 0, 1]), torch.tensor([0, 1]), 3, exclude_ids=(2,))
    assert ppl == pytest.approx(math.exp(-(math.log(0.6) + math.log(0.4)) / 2))
    with pytest.raises(ValueError):
        unigram_perplexity(torch.tensor([0]), torch.tensor([2]), 3, exclude_ids=(2,))
