import json

import lightning as L
import pytest
import torch

from edlm.data import TextDataModule, char_tokenizer_from_text, save_tokenizer
from edlm.errors import DataError


@pytest.fixture(scope="module")
def shakespeare_tok(shakespeare_text):
    return char_tokenizer_from_text(shakespeare_text)


def _dm(tok, cache, **kw):
    args = dict(length=32, batch_size=4, max_chars={"train": 6000, "valid": 2000}, cache_dir=cache)
    return TextDataModule("tinyshakespeare", tok, **{**args, **kw})


def test_wrap_batches_have_the_right_shapes(shakespeare_tok, cache):
    dm = _dm(shakespeare_tok, cache)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids"}
    assert batch["input_ids"].shape == (4, 32) and batch["input_ids"].dtype == torch.long
    assert len(dm.train_dataloader()) == (6000 + 2) // 32 // 4  # drop_last
    val = list(dm.val_dataloader())
    assert sum(len(b["input_ids"]) for b in val) == (2000 + 2) // 32
    assert dm.mask_id == dm.vocab_size - 1 == len(shakespeare_tok) - 1


def test_shuffle_is_seeded(shakespeare_tok, cache):
    def first(seed):
        dm = _dm(shakespeare_tok, cache, seed=seed)
        return next(iter(dm.train_dataloader()))["input_ids"]

    assert torch.equal(first(0), first(0))
    assert not torch.equal(first(0), first(1))


def test_pad_mode_directory_corpus_and_tokenizer_path(tmp_path, bpe, cache):
    for split, n in (("train", 30), ("valid", 6)):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"document {i} " * (i + 1)}) + "\n")
    save_tokenizer(bpe, tmp_path / "tok")
    dm = TextDataModule(
        str(tmp_path), str(tmp_path / "tok"), length=16, batch_size=8, mode="pad", cache_dir=cache
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (8, 16)
    assert (batch["attention_mask"].sum(1) >= 3).all()
    assert len(list(dm.val_dataloader())[0]["input_ids"]) == 6


def test_errors_teach(shakespeare_tok, cache, tmp_path):
    with pytest.raises(DataError, match="fewer than one batch of 1000"):
        _dm(shakespeare_tok, cache, batch_size=1000).train_dataloader()
    (tmp_path / "one.txt").write_text("some text " * 100)
    dm = TextDataModule(str(tmp_path / "one.txt"), shakespeare_tok, length=16, batch_size=2, cache_dir=cache)
    with pytest.raises(DataError, match="single file, so it has no 'valid' split"):
        dm.setup("fit")
    dm = TextDataModule(
        str(tmp_path / "one.txt"),
        shakespeare_tok,
        16,
        2,
        valid_corpus=str(tmp_path / "one.txt"),
        cache_dir=cache,
    )
    dm.setup("fit")
    assert len(dm.valid_data) == len(dm.train_data) > 0


class _Tiny(L.LightningModule):
    def __init__(self, vocab_size):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, 8)
        self.seen = []

    def training_step(self, batch, _):
        self.seen.append(batch["input_ids"].shape)
        return self.emb(batch["input_ids"]).pow(2).mean()

    def validation_step(self, batch, _):
        return self.emb(batch["input_ids"]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_runs_under_a_lightning_trainer(shakespeare_tok, cache, tmp_path):
    dm = _dm(shakespeare_tok, cache)
    model = _Tiny(dm.vocab_size)
    trainer = L.Trainer(
        max_steps=3,
        limit_val_batches=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen == [torch.Size([4, 32])] * 3


def test_loader_survives_lightnings_ddp_sampler_swap(shakespeare_tok, cache):
    """What Lightning does under DDP: rebuild the loader around a DistributedSampler per rank."""
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    dm = _dm(shakespeare_tok, cache)
    loader = dm.train_dataloader()
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(dm.train_data, num_replicas=2, rank=rank, shuffle=True, seed=0)
        rank_loader = _update_dataloader(loader, sampler)
        assert rank_loader.batch_size == 4 and rank_loader.drop_last
        seen.append({tuple(row.tolist()) for batch in rank_loader for row in batch["input_ids"]})
    assert seen[0] and seen[1] and not (seen[0] & seen[1])  # each rank gets its own rows
