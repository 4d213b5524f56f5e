"""End-to-end sweeps on micro models: results + plots, kill-and-resume, shards + merge, stage split, CLI."""

import json

import pytest

from edlm.bench import (
    PLOT_FILES,
    TIMING_FIELDS,
    expand_cells,
    merge_results,
    read_results,
    read_samples,
    run_sweep,
)
from edlm.cli import main


class Killed(Exception):
    """Stands in for a kill: raised from the on_cell_done hook."""


def _strip(rows):
    """Rows without the fields that legitimately change between runs (timing, machine, date, command)."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def _samples(out):
    """cell key -> sample records (text and tokens) of every samples file."""
    return {p.stem: read_samples(p)[1] for p in sorted((out / "samples").glob("*.jsonl"))}


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, sweep_yaml, fake_judge):
    """One full sweep (6 cells) in one process, with plots: the reference the other tests compare against."""
    from edlm.bench import load_sweep_config

    out = tmp_path_factory.mktemp("single")
    cfg = load_sweep_config(sweep_yaml)
    report = run_sweep(cfg, out, judge=fake_judge, progress=False, command="test")
    return out, report, cfg


def test_sweep_writes_rows_samples_plots_and_table(single_run):
    out, report, cfg = single_run
    cells = expand_cells(cfg)
    assert report.generated == report.scored == len(cells) == 6
    rows = read_results(out)
    assert [r["cell_key"] for r in rows] == sorted(c.key for c in cells)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["cell_key"] for line in lines] == sorted(c.key for c in cells)  # merged: sorted
    for r in rows:
        assert r["judge"] == "fake-gpt2" and r["gen_ppl"] > 1 and r["judge_tokens"] > 0
        assert r["entropy_bits"] == pytest.approx(r["entropy_nats"] / 0.6931471805599453)
        assert r["length"] == 12 and r["num_samples"] == 4 and r["torch_version"] and r["hardware"] and r["date"]
        assert r["command"] == "test"
        assert r["gen_ppl_low"] <= r["gen_ppl"] <= r["gen_ppl_high"]  # bootstrap interval around the estimate
        assert r["entropy_bits_low"] <= r["entropy_bits"] <= r["entropy_bits_high"]
        assert 0 <= r["degenerate_fraction"] <= 1 and 0 <= r["repeated_4gram"] <= 1
        assert (r["mauve"] is None) == (r["kind"] == "real_text")  # MAUVE against the real-text row
        if r["kind"] == "diffusion":
            assert 0 < r["mauve"] <= 1
            assert r["seconds_per_sample"] > 0 and r["tokens_per_s"] > 0 and r["nfe_denoiser"] >= 1
            assert (r["nfe_energy"] > 0) == (r["energy"] != "none")
    real = next(r for r in rows if r["kind"] == "real_text")
    header, samples = read_samples(out / "samples" / f"{real['cell_key']}.jsonl")
    assert header["cell_key"] == real["cell_key"] and len(samples) == 4
    assert all(len(s["tokens"]) == 12 for s in samples) and samples[0]["text"] == "abc def gha "
    for name in PLOT_FILES:
        assert (out / name).stat().st_size > 10_000  # a real PNG, not an empty canvas
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert ("| method | steps | k | window | τ | gen-PPL | 95 % interval | MAUVE | entropy (bits) | rep-4 / degen. | "
            "s/sample | NFE") in md
    table, reach = md.split("## Steps and time to reach MDLM's gen-PPL")  # the cell table, then reach_table
    assert table.count("| MDLM |") == 2 and table.count("| EDLM-AR |") == 2 and "AR samples" in table
    assert "fake-gpt2" in table and "| MDLM |" in reach
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"] == "test" and meta["hardware"] and meta["cells_total"] == 6


def test_kill_and_resume_loses_nothing_and_redoes_nothing(tmp_path, sweep_cfg, fake_judge, single_run):
    events = []

    def kill_at_cell_4_generate(cell, stage):
        events.append((cell.key, stage))
        if len(events) == 7:  # cells 1-3 generated + scored, cell 4 generated: then "killed"
            raise Killed

    with pytest.raises(Killed):
        run_sweep(sweep_cfg(), tmp_path, judge=fake_judge, progress=False, plot=False,
                  on_cell_done=kill_at_cell_4_generate)
    first = {r["cell_key"]: r for r in read_results(tmp_path)}
    assert len(first) == 3 and len(list((tmp_path / "samples").glob("*.jsonl"))) == 4
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"cell_key": "torn-by-a-cra')  # a crash mid-append leaves half a line

    again = []
    report = run_sweep(sweep_cfg(), tmp_path, judge=fake_judge, progress=False, plot=False,
                       on_cell_done=lambda cell, stage: again.append((cell.key, stage)))
    generated_before = {k for k, s in events if s == "generate"}
    assert not generated_before & {k for k, s in again if s == "generate"}  # nothing regenerated
    assert not set(first) & {k for k, s in again if s == "score"}  # nothing rescored
    assert report.generated == 2 and report.scored == 3
    rows = read_results(tmp_path)
    assert len(rows) == 6
    assert all(r["date"] == first[r["cell_key"]]["date"] for r in rows if r["cell_key"] in first)  # untouched
    assert _strip(rows) == _strip(read_results(single_run[0]))  # same results as an uninterrupted run
    assert _samples(tmp_path) == _samples(single_run[0])


def test_a_cell_killed_mid_generation_leaves_nothing_and_is_redone(tmp_path, sweep_cfg, fake_judge, monkeypatch):
    import edlm.pipeline

    real_sample = edlm.pipeline.sample

    def dies_at_steps_4(bundle, **kw):
        if kw["steps"] == 4 and kw["num_samples"] > 1:  # not the warm-up
            raise Killed
        return real_sample(bundle, **kw)

    monkeypatch.setattr(edlm.pipeline, "sample", dies_at_steps_4)
    cfg = sweep_cfg("grid.energy=[none]")
    with pytest.raises(Killed):
        run_sweep(cfg, tmp_path, judge="none", progress=False, plot=False)
    assert not [p for p in (tmp_path / "samples").iterdir() if p.name.startswith(".")]  # no temp files
    assert len(read_results(tmp_path)) == 3  # references + MDLM T=2; T=4 left nothing
    monkeypatch.setattr(edlm.pipeline, "sample", real_sample)
    report = run_sweep(cfg, tmp_path, judge="none", progress=False, plot=False)
    assert report.generated == report.scored == 1 and len(read_results(tmp_path)) == 4
    assert all(r["gen_ppl"] is None and r["entropy_bits"] > 0 for r in read_results(tmp_path))


@pytest.mark.filterwarnings("ignore:other shards may still be running")
def test_two_shards_merged_equal_one_process(tmp_path, sweep_cfg, fake_judge, single_run):
    reports = [run_sweep(sweep_cfg(), tmp_path, judge=fake_judge, shard=f"{i}/2", progress=False, plot=False)
               for i in (0, 1)]
    assert [r.cells_mine for r in reports] == [3, 3]
    keys = [{json.loads(line)["cell_key"] for line in (tmp_path / f"results.rank{i}.jsonl").open()} for i in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 3 and not keys[0] & keys[1]
    merged = merge_results(tmp_path)
    text = merged.read_text()
    assert merge_results(tmp_path).read_text() == text  # deterministic, idempotent
    rows = [json.loads(line) for line in text.splitlines()]
    assert [r["cell_key"] for r in rows] == sorted(keys[0] | keys[1])
    assert _strip(rows) == _strip(read_results(single_run[0]))
    assert _samples(tmp_path) == _samples(single_run[0])


def test_generate_then_score_equals_all(tmp_path, sweep_cfg, fake_judge, single_run):
    score_first = run_sweep(sweep_cfg(), tmp_path, judge=fake_judge, stage="score", progress=False, plot=False)
    assert score_first.scored == 0 and len(score_first.missing_samples) == 6
    gen = run_sweep(sweep_cfg(), tmp_path, stage="generate", progress=False)
    assert gen.generated == 6 and gen.scored == 0 and not read_results(tmp_path)
    score = run_sweep(sweep_cfg(), tmp_path, judge=fake_judge, stage="score", progress=False, plot=False)
    assert score.generated == 0 and score.scored == 6
    assert _strip(read_results(tmp_path)) == _strip(read_results(single_run[0]))
    # a second judge scores the same samples again, beside the first judge's rows
    run_sweep(sweep_cfg(), tmp_path, judge="none", stage="score", progress=False, plot=False)
    assert len(read_results(tmp_path)) == 12 and len(read_results(tmp_path, judge="none")) == 6


def test_cli_sweep_merge_plot(tmp_path, sweep_yaml, capsys):
    out = tmp_path / "cli"
    argv = ["bench", "sweep", str(sweep_yaml), "--out", str(out), "--judge", "none", "--no-progress",
            "grid.steps=[2]", "grid.energy=[none]", "num_samples=2"]
    assert main(argv) == 0
    assert "3 cells" in capsys.readouterr().out
    rows = read_results(out)
    assert len(rows) == 3 and all(r["judge"] == "none" and r["gen_ppl"] is None for r in rows)
    assert (out / "entropy_vs_steps.png").is_file() and not (out / "genppl_vs_steps.png").exists()
    assert main(["bench", "merge", str(out)]) == 0
    assert main(["bench", "plot", str(out)]) == 0
    assert main(["bench", "sweep", str(sweep_yaml), "--out", str(out), "num_sample=2"]) == 2
    assert "unknown sweep config key 'num_sample'" in capsys.readouterr().err


def test_cli_eval_genppl_scores_a_samples_file(single_run, fake_judge, tmp_path, capsys):
    judge_dir = tmp_path / "judge"
    fake_judge.model.save_pretrained(judge_dir)
    fake_judge.tokenizer.save_pretrained(judge_dir)
    out = single_run[0]
    row = next(r for r in read_results(out) if r["kind"] == "real_text")
    path = out / "samples" / f"{row['cell_key']}.jsonl"
    assert main(["eval", "genppl", str(path), "--judge", str(judge_dir), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"gen-PPL {row['gen_ppl']:.2f}" in printed and f"{row['entropy_nats']:.3f} nats" in printed


def test_jsonl_keeps_texts_with_unicode_line_separators(tmp_path):
    # byte-level BPE samples decode to U+2028, \x85, \x0b, \x1c ...: json.dumps(ensure_ascii=False) leaves them raw,
    # and str.splitlines() would cut a record in two (a sweep once reported such a file as corrupt)
    from edlm.bench.records import append_jsonl, read_jsonl

    texts = ["a\u2028b", "c\x85d", "e\x0bf\x0cg", "h\x1ci\x1dj\x1ek", "l\u2029m", "plain\nnewline"]
    path = tmp_path / "s.jsonl"
    for t in texts:
        append_jsonl(path, {"text": t})
    assert [r["text"] for r in read_jsonl(path)] == texts


def test_sweep_skips_a_judge_on_cells_whose_energy_it_is(tmp_path, sweep_cfg, fake_judge, micro_models):
    judge_dir = tmp_path / "judge"  # the judge, saved: also usable as the hf: energy of the EDLM cells
    fake_judge.model.save_pretrained(judge_dir)
    fake_judge.tokenizer.save_pretrained(judge_dir)
    cfg = sweep_cfg("grid.steps=[2]", "grid.energy=[judge]", "grid.k=[2]", "num_samples=2",
                    f"energies={{judge: 'hf:{judge_dir}', ar: 'ar:{micro_models['ar']}'}}", "reference.ar_model=ar")
    with pytest.warns(UserWarning, match="is the cell's energy") as caught:
        run_sweep(cfg, tmp_path / "out", judge=f"{judge_dir},none", progress=False, plot=False)
    assert len([w for w in caught if "is the cell's energy" in str(w.message)]) == 1
    rows = read_results(tmp_path / "out")
    edlm_keys = {r["cell_key"] for r in rows if r["method"].startswith("EDLM")}
    assert len(edlm_keys) == 1
    judged = {(r["cell_key"], r["judge"]) for r in rows}
    assert {j for k, j in judged if k in edlm_keys} == {"none"}  # the other judge still scores it
    others = {k for k, _ in judged} - edlm_keys
    assert others and all((k, str(judge_dir)) in judged for k in others)
    with pytest.warns(UserWarning, match="is the cell's energy"):  # a re-run has nothing left to do
        again = run_sweep(cfg, tmp_path / "out", judge=f"{judge_dir},none", progress=False, plot=False)
    assert again.scored == 0 and again.skipped == again.cells_total


def test_dna_cells_get_dna_columns():
    from edlm.bench.scoring import score_cell as _score_cell
    from edlm.eval.dna import DnaReference, sample_metrics

    rng = __import__("numpy").random.default_rng(0)
    genome = "".join(rng.choice(list("ACGT"), 4000))
    ref = DnaReference.from_sequence(genome)
    samples = [{"text": genome[i: i + 300], "tokens": [0] * 300} for i in range(0, 1800, 300)]
    header = {"settings": {}}  # an unconditional cell
    plain = _score_cell(header, samples, None, 8)
    quality = _score_cell(header, samples, None, 8, dna_reference=ref)
    assert not any(k.startswith("dna_") for k in plain)
    expected = sample_metrics([s["text"] for s in samples], ref)
    assert quality["dna_gc"] == expected.gc.value and quality["dna_js_k6"] == expected.kmer_js[6].value
    assert quality["dna_orf_coverage_low"] <= quality["dna_orf_coverage"] <= quality["dna_orf_coverage_high"]
    assert {f"dna_js_k{k}" for k in range(1, 7)} <= set(quality)


def test_plots_and_tables_cover_every_judge(tmp_path, single_run):
    """Rows of two judges: one table each in results.md, the first judge's plots under the plain names, the other's
    with its name appended."""
    from edlm.bench import plot_sweep

    out, _, _ = single_run
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    other = [{**r, "judge": "judge b", "gen_ppl": r["gen_ppl"] * 2} for r in rows]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + other))
    paths = {p.name for p in plot_sweep(tmp_path)}
    assert set(PLOT_FILES) <= paths and {n.replace(".png", "-judge_b.png") for n in PLOT_FILES} <= paths
    assert "mauve_vs_steps.png" in paths and "mauve_vs_steps-judge_b.png" in paths
    md = (tmp_path / "results.md").read_text()
    assert md.count("- judge: **fake-gpt2**") == 1 and md.count("- judge: **judge b**") == 1


def test_shuffled_text_row_holds_the_real_chunks_words_in_another_order(tmp_path, sweep_cfg, fake_judge):
    """reference.shuffled_text: a reference row of the real-text chunks with their words shuffled, scored as a
    floor (a judge finds it less likely than the real text)."""
    cfg = sweep_cfg("reference.shuffled_text=true", "reference.ar_samples=false", "grid.steps=[2]",
                    "grid.energy=[none]")
    assert [c.kind for c in expand_cells(cfg)][:2] == ["real_text", "shuffled_text"]
    run_sweep(cfg, tmp_path, judge=fake_judge, progress=False, plot=False)
    rows = {r["kind"]: r for r in read_results(tmp_path)}
    real, shuffled = (rows[k] for k in ("real_text", "shuffled_text"))
    assert shuffled["method"].startswith("real text, words shuffled") and shuffled["gen_ppl"] > 0
    texts = {k: [s["text"] for s in read_samples(tmp_path / "samples" / f"{rows[k]['cell_key']}.jsonl")[1]]
             for k in ("real_text", "shuffled_text")}
    assert len(texts["real_text"]) == len(texts["shuffled_text"]) == 4
    for a, b in zip(texts["real_text"], texts["shuffled_text"]):
        assert sorted(a.split()) == sorted(b.split())  # the same words (up to the re-tokenized chunk's end)
    assert texts["real_text"] != texts["shuffled_text"]
    assert real["cell_key"] != shuffled["cell_key"]


def test_shuffled_text_is_refused_with_prompts(sweep_cfg):
    from edlm.errors import ConfigError

    with pytest.raises(ConfigError, match="shuffled_text applies to unconditional sweeps"):
        expand_cells(sweep_cfg("reference.shuffled_text=true", "prompt_tokens=4"))
