import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CORPORA = Path(__file__).resolve().parent / "corpora"  # small slices of the shared corpora (corpora/README.md)
REPO_ROOT = CORPORA.parents[1]


@pytest.fixture(scope="session", autouse=True)
def _corpus_slices():
    """Every preset reads the slices in tests/corpora, whatever machine or folder the suite runs in: the
    results must not depend on whether a full data folder happens to sit beside the checkout. Subprocesses
    (``python -m edlm.cli ...``) inherit the setting. Tests that need a full corpus ask for `full_data_dir`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDLM_DATA_DIR", str(CORPORA))
        yield CORPORA


def find_full_data_dir(corpus: str) -> Path | None:
    """The full data folder holding ``corpus``: ``$EDLM_FULL_DATA_DIR``, else ``../shared/data`` beside the
    current directory or the repo root (as `edlm.data.find_data_dir` looks, minus the slices); None if none."""
    env = os.environ.get("EDLM_FULL_DATA_DIR")
    candidates = [Path(env).expanduser()] if env else []
    candidates += [Path.cwd() / ".." / "shared" / "data", REPO_ROOT / ".." / "shared" / "data"]
    for path in candidates:
        if (path / corpus).is_dir() and path.resolve() != CORPORA:
            return path.resolve()
    return None


@pytest.fixture(scope="session")
def full_data_dir():
    """`full_data_dir(corpus)` -> the full data folder holding ``corpus`` (e.g. "wikipedia_en"), or a skip.

    Only for what holds on the real corpus alone (its document counts, its alphabet, statistics that need
    its size); everything else runs on the slices."""

    def find(corpus: str) -> Path:
        path = find_full_data_dir(corpus)
        if path is None:
            pytest.skip(f"needs the full {corpus} corpus: set EDLM_FULL_DATA_DIR or place it in ../shared/data")
        return path

    return find


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global seed (tests that need streams use generators)."""
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors on shared CPU cores: one intra-op thread is several times faster than two.

    Opt in per module with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- directory locks (edlm.locks)
_LOCK_HOLDER = """\
import sys
from edlm.locks import dir_lock
with dir_lock(sys.argv[1], command="edlm holder " + sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


@contextlib.contextmanager
def _held_by_another_process(directory):
    proc = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "locked", proc.stderr.read()
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()
    assert not (Path(directory) / ".edlm.lock").exists()  # the holder released it on its way out


@pytest.fixture(scope="session")
def hold_lock():
    """``with hold_lock(directory) as pid:`` a real second process holds ``directory``'s lock (edlm.locks)."""
    return _held_by_another_process


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="session")
def dead_pid():
    """``dead_pid()`` -> the pid of a process that has ended and been reaped."""
    return _dead_pid


def _plant_lock(directory, **fields) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = {"pid": fields.pop("pid", None) or _dead_pid(), "host": socket.gethostname(),
              "command": "edlm train mdlm (planted)", "started": "2024-01-01T00:00:00+00:00", "token": "planted",
              **fields}
    path = directory / ".edlm.lock"
    path.write_text(json.dumps(record))
    return path


@pytest.fixture(scope="session")
def plant_lock():
    """``plant_lock(directory, **fields)`` writes a lock as another run would have left it (default: a dead pid
    of this host, i.e. stale); returns its path."""
    return _plant_lock


# ----------------------------------------------------------------------------- a tiny Hugging Face masked LM
def _wordpiece_tokenizer(vocab_size: int = 300):
    """A BERT-style WordPiece tokenizer trained on the wikipedia_en slice: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3,
    [MASK] 4 (the mask is not the last id, as in real BERT vocabularies)."""
    import gzip

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    with gzip.open(CORPORA / "wikipedia_en" / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                 show_progress=False))
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                           special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _tiny_bert_config(vocab_size: int, pad_token_id: int = 0, **sizes):
    from transformers import BertConfig

    return BertConfig(**{"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
                         "pad_token_id": pad_token_id, **sizes})


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A folder as a hub repository holds it: a tiny random ``BertForMaskedLM`` (1 layer x 32, 64 positions;
    safetensors) and its WordPiece tokenizer (300 ids, [MASK] = 4, [PAD] = 0), both via ``save_pretrained``."""
    from transformers import BertForMaskedLM

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = _wordpiece_tokenizer()
    torch.manual_seed(0)
    BertForMaskedLM(_tiny_bert_config(len(tokenizer), tokenizer.pad_token_id)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_config(tmp_path_factory) -> Path:
    """A folder with only the config.json of a tiny BERT (no weights, no tokenizer): a random init's architecture."""
    folder = tmp_path_factory.mktemp("tiny-bert-config")
    _tiny_bert_config(100).save_pretrained(folder)
    return folder
