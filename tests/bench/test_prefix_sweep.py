"""Prefix-completion sweeps (``prompt_tokens``): every cell continues the same held-out prompts, kept bit for bit,
and is scored on its continuations given the prompts."""

import pytest

from edlm.bench import expand_cells, load_sweep_config, read_results, read_samples, run_sweep
from edlm.errors import ConfigError
from edlm.eval.gen_ppl import generative_perplexity

P = 5  # prompt tokens of the 12-token samples


@pytest.fixture(scope="module")
def prefix_run(tmp_path_factory, sweep_yaml, fake_judge):
    out = tmp_path_factory.mktemp("prefix")
    cfg = load_sweep_config(sweep_yaml, [f"prompt_tokens={P}", "grid.steps=[2]"])
    run_sweep(cfg, out, judge=fake_judge, progress=False, plot=False, command="test")
    samples = {p.stem: read_samples(p) for p in sorted((out / "samples").glob("*.jsonl"))}
    return out, cfg, samples


def test_every_cell_continues_the_real_texts_prompts(prefix_run, micro_models):
    out, cfg, samples = prefix_run
    by_kind = {h["settings"]["kind"] + h["settings"]["energy"]: s for h, s in samples.values()}
    real = by_kind.pop("real_textnone")
    assert set(by_kind) == {"diffusionnone", "diffusionar", "ar_samplesnone"}  # MDLM, EDLM-AR, AR samples
    tok = micro_models["tokenizer"]
    assert len({tuple(r["tokens"][:P]) for r in real}) > 1  # prompts differ across samples
    for records in by_kind.values():
        assert len(records) == cfg.num_samples
        for mine, truth in zip(records, real):
            assert mine["tokens"][:P] == truth["tokens"][:P]  # the prompt survives, bit for bit
            assert len(mine["tokens"]) == 12
            assert mine["prompt"] == tok.decode(truth["tokens"][:P], skip_special_tokens=True)
            assert mine["continuation"] == tok.decode(mine["tokens"][P:], skip_special_tokens=True)
    generated = [r["tokens"][P:] for records in by_kind.values() for r in records]
    assert any(g != t["tokens"][P:] for g, t in zip(generated, real * 3))  # continuations are generated


def test_cells_are_scored_on_their_continuations_given_the_prompt(prefix_run, fake_judge):
    out, _, samples = prefix_run
    rows = {r["cell_key"]: r for r in read_results(out)}
    assert set(rows) == set(samples)
    for key, (_, records) in samples.items():
        expect = generative_perplexity([r["continuation"] for r in records], fake_judge,
                                       contexts=[r["prompt"] for r in records])
        assert rows[key]["gen_ppl"] == pytest.approx(expect.gen_ppl, rel=1e-6)
        assert rows[key]["judge_tokens"] == expect.num_tokens == sum(len(r["continuation"]) for r in records)
        assert rows[key]["prompt_tokens"] == P


def test_prompted_cells_have_their_own_keys_and_bad_lengths_are_refused(sweep_yaml):
    plain = {c.key for c in expand_cells(load_sweep_config(sweep_yaml))}
    prompted = {c.key for c in expand_cells(load_sweep_config(sweep_yaml, [f"prompt_tokens={P}"]))}
    assert plain.isdisjoint(prompted)
    assert all("-p5" in k for k in prompted)
    for bad in ("prompt_tokens=12", "prompt_tokens=-1"):
        with pytest.raises(ConfigError, match="prompt_tokens"):
            load_sweep_config(sweep_yaml, [bad])
