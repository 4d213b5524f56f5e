"""SPEC 1.5 / 2.6: the MDLM bound and the EDLM estimate on the exact toy, and `edlm eval nll` on a trained model."""

import itertools
import json
import math

import pytest
import torch

from edlm.cli import main
from edlm.config import load_config
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy import AREnergy
from edlm.energy.nce_energy import NCEEnergy
from edlm.eval.likelihood import edlm_estimate, mdlm_bound
from edlm.models import ARTransformer, load_denoiser, read_checkpoint_config, save_pretrained
from edlm.toy import ToyJoint

SCH = LogLinearSchedule(eps=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy():
    return ToyJoint.markov(3, 4, stay=0.85, seed=0)


class ExactResidualEnergy:
    """E = −log ratio: Π x_θ · exp(−E) is the exact posterior p(x_0 | x_t), so Z = 1 exactly."""

    def __init__(self, toy):
        self.toy = toy

    def __call__(self, x_0, x_t, t, log_p_x0):
        return -self.toy.log_density_ratio(x_0, x_t)


def plug_in_nll(toy) -> torch.Tensor:
    """∫_0^1 (1/t) E_{x_t|x_0}[−log p(x_0 | x_t)] dt per token, for each sequence (N,), by enumeration.

    With M masked positions (|M| = k) the mask probability is t^k (1 − t)^(L−k), and
    ∫ t^(k−1) (1 − t)^(L−k) dt = (k − 1)! (L − k)! / L!.
    """
    L = toy.length
    out = torch.zeros(len(toy.sequences), dtype=torch.float64)
    for n, x_0 in enumerate(toy.sequences):
        for bits in itertools.product([False, True], repeat=L):
            m = torch.tensor(bits)
            k = int(m.sum())
            if k == 0:
                continue
            x_t = torch.where(m, toy.mask_id, x_0)[None]
            log_post = toy.posterior(x_t)[0, toy.index_of(x_0[None])].log()
            out[n] += math.factorial(k - 1) * math.factorial(L - k) / math.factorial(L) * float(-log_post) / L
    return out


def test_mdlm_bound_with_the_exact_denoiser_is_the_exact_nelbo(toy):
    exact = sum(toy.exact_nelbo(x, schedule=SCH) for x in toy.sequences) / (len(toy.sequences) * toy.length)
    out = mdlm_bound(toy, toy.sequences, SCH, toy.mask_id, num_time_samples=64,
                     generator=torch.Generator().manual_seed(0), batch_size=27, t_min=1e-4)
    print(f"toy MDLM bound {out.nll:.4f} ± {out.se:.4f} vs exact NELBO {exact:.4f} nats/token")
    assert out.is_bound and out.num_tokens == 81 * 4 and out.num_time_samples == 64 and len(out.samples) == 64
    assert abs(out.nll - exact) < 3.5 * out.se + 2e-3
    assert 0 < out.se < 0.05
    assert out.ppl == pytest.approx(math.exp(out.nll)) and "PPL <=" in str(out)


def test_edlm_estimate_with_the_exact_energy_is_the_plug_in_nelbo(toy):
    per_seq = plug_in_nll(toy)
    target = float(per_seq.mean())  # the data set is every sequence once
    kw = dict(num_time_samples=24, batch_size=27, t_min=1e-4)
    exact = edlm_estimate(toy, ExactResidualEnergy(toy), toy.sequences, SCH, toy.mask_id, log_z="one",
                          generator=torch.Generator().manual_seed(1), **kw)
    # the exact AR energy (SPEC 2.3, no carry-over) is the same model up to log Z(x_t) = log p(unmasked part):
    # estimating Z from negatives must recover it
    ar = edlm_estimate(toy, AREnergy(toy, toy.mask_id, carry_over=False), toy.sequences, SCH, toy.mask_id,
                       log_z="negatives", n_neg=64, generator=torch.Generator().manual_seed(1),
                       negatives_generator=torch.Generator().manual_seed(2), name="EDLM-AR", **kw)
    bound = mdlm_bound(toy, toy.sequences, SCH, toy.mask_id, generator=torch.Generator().manual_seed(1), **kw)
    print(f"toy plug-in target {target:.4f}; EDLM exact-E {exact.nll:.4f} ± {exact.se:.4f}, EDLM-AR with Ẑ "
          f"{ar.nll:.4f} ± {ar.se:.4f}; MDLM bound {bound.nll:.4f}")
    assert not exact.is_bound and "not a bound" in exact.label and "not a bound" in str(exact)
    assert abs(exact.nll - target) < 3.5 * exact.se + 2e-3
    assert abs(ar.nll - target) < 3.5 * ar.se + 0.01
    # the diffusion term of an EDLM row is the MDLM bound of the same (t, x_t) draws
    assert ar.diffusion_nll == pytest.approx(bound.nll, rel=1e-12)
    assert exact.energy_correction == pytest.approx(exact.nll - exact.diffusion_nll)
    # Not a bound, and optimistic even for the exact model: on data from p the plug-in term is
    # H(x^M | x^U) <= Σ_i H(x^i | x^U), so the estimate falls below the true NLL (here the entropy rate)
    entropy_rate = float(-(toy.probs * toy.probs.log()).sum()) / toy.length
    plug_in_on_p = float((toy.probs * per_seq).sum())
    print(f"under p: plug-in estimate {plug_in_on_p:.4f} < true NLL {entropy_rate:.4f} nats/token")
    assert plug_in_on_p < entropy_rate - 0.05


def test_ar_energy_reads_a_lazy_view_with_the_numbers_of_a_dense_copy(toy):
    """AREnergy (uses_log_p_x0 = "gather") gets SubsLogProbs views on held-out data too; the estimate equals
    the one of the same energy reading dense (n, L, V+1) copies, data and negatives alike."""

    class Dense(AREnergy):
        uses_log_p_x0 = True

    kw = dict(num_time_samples=4, batch_size=27, t_min=1e-4, log_z="negatives", n_neg=8)
    runs = [edlm_estimate(toy, cls(toy, toy.mask_id), toy.sequences, SCH, toy.mask_id,
                          generator=torch.Generator().manual_seed(3), negatives_generator=torch.Generator().manual_seed(4),
                          **kw) for cls in (AREnergy, Dense)]
    assert runs[0].nll == pytest.approx(runs[1].nll, abs=1e-6) and runs[0].energy_correction != 0


def test_zero_energy_changes_nothing(toy):
    """E ≡ 0 with log Ẑ from negatives gives a correction of exactly 0: the estimate equals the bound."""
    zero = lambda x_0, x_t, t, lp: torch.zeros(x_0.shape[0])
    a = edlm_estimate(toy, zero, toy.sequences, SCH, toy.mask_id, num_time_samples=3, log_z="negatives",
                      n_neg=4, generator=torch.Generator().manual_seed(0), batch_size=81)
    b = mdlm_bound(toy, toy.sequences, SCH, toy.mask_id, num_time_samples=3, generator=torch.Generator().manual_seed(0),
                   batch_size=81)
    assert a.nll == pytest.approx(a.diffusion_nll, abs=1e-12) and a.energy_correction == pytest.approx(0, abs=1e-12)
    assert a.nll != b.nll  # one shared stream: the negatives shift the next passes' draws ...
    c = edlm_estimate(toy, zero, toy.sequences, SCH, toy.mask_id, num_time_samples=3, log_z="negatives", n_neg=4,
                      generator=torch.Generator().manual_seed(0), negatives_generator=torch.Generator(), batch_size=81)
    assert c.nll == pytest.approx(b.nll, abs=1e-12)  # ... a separate one keeps them paired with the bound
    with pytest.raises(ValueError, match="log_z"):
        edlm_estimate(toy, zero, toy.sequences, SCH, toy.mask_id, log_z="exact")
    with pytest.raises(ValueError, match="num_time_samples"):
        mdlm_bound(toy, toy.sequences, SCH, toy.mask_id, num_time_samples=0)


# ----------------------------------------------------------------------------- `edlm eval nll` on a trained model
VAL_CHARS = 400_000  # the whole valid split of the slice (66 k chars, 2 k rows of 32); 12.5 k rows of the full one


@pytest.fixture(scope="module")
def micro_mdlm(tmp_path_factory):
    """A 60-step micro MDLM on text8_wiki (fixed a–z tokenizer). A one-sample NELBO has a heavy tail from small
    t (weight 1/t): on the slice's 66 k validation chars it is good to ~0.5 %, on the full split's 400 k to ~0.3 %."""
    from edlm.training.trainer import train

    root = tmp_path_factory.mktemp("nll")
    settings = {
        "model.hidden_size": 32, "model.n_blocks": 1, "model.n_heads": 2, "model.cond_dim": 16,
        "data.corpus": "text8_wiki", "data.length": 32, "data.batch_size": 16, "data.eval_batch_size": 256,
        "data.max_train_chars": 20_000, "data.max_val_chars": VAL_CHARS, "data.cache_dir": str(root / "cache"),
        "optim.lr": 3e-3, "optim.warmup_steps": 5, "ema.decay": 0.9, "train.max_steps": 60,
        "train.val_check_interval": 60, "train.log_every_n_steps": 10, "train.progress_bar": False,
        "train.run_dir": str(root / "mdlm"),
    }
    cfg = load_config("tiny", [f"{k}={v}" for k, v in settings.items()])
    return root, cfg, train(cfg, "mdlm")


def test_cli_nll_matches_the_bound_the_trainer_logged(micro_mdlm, tmp_path, capsys):
    root, cfg, result = micro_mdlm
    model = root / "mdlm" / "model"  # EMA weights: what validation used
    logged = read_checkpoint_config(model)["extra"]["metrics"]["val/nll"]
    assert logged == pytest.approx(result.val_nll, rel=1e-6)
    data_args = ["--data", "text8_wiki", "--split", "valid", "--cache-dir", str(root / "cache")]
    out = tmp_path / "nll.json"
    rc = main(["eval", "nll", "--denoiser", str(model), *data_args, "--max-chars", str(VAL_CHARS),
               "--time-samples", "4", "--batch-size", "256", "--json", str(out)])
    assert rc == 0
    print(capsys.readouterr().out)
    (mdlm,) = json.loads(out.read_text())["results"]
    print(f"eval nll MDLM bound {mdlm['nll']:.4f} ± {mdlm['se']:.4f} (4 time samples) vs the trainer's val/nll "
          f"{logged:.4f} (one sample): {100 * (mdlm['nll'] / logged - 1):+.2f} %")
    assert mdlm["is_bound"] and mdlm["label"] == "bound" and mdlm["num_time_samples"] == 4
    from edlm.data import load_corpus

    docs = load_corpus("text8_wiki", "valid", max_chars=VAL_CHARS, cache_dir=str(tmp_path / "corpora"))["text"]
    assert mdlm["num_tokens"] == 32 * mdlm["num_sequences"]
    assert mdlm["num_sequences"] == sum(len(d) + 2 for d in docs) // 32 > 2000  # all of it: 1 char = 1 id, BOS/EOS
    # two estimates of one bound: 4 passes vs training's 1, apart by their sampling noise only. The sd of one
    # pass is se·√4, so the difference has sd se·√(4 + 1)
    assert abs(mdlm["nll"] - logged) < 3.5 * mdlm["se"] * math.sqrt(4 + 1)
    # and the CLI with training's seed, batch size and one time sample is training's validation, draw for draw
    out1 = tmp_path / "nll1.json"
    assert main(["eval", "nll", "--denoiser", str(model), *data_args, "--max-chars", str(VAL_CHARS), "--time-samples",
                 "1", "--batch-size", "256", "--seed", str(cfg.train.seed), "--json", str(out1)]) == 0
    (one,) = json.loads(out1.read_text())["results"]
    assert one["nll"] == pytest.approx(logged, rel=1e-5) and one["num_sequences"] == mdlm["num_sequences"]
    # draw for draw: training's seed and batch size with one time sample reproduce the logged number
    from edlm.eval.nll_report import held_out_data
    from edlm.models import load_tokenizer_from

    data = held_out_data("text8_wiki", load_tokenizer_from(model), 32, split="valid", max_chars=VAL_CHARS,
                         packing="wrap", cache_dir=str(root / "cache"))  # the data options, as training set them
    replay = mdlm_bound(load_denoiser(model), data, num_time_samples=1, batch_size=256,
                        generator=torch.Generator().manual_seed(cfg.train.seed))
    assert replay.nll == pytest.approx(logged, rel=1e-5)


def test_cli_nll_energy_rows(micro_mdlm, tmp_path, capsys):
    """An untrained NCE energy (E ≡ 0) and a random AR model, on a small slice: every row's kind and wiring."""
    root, _, _ = micro_mdlm
    model = root / "mdlm" / "model"
    tok = load_tokenizer_from_dir(model)
    save_pretrained(NCEEnergy.from_denoiser(model), tmp_path / "nce", tokenizer=tok)
    save_pretrained(ARTransformer(len(tok), 32, 32, 1, 2, dropout=0.0, mask_id=tok.mask_token_id), tmp_path / "ar",
                    tokenizer=tok)
    out = tmp_path / "nll.json"
    rc = main(["eval", "nll", "--denoiser", str(model), "--data", "text8_wiki", "--cache-dir", str(root / "cache"),
               "--max-chars", "8000", "--time-samples", "3", "--n-neg", "4", "--energy", f"nce:{tmp_path / 'nce'}",
               "--energy", f"ar:{tmp_path / 'ar'}", "--energy", f"ar:{tmp_path / 'ar'},carry_over=false",
               "--bound-k", "2", "--bound-steps", "8", "--bound-draws", "2", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    print(text)
    assert "(estimate)" in text and "(bound)" in text and "(exact)" in text and "<= " in text
    rows = json.loads(out.read_text())["results"]
    assert [r["kind"] for r in rows] == ["bound", "bound", "estimate", "bound", "exact", "estimate", "bound",
                                         "exact", "estimate", "bound"]
    mdlm, mdlm_t, nce, nce_bound, ar_exact, ar, ar_bound, _, ar_full, _ = rows
    assert ar_full["log_z"] == "negatives (n=4)"  # the exact energy's Z is not ≈ 1: estimated, as for NCE
    assert mdlm_t["detail"] == "k=1, T=8" and nce_bound["detail"] == "k=2, T=8, 2 draws"
    assert nce["label"] == ar["label"] == "estimate (not a bound)" and nce["log_z"] == "negatives (n=4)"
    assert ar["log_z"] == "one"
    assert nce["diffusion_nll"] == pytest.approx(mdlm["nll"], rel=1e-12)  # paired (t, x_t) draws
    assert nce["nll"] == pytest.approx(mdlm["nll"], rel=1e-9)  # E ≡ 0: log Ẑ cancels −E exactly
    assert nce_bound["nll"] == pytest.approx(mdlm_t["nll"], rel=1e-9)  # E ≡ 0: every ratio k·w/(k·w) is 1
    assert ar_bound["diffusion_nll"] == pytest.approx(mdlm_t["nll"], rel=1e-12)
    assert ar["nll"] > mdlm["nll"]  # a random AR model is a bad energy
    assert ar_exact["se"] is None and ar_exact["nll"] > 0.9 * math.log(len(tok))  # random: about log V
    assert main(["eval", "nll", "--denoiser", str(model), "--data", "text8_wiki", "--energy", "xx:foo"]) == 2


def load_tokenizer_from_dir(path):
    from edlm.models import load_tokenizer_from

    return load_tokenizer_from(path)


def test_ar_nll_is_the_models_exact_next_token_nll():
    from edlm.eval.likelihood import ar_nll
    from edlm.models import ARTransformer

    torch.manual_seed(3)
    model = ARTransformer(6, 12, hidden_size=16, n_blocks=1, n_heads=2, dropout=0.0, mask_id=5).eval()
    x = torch.randint(0, 5, (7, 12))
    out = ar_nll(model, x, batch_size=3)
    with torch.no_grad():
        expected = -model.log_prob(x).double().sum() / (7 * 11)  # the first token of each row is given
    assert out.kind == "exact" and not out.is_bound and out.label == "exact" and out.cell(3).endswith("(exact)")
    assert out.nll == pytest.approx(float(expected), rel=1e-6) and out.num_tokens == 7 * 11
    padded = [{"input_ids": x[:4], "attention_mask": torch.ones(4, 12, dtype=torch.long)}]
    padded[0]["attention_mask"][:, 6:] = 0  # padding is not scored
    with torch.no_grad():
        lp = model.token_log_probs(x[:4]).double()[:, 1:6]
    assert ar_nll(model, padded).nll == pytest.approx(float(-lp.sum() / 20), rel=1e-6)
