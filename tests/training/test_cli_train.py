"""`edlm train` from the command line: bad input is one line on stderr, exit code != 0, no traceback."""

import subprocess
import sys

import pytest

from edlm.cli import main
from edlm.models import DiT, save_pretrained


def _fails_cleanly(capsys, argv, fragment):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # progress bars may precede it
    assert errors == [err.splitlines()[-1]], err
    assert errors[0].startswith("edlm: error:") and fragment in errors[0], err


def test_unknown_preset(capsys):
    _fails_cleanly(capsys, ["train", "mdlm", "--preset", "huge"], "unknown preset 'huge'")


def test_unknown_key(capsys, tmp_path):
    _fails_cleanly(capsys, ["train", "mdlm", "--run-dir", str(tmp_path), "model.widht=3"],
                   "unknown config key 'model.widht'")


def test_wrong_type(capsys, tmp_path):
    _fails_cleanly(capsys, ["train", "ar", "--run-dir", str(tmp_path), "train.max_steps=many"], "train.max_steps")


def test_bad_trainer_setting_fails_before_any_data_work(capsys, tmp_path):
    _fails_cleanly(capsys, ["train", "mdlm", "--run-dir", str(tmp_path / "run"), "train.precision=fp7"],
                   "precision")
    assert not (tmp_path / "run").exists()


def test_missing_data_path(capsys, tmp_path, cache_dir, micro):
    argv = ["train", "mdlm", *micro(tmp_path / "run", cache_dir, **{"data.corpus": tmp_path / "missing.txt"})]
    _fails_cleanly(capsys, argv, "missing.txt")


def test_a_missing_bundled_corpus_says_how_to_get_it(capsys, tmp_path, cache_dir, micro, monkeypatch):
    monkeypatch.setenv("EDLM_DATA_DIR", str(tmp_path / "nowhere"))
    argv = ["train", "mdlm", *micro(tmp_path / "run", cache_dir)]  # the tiny preset reads tinyshakespeare
    _fails_cleanly(capsys, argv, "bundled corpus 'tinyshakespeare' is not here (EDLM_DATA_DIR=")
    _fails_cleanly(capsys, argv, "get it with `edlm data fetch tinyshakespeare` (into ./.data), or train on your "
                   "own text with --data PATH")


def test_train_on_a_hub_dataset(tmp_path, cache_dir, micro, monkeypatch):
    """`--data hf:NAME --text-column C`: `datasets.load_dataset` reads a folder in hub layout; training reads its
    "train" split and validates on its "validation" split."""
    import json

    from edlm.config import load_config

    monkeypatch.setenv("EDLM_DATA_DIR", str(tmp_path / "no-corpora-here"))
    repo = tmp_path / "repo"
    repo.mkdir()
    for split, n in (("train", 300), ("validation", 20)):
        rows = [{"body": f"{split} line {i}: the stream runs past the mill.", "n": i} for i in range(n)]
        (repo / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    overrides = [o for o in micro(run, cache_dir, max_steps=3) if not o.startswith("data.max_")]
    assert main(["train", "mdlm", "--data", f"hf:{repo}", "--text-column", "body", *overrides]) == 0
    cfg = load_config(str(run / "config.yaml"))
    assert (cfg.data.corpus, cfg.data.text_column, cfg.data.valid_split) == (f"hf:{repo}", "body", None)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_nll"] > 0  # validation ran on the "validation" split
    tokenizer = __import__("edlm.data", fromlist=["load_tokenizer"]).load_tokenizer(run / "tokenizer")
    assert "v" not in tokenizer.get_vocab()  # chars of the train split only ("validation" has a "v")


def test_checkpoint_vocab_differs_from_tokenizer(capsys, tmp_path, cache_dir, micro):
    save_pretrained(DiT(10, 32, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16), tmp_path / "other")
    argv = ["train", "mdlm", *micro(tmp_path / "run", cache_dir, **{"model.init_from": tmp_path / "other"})]
    _fails_cleanly(capsys, argv, "the model has 10 ids but the tokenizer has")


def test_resume_without_a_checkpoint(capsys, tmp_path):
    _fails_cleanly(capsys, ["train", "mdlm", "--run-dir", str(tmp_path), "--resume"], "nothing to resume")


def test_refuses_to_overwrite_a_run(capsys, mdlm_run, copy_run, cache_dir, micro):
    run_dir = copy_run(mdlm_run[0])
    _fails_cleanly(capsys, ["train", "mdlm", *micro(run_dir, cache_dir)], "already holds a run")


def test_resume_with_the_wrong_kind(capsys, mdlm_run, copy_run, cache_dir, micro):
    run_dir = copy_run(mdlm_run[0])
    argv = ["train", "ar", "--resume", *micro(run_dir, cache_dir, max_steps=30)]
    _fails_cleanly(capsys, argv, "edlm train mdlm")


def test_bad_kind_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "gpt"])
    assert info.value.code != 0
    assert "invalid choice" in capsys.readouterr().err


def test_entry_point_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "edlm.cli", "train", "mdlm", "--preset", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "Traceback" not in proc.stderr and "unknown preset" in proc.stderr


def test_cli_trains_and_prints_a_summary(capsys, tmp_path, cache_dir, micro):
    assert main(["train", "ar", *micro(tmp_path / "run", cache_dir, max_steps=5)]) == 0
    out = capsys.readouterr().out
    assert "edlm train ar: step 5, val PPL" in out and "unigram" in out


def test_train_on_your_own_text_file_with_data(tmp_path, cache_dir, micro, monkeypatch):
    """`--data my.txt` trains on a local file with no corpus folder anywhere (a character tokenizer of the file),
    as on a fresh clone: EDLM_DATA_DIR points nowhere and the working directory has no .data."""
    monkeypatch.setenv("EDLM_DATA_DIR", str(tmp_path / "no-corpora-here"))
    monkeypatch.chdir(tmp_path)
    text = "".join(f"Line {i}: the river runs past the mill and the town.\n" for i in range(600))
    (tmp_path / "my.txt").write_text(text)
    run = tmp_path / "run"
    overrides = [o for o in micro(run, cache_dir, max_steps=5) if not o.startswith("data.max_")]
    assert main(["train", "mdlm", "--data", str(tmp_path / "my.txt"), *overrides]) == 0
    tokenizer = __import__("edlm.data", fromlist=["load_tokenizer"]).load_tokenizer(run / "tokenizer")
    assert set(tokenizer.get_vocab()) >= set(text)  # the tokenizer was made from this file's characters
    assert (run / "model" / "model.safetensors").is_file()
