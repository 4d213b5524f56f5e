"""`edlm eval nll` on data from anywhere: a JSONL file with its own text column, a FASTA folder, a hub dataset;
the rows scored are exactly those the text packs into."""

import json

import pytest
import torch

from edlm.cli import main
from edlm.data.tokenizers import char_tokenizer_from_text
from edlm.diffusion.schedules import get_schedule
from edlm.eval.nll_report import evaluate_nll
from edlm.models import Denoiser, DiT, save_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")
L = 16
HELD_OUT = [f"held-out document {i}, acgt" for i in range(6)]


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    root = tmp_path_factory.mktemp("nll_data")
    tok = char_tokenizer_from_text("".join(HELD_OUT) + "ACGTNtrain")
    torch.manual_seed(0)
    dit = DiT(vocab_size=len(tok), length=L, hidden_size=32, n_blocks=1, n_heads=2, cond_dim=16, dropout=0.0)
    return save_pretrained(Denoiser(dit, get_schedule("loglinear"), tok.mask_token_id), root / "dit", tokenizer=tok)


def rows_of(docs: list[str]) -> int:
    """Rows of L that wrap packing makes of ``docs`` (BOS + characters + EOS each)."""
    return sum(len(d) + 2 for d in docs) // L


def test_nll_on_a_jsonl_text_column_and_a_hub_dataset_score_the_same_rows(denoiser, tmp_path):
    lines = "".join(json.dumps({"id": i, "content": d}) + "\n" for i, d in enumerate(HELD_OUT))
    (tmp_path / "valid.jsonl").write_text(lines)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.jsonl").write_text(json.dumps({"id": 9, "content": "train"}) + "\n")
    (repo / "validation.jsonl").write_text(lines)
    common = dict(time_samples=2, batch_size=4, cache_dir=str(tmp_path / "cache"), device="cpu", progress=False,
                  text_column="content")
    from_file = evaluate_nll(denoiser, str(tmp_path / "valid.jsonl"), split="all", **common)
    from_hub = evaluate_nll(denoiser, f"hf:{repo}", **common)  # split: the hub's "validation"
    assert from_hub.split == "validation"
    assert from_file.rows[0].num_sequences == from_hub.rows[0].num_sequences == rows_of(HELD_OUT)
    assert from_file.rows[0].nll == from_hub.rows[0].nll  # the same tokens, the same (t, x_t) draws


def test_nll_cli_on_a_fasta_folder(denoiser, tmp_path, capsys):
    genome = tmp_path / "genome"
    (genome / "chr").mkdir(parents=True)
    records = {"a.fa": ">r1 header\nacgtacgtac\ngtacgtacgt\n>r2\nNNACGT\n", "chr/b.fna": ">r3\n" + "ACGT" * 12 + "\n"}
    for name, text in records.items():
        (genome / name).write_text(text)
    out = tmp_path / "nll.json"
    assert main(["eval", "nll", "--denoiser", str(denoiser), "--data", str(genome), "--split", "all",
                 "--time-samples", "2", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress",
                 "--json", str(out)]) == 0
    docs = ["ACGTACGTACGTACGTACGT", "NNACGT", "ACGT" * 12]
    result = json.loads(out.read_text())
    assert result["results"][0]["num_sequences"] == rows_of(docs) and result["split"] == "all"
    assert "edlm eval nll:" in capsys.readouterr().out
