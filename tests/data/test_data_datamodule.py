import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DistributedSampler

from edlm.data import TextDataModule, char_tokenizer_from_text, save_tokenizer
from edlm.data.datamodule import ResumableSampler
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
    dm.setup("fit")  # one file: its last 5 % is the validation split
    assert 0 < len(dm.valid_data) < len(dm.train_data) / 10
    dm = TextDataModule(
        str(tmp_path / "one.txt"),
        shakespeare_tok,
        16,
        2,
        valid_corpus=str(tmp_path / "one.txt"),
        cache_dir=cache,
    )
    dm.setup("fit")
    assert len(dm.valid_data) > len(dm.train_data) > 0  # the second corpus whole; the train split is 95 %


class _Tiny(L.LightningModule):
    def __init__(self, vocab_size):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, 8)
        self.seen = []
        self.batches = []

    def training_step(self, batch, _):
        self.seen.append(batch["input_ids"].shape)
        self.batches.append(batch["input_ids"])
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


def test_each_rank_gets_its_own_rows_and_lightning_keeps_the_sampler(shakespeare_tok, cache):
    """Under DDP the datamodule shards the epoch itself; Lightning leaves a DistributedSampler in place."""
    from types import SimpleNamespace

    from lightning.pytorch.trainer.connectors.data_connector import _DataConnector

    dm = _dm(shakespeare_tok, cache)
    seen = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        loader = dm.train_dataloader()
        assert isinstance(loader.sampler, DistributedSampler) and loader.batch_size == 4 and loader.drop_last
        seen.append({tuple(row.tolist()) for batch in loader for row in batch["input_ids"]})
    assert seen[0] and seen[1] and not (seen[0] & seen[1])  # each rank gets its own rows
    connector = SimpleNamespace(trainer=SimpleNamespace(_accelerator_connector=SimpleNamespace(
        use_distributed_sampler=True, is_distributed=True)))
    assert not _DataConnector._requires_distributed_sampler(connector, loader)  # no DistributedSamplerWrapper


# ----------------------------------------------------------------------------- exact resume
def test_resumable_sampler_starts_part_way_then_runs_whole_epochs():
    data = list(range(10))
    sampler = ResumableSampler(data, seed=3)
    epoch0, again = list(sampler), list(sampler)
    assert sorted(epoch0) == data and epoch0 == again  # a permutation, fixed by (seed, epoch)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch1) == data and epoch1 != epoch0
    sampler.resume(epoch=1, start=4)
    assert len(sampler) == 10  # the epoch's full share: Lightning counts on from the checkpoint's batch
    assert list(sampler) == epoch1[4:]
    assert list(sampler) == epoch1  # only the first pass after resume is partial
    with pytest.raises(ValueError, match="start"):
        sampler.resume(epoch=0, start=11)


class _Stop(Exception):
    pass


class _StopAt(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:  # after the checkpoint of step `step` was written: a crash
            raise _Stop


def _rows_trained_on(dm, root, max_steps, stop=None, resume=None):
    model = _Tiny(dm.vocab_size)
    trainer = L.Trainer(
        max_steps=max_steps, limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", devices=1,
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
        callbacks=[ModelCheckpoint(dirpath=root, every_n_train_steps=EVERY, save_top_k=0, save_last=True),
                   *([_StopAt(stop)] if stop else [])],
    )
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=resume)
    except _Stop:
        pass
    return [batch[:, 0].tolist() for batch in model.batches]


EVERY = 10


@pytest.mark.parametrize("stop", [20, 40])  # mid-epoch; the end of the first epoch (40 batches of 4 rows)
def test_a_resumed_fit_sees_exactly_the_rows_it_had_not_seen(shakespeare_tok, cache, tmp_path, stop):
    """Lightning's own restore + the datamodule's state: the batches after the checkpoint are the reference's."""
    make = lambda: _dm(shakespeare_tok, cache, max_chars={"train": 160 * 32 - 2, "valid": 2000}, seed=7)
    reference = _rows_trained_on(make(), tmp_path / "ref", max_steps=55)  # 40 batches an epoch: crosses one
    assert len(reference) == 55 and reference[40] != reference[0]  # a new permutation in epoch 1
    first = _rows_trained_on(make(), tmp_path / "run", max_steps=55, stop=stop)
    assert first == reference[:stop]
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["TextDataModule"]
    assert state == ({"epoch": 0, "seen": 80, "rows": 160, "world_size": 1} if stop == 20
                     else {"epoch": 1, "seen": 0, "rows": 160, "world_size": 1})
    resumed = _rows_trained_on(make(), tmp_path / "run", max_steps=55, resume=tmp_path / "run" / "last.ckpt")
    assert resumed == reference[stop:]


def test_resume_on_other_data_starts_the_epoch_over(shakespeare_tok, cache):
    dm = _dm(shakespeare_tok, cache)
    dm.load_state_dict({"epoch": 2, "seen": 40, "rows": 999, "world_size": 1})
    with pytest.warns(UserWarning, match="999 rows"):
        loader = dm.train_dataloader()
    assert dm.train_sampler.epoch == 2 and len(list(loader)) == len(loader)
