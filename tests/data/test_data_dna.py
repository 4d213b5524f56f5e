"""FASTA in and out, the reverse complement, and the DNA tokenizer's ids (edlm.data.dna)."""

import gzip

import pytest
import torch

from edlm.data import TextDataModule, char_tokenizer, dna_tokenizer
from edlm.data.dna import (
    FastaRecord,
    ReverseComplementRows,
    bases_from_ids,
    complement_ids,
    is_dna_tokenizer,
    parse_fasta,
    read_fasta,
    reverse_complement,
    write_fasta,
)
from edlm.errors import DataError


def test_fasta_round_trip_plain_and_gzip(tmp_path):
    records = [FastaRecord("one first record", "ACGT" * 50 + "N"), FastaRecord("two", "GGGA")]
    for name in ("x.fa", "x.fa.gz"):
        path = write_fasta(records, tmp_path / name, width=60)
        assert read_fasta(path) == records
    raw = gzip.decompress((tmp_path / "x.fa.gz").read_bytes()).decode()
    assert raw.splitlines()[1] == ("ACGT" * 15) and raw.splitlines()[0] == ">one first record"
    assert (tmp_path / "x.fa.gz").read_bytes() == write_fasta(records, tmp_path / "y.fa.gz", 60).read_bytes()


def test_lowercase_is_read_as_uppercase_and_blank_and_comment_lines_are_skipped():
    text = ">soft masked\nacgtNn\n\n; a comment\nAc g\n"
    assert parse_fasta(text) == [FastaRecord("soft masked", "ACGTNNACG")]


@pytest.mark.parametrize("text, message", [
    (">a\nACGTR\n", r"line 2 \(record 'a'\): letter 'R' is not A, C, G, T or N"),
    (">a\nAC-GT\n", r"letter '-'"),
    ("", "holds no FASTA record"),
    ("\n\n", "holds no FASTA record"),
    (">a\n>b\nAC\n", "record 'a' has no bases"),
    ("ACGT\n>a\nA\n", "sequence before the first '>' header"),
])
def test_bad_fasta_is_one_line(text, message):
    with pytest.raises(DataError, match=message) as info:
        parse_fasta(text, "in.fa")
    assert "\n" not in str(info.value) and str(info.value).startswith("in.fa")


def test_read_fasta_bad_files(tmp_path):
    (tmp_path / "empty.fa").write_text("")
    with pytest.raises(DataError, match="empty.fa holds no FASTA record"):
        read_fasta(tmp_path / "empty.fa")
    (tmp_path / "cut.fa.gz").write_bytes(gzip.compress(b">a\nACGT\n")[:12])
    with pytest.raises(DataError, match="not a readable gzip file"):
        read_fasta(tmp_path / "cut.fa.gz")
    with pytest.raises(DataError, match="no such FASTA file"):
        read_fasta(tmp_path / "missing.fa")


def test_reverse_complement():
    assert reverse_complement("AACGTN") == "NACGTT"
    assert reverse_complement(reverse_complement("GATTACA")) == "GATTACA"


def test_tokenizer_ids_bases_and_complement():
    tok = dna_tokenizer()
    assert is_dna_tokenizer(tok) and not is_dna_tokenizer(char_tokenizer("ACGTX"))
    ids = tok.encode("GATTACA") + [tok.bos_token_id, tok.unk_token_id]
    assert bases_from_ids(ids, tok) == "GATTACANN"
    table = complement_ids(tok)
    x = torch.tensor([tok.encode("GATTACA")])
    assert tok.decode(table[x].flip(-1)[0]) == reverse_complement("GATTACA")
    assert table[tok.mask_token_id] == tok.mask_token_id and table[tok.bos_token_id] == tok.bos_token_id
    with pytest.raises(DataError, match="needs the DNA tokenizer"):
        complement_ids(char_tokenizer("abc"))


def test_reverse_complement_rows_double_the_data():
    tok = dna_tokenizer()
    rows = [{"input_ids": torch.tensor(tok.encode(s)), "attention_mask": torch.tensor([1, 1, 1, 0])}
            for s in ("AACG", "TTTG")]
    data = ReverseComplementRows(rows, complement_ids(tok))
    assert len(data) == 4
    assert tok.decode(data[2]["input_ids"]) == "CGTT" and data[2]["attention_mask"].tolist() == [0, 1, 1, 1]
    assert [tok.decode(r["input_ids"]) for r in data.__getitems__([1, 3])] == ["TTTG", "CAAA"]


def test_datamodule_trains_on_both_strands(tmp_path):
    tok = dna_tokenizer()
    kwargs = dict(length=64, batch_size=4, max_chars=5_000, cache_dir=tmp_path)
    plain = TextDataModule("dna_ecoli_k12", tok, **kwargs)
    both = TextDataModule("dna_ecoli_k12", tok, reverse_complement=True, **kwargs)
    n = len(plain.train_rows())
    assert len(both.train_rows()) == 2 * n
    first = plain.train_rows()[0]["input_ids"]
    assert torch.equal(both.train_rows()[n]["input_ids"], complement_ids(tok)[first].flip(-1))
    batch = next(iter(both.train_dataloader()))
    assert batch["input_ids"].shape == (4, 64)
    assert both.state_dict() == {}  # no trainer yet: nothing recorded
    with pytest.raises(DataError, match="needs the DNA tokenizer"):
        TextDataModule("tinyshakespeare", char_tokenizer("ab"), 64, 4, reverse_complement=True)
