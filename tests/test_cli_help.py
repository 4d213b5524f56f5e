"""Every command explains itself: defaults in every --help, no internal jargon, a fast `edlm --help`, errors in
command-line terms, a missing run directory that says how to make it, progress on long commands, and README
commands that the parser accepts."""

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edlm.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def all_parsers(parser: argparse.ArgumentParser, name: str = "edlm"):
    """(name, parser) of the parser and of every sub-parser below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from all_parsers(sub, f"{name} {sub_name}")


PARSERS = list(all_parsers(build_parser()))


def test_the_walk_reaches_every_sub_subcommand():
    names = {name for name, _ in PARSERS}
    assert {"edlm train mdlm", "edlm train energy", "edlm eval nll", "edlm eval genppl", "edlm bench sweep",
            "edlm bench speed", "edlm data fetch", "edlm demo", "edlm sample"} <= names


def _shown(default) -> str:
    return " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)


@pytest.mark.parametrize("name, parser", PARSERS, ids=[n for n, _ in PARSERS])
def test_every_option_with_a_default_shows_it(name, parser):
    text = " ".join(parser.format_help().split())  # as printed, line breaks folded
    formatter = parser._get_formatter()
    for action in parser._actions:
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or default == [] \
                or isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        expanded = " ".join(formatter._expand_help(action).split())
        assert f"(default: {_shown(default)})" in expanded, (name, action.option_strings, expanded)
        assert f"(default: {_shown(default)})" in text, (name, action.option_strings)
        assert expanded.count("default:") == 1, (name, action.option_strings, expanded)  # no hand-written twin


@pytest.mark.parametrize("name, parser", PARSERS, ids=[n for n, _ in PARSERS])
def test_no_section_numbers_or_rst_in_help(name, parser):
    text = parser.format_help()
    assert "SPEC" not in text and "``" not in text, (name, text)


def test_top_level_help_is_a_description_not_a_docstring(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "edlm demo" in out and "edlm COMMAND --help" in out and "``" not in out


def test_run_dir_default_is_in_the_help():
    helps = {name: " ".join(p.format_help().split()) for name, p in PARSERS}
    assert "runs/tiny-mdlm" in helps["edlm train mdlm"] and "runs/tiny-nce" in helps["edlm train energy"]


# ----------------------------------------------------------------------------- a fast `edlm --help`
def test_cli_and_its_parser_import_nothing_heavy():
    code = ("import sys, edlm.cli; edlm.cli.build_parser(); "
            "print('torch' in sys.modules, 'omegaconf' in sys.modules, 'transformers' in sys.modules, "
            "'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False", "False", "False"], out


def test_generate_is_still_importable_from_the_package():
    code = "import sys, edlm; assert 'torch' not in sys.modules; from edlm import generate; print(generate.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "generate"


# ----------------------------------------------------------------------------- errors in command-line terms
def test_train_energy_without_a_denoiser_names_the_flag(capsys, tmp_path):
    assert main(["train", "energy", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "`edlm train energy` needs --denoiser" in err and "denoiser_path" not in err, err
    assert "train_energy" not in err


def test_sample_setting_errors_name_the_flag(capsys, tmp_path):
    assert main(["sample", "--denoiser", str(tmp_path), "--num-samples", "0"]) == 2
    err = capsys.readouterr().err
    assert "--num-samples must be a positive integer" in err and "num_samples" not in err, err


# ----------------------------------------------------------------------------- a missing run directory
@pytest.fixture
def no_hub(monkeypatch):
    import huggingface_hub

    def fail(*args, **kwargs):
        raise AssertionError("the hub was asked for a local path")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)


def test_missing_run_dir_says_how_to_train_it_without_the_network(capsys, tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)  # a fresh checkout: no runs/ yet
    assert main(["sample", "--denoiser", "runs/tiny-mdlm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("edlm: error: no such checkpoint directory: runs/tiny-mdlm (train one with `edlm train mdlm "
                   "--run-dir runs/tiny-mdlm`, or give a model directory / hub id)"), err


@pytest.mark.parametrize("name", ["./tiny-mdlm", "~/nowhere/tiny-mdlm", "a/b/c", "models/tiny", "runs/x"])
def test_local_looking_names_never_reach_the_hub(tmp_path, monkeypatch, no_hub, name):
    from edlm.errors import CheckpointError
    from edlm.models.checkpoints import resolve_checkpoint_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # its first component exists here: a path
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        resolve_checkpoint_dir(name)


def test_owner_slash_name_still_goes_to_the_hub(tmp_path, monkeypatch):
    import huggingface_hub

    from edlm.models.checkpoints import resolve_checkpoint_dir

    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, **kw: calls.append(repo_id) or str(tmp_path))
    assert resolve_checkpoint_dir("kuleshov-group/mdlm-owt") == tmp_path
    assert calls == ["kuleshov-group/mdlm-owt"]


def test_a_run_dir_works_where_a_model_dir_does(tmp_path):
    from edlm.data.tokenizers import char_tokenizer_from_text
    from edlm.models import DiT, save_pretrained
    from edlm.models.checkpoints import resolve_checkpoint_dir

    tok = char_tokenizer_from_text("abc")
    save_pretrained(DiT(len(tok), 8, hidden_size=16, n_blocks=1, n_heads=2, cond_dim=8), tmp_path / "run" / "model")
    assert resolve_checkpoint_dir(tmp_path / "run") == tmp_path / "run" / "model"  # e.g. train energy --denoiser


# ----------------------------------------------------------------------------- progress on `edlm eval nll`
@pytest.fixture(scope="module")
def nll_inputs(tmp_path_factory):
    from edlm.data.tokenizers import char_tokenizer_from_text
    from edlm.diffusion.schedules import get_schedule
    from edlm.models import Denoiser, DiT, save_pretrained

    root = tmp_path_factory.mktemp("nll-progress")
    text = "the quick brown fox jumps over the lazy dog\n" * 40
    tok = char_tokenizer_from_text(text)
    torch.manual_seed(0)
    dit = DiT(len(tok), 16, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16)
    save_pretrained(Denoiser(dit, get_schedule("loglinear"), tok.mask_token_id), root / "dit", tokenizer=tok)
    (root / "corpus.txt").write_text(text)
    return root


def _nll(root, *extra):
    return ["eval", "nll", "--denoiser", str(root / "dit"), "--data", str(root / "corpus.txt"), "--split", "train",
            "--device", "cpu", "--time-samples", "1", "--batch-size", "8", "--cache-dir", str(root / "cache"),
            *extra]


def test_eval_nll_shows_a_bar_over_its_batches(capsys, nll_inputs):
    assert main(_nll(nll_inputs)) == 0
    captured = capsys.readouterr()
    assert "MDLM" in captured.err and "batch" in captured.err, captured.err  # tqdm: "MDLM: 100%|...| 15/15 [...]"
    assert re.search(r"\d+/\d+", captured.err), captured.err
    assert "NLL" in captured.out


def test_eval_nll_no_progress_is_silent(capsys, nll_inputs, tmp_path):
    argv = _nll(nll_inputs, "--no-progress")
    argv[argv.index("--cache-dir") + 1] = str(tmp_path / "cache")  # nothing cached: tokenizing is silent too
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


def test_likelihood_bar_counts_every_batch(monkeypatch):
    import tqdm.auto

    from edlm.eval.likelihood import mdlm_bound

    bars = []

    class Recording(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    denoiser = lambda x, t: torch.zeros(*x.shape, 5)  # noqa: E731
    data = torch.randint(0, 4, (10, 6))
    mdlm_bound(denoiser, data, mask_id=4, num_time_samples=2, batch_size=3, progress=True,
               generator=torch.Generator().manual_seed(0))
    assert len(bars) == 1 and bars[0].total == 4 and bars[0].n == 4 and bars[0].desc.startswith("MDLM")


# ----------------------------------------------------------------------------- the README's commands
def readme_commands(path: Path) -> list[str]:
    """The `edlm ...` lines of the bash blocks, continuation lines joined, comments and [optional] parts dropped."""
    text = path.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("edlm "):
                    commands.append(re.sub(r"\s*\[[^\]]*\]", "", part))
    return commands


@pytest.mark.parametrize("path", [REPO / "README.md", REPO / "benchmarks" / "README.md", REPO / "docs" / "data.md"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_readme_commands_parse(path):
    commands = readme_commands(path)
    assert commands
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)[1:]
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{path.name}: `{command}` is not accepted by the parser")


def test_default_run_dirs_are_the_readme_ones(tmp_path, monkeypatch):
    from edlm.config import load_config
    from edlm.training.run import prepare_run_dir

    monkeypatch.chdir(tmp_path)
    cfg = load_config("tiny")
    assert [prepare_run_dir(cfg, kind)[0] for kind in ("mdlm", "ar", "energy")] == \
        [Path("runs/tiny-mdlm"), Path("runs/tiny-ar"), Path("runs/tiny-nce")]
