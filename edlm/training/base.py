"""What the MDLM, AR and NCE LightningModules share: EMA, AdamW with warm-up, token-weighted validation sums,
and a training random stream that checkpoints carry (exact resume)."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

from edlm.config import OptimConfig
from edlm.training.ema import EMA

__all__ = ["LanguageModelModule", "lr_factor"]


def lr_factor(step: int, warmup_steps: int, max_steps: int, decay: str, min_lr_ratio: float) -> float:
    """Multiplier of the base lr at optimizer step ``step``: linear warm-up, then constant/cosine/linear."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps  # reaches 1 at the last warm-up step; never 0
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if decay == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if decay == "linear":
        return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - progress)
    raise ValueError(f"unknown lr decay {decay!r}; choose constant, cosine or linear.")


class LanguageModelModule(L.LightningModule):
    """Base of ``MDLMModule`` and ``ARModule``: composes a network with EMA and the optimizer.

    Subclasses implement ``training_step`` and ``validation_step``; a validation step adds its summed
    NLL and token count with ``self._accumulate_val``, and the epoch end logs the token-weighted
    ``val/nll`` (nats per token) and ``val/<ppl_name>`` = exp of it, over the whole split and all ranks.

    Random state: training draws (times, masks, dropout) come from torch's global RNG. Validation runs
    with its own seeded generator and hands the global RNG back as it found it, so how often one validates
    does not change training. Checkpoints store the global RNG state (CPU, and CUDA on a GPU run); a
    resumed run sets it back right before its first training batch, so it continues the same draws.
    With several processes every rank draws its own times and masks: ``seed_everything`` gives all ranks
    one stream, so at the first training batch ranks > 0 move to streams of their own (rank 0 keeps the
    single-process stream), and checkpoints store every rank's state (``rng_per_rank``). Without that, the
    rows of all ranks would share one set of times and mask patterns and the noise of the diffusion loss
    would not average down with the number of GPUs.

    Args:
        model: the network that is trained, averaged and saved (a ``Denoiser`` or an ``ARTransformer``).
        optim: AdamW and lr-schedule settings.
        ema_decay: EMA decay (0 = no averaging); the EMA weights are used for validation and saving.
        ema_warmup: ramp the decay up as (1+n)/(10+n).
        val_seed: seed of the validation random stream, so the reported number is reproducible.
    """

    kind = "lm"  # the `edlm train` kind; stored in checkpoints so a resume can check it
    ppl_name = "ppl"

    def __init__(
        self,
        model: nn.Module,
        optim: OptimConfig | None = None,
        ema_decay: float = 0.9999,
        ema_warmup: bool = True,
        val_seed: int = 0,
    ):
        super().__init__()
        self.model = model
        self.optim = optim or OptimConfig()
        self.ema = EMA(model, ema_decay, ema_warmup)
        self.val_seed = val_seed
        self.val_nll_sum = SumMetric()  # Σ NLL (nats) over the split, synced over ranks
        self.val_num_tokens = SumMetric()  # Σ scored tokens over the split
        self._val_generator: torch.Generator | None = None
        self._train_rng: dict[str, Tensor] | None = None  # the training stream, set aside during validation
        self._rng_to_restore: dict[str, Tensor] | None = None  # from a checkpoint, for the next training batch
        self._rank_streams_ready = False  # ranks > 0 have their own training stream (set at the first batch)
        self.last_val_step = -1  # global step of the latest full validation (sanity checks excluded)

    # ------------------------------------------------------------------------- training
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self._rng_to_restore is not None:  # resumed: continue the checkpointed run's draws from here
            _set_rng_state(self._rng_to_restore, self.device)
            self._rng_to_restore = None
        if not self._rank_streams_ready:
            self._rank_streams_ready = True
            if self.trainer.world_size > 1 and self.global_rank > 0:  # a stream of this rank's own, reproducible
                torch.manual_seed(self.val_seed * 1_000_003 + self.global_rank)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update()

    # ------------------------------------------------------------------------- validation
    def on_validation_start(self) -> None:
        self._train_rng = _rng_state(self.device)  # validation must not move the training stream

    def on_validation_end(self) -> None:
        if self._train_rng is not None:
            _set_rng_state(self._train_rng, self.device)
            self._train_rng = None

    def on_validation_epoch_start(self) -> None:
        self.ema.swap_in()
        self._val_generator = torch.Generator(device=self.device).manual_seed(self.val_seed + self.global_rank)

    def _accumulate_val(self, nll_sum: Tensor, num_tokens: Tensor) -> None:
        self.val_nll_sum.update(nll_sum.detach().sum().double())
        self.val_num_tokens.update(num_tokens.detach().sum().double())

    def on_validation_epoch_end(self) -> None:
        self.ema.swap_out()
        num_tokens = self.val_num_tokens.compute()  # summed over batches and ranks
        if num_tokens > 0:  # no batches (limit_val_batches=0): log nothing rather than a fake 0
            nll = (self.val_nll_sum.compute() / num_tokens).float()
            self.log("val/nll", nll)
            self.log(f"val/{self.ppl_name}", nll.exp(), prog_bar=True)
            self.log("val/tokens", num_tokens.float())
        self.val_nll_sum.reset()
        self.val_num_tokens.reset()
        if not self.trainer.sanity_checking:
            self.last_val_step = self.global_step

    # ------------------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        o = self.optim
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
        )
        max_steps = self.trainer.max_steps if self.trainer.max_steps > 0 else o.warmup_steps + 1
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, o.warmup_steps, max_steps, o.decay, o.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ema"] = self.ema.state_dict()
        checkpoint["edlm"] = {"kind": self.kind, "vocab_size": getattr(self.model, "vocab_size", None)}
        # the state the next training batch will draw from (uint8 tensors: loads with weights_only=True)
        state = self._rng_to_restore or self._train_rng or _rng_state(self.device)
        checkpoint["rng"] = state  # this rank's; the file gets rank 0's
        if self.trainer.world_size > 1:  # every rank calls this hook (rank 0 writes): gather all ranks' states
            checkpoint["rng_per_rank"] = {k: self.all_gather(v.to(self.device)).cpu() for k, v in state.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
        # applied at the first training batch, after sanity checks; this rank's own state if the checkpoint has one
        per_rank = checkpoint.get("rng_per_rank")
        world, rank = self.trainer.world_size, self.global_rank
        if per_rank is not None and all(v.shape[0] == world for v in per_rank.values()):
            self._rng_to_restore = {k: v[rank].clone() for k, v in per_rank.items()}
            self._rank_streams_ready = True  # checkpoints are saved after training batches: already per rank
        else:  # single-process checkpoint, or another number of ranks: rank 0's state, then streams of their own
            self._rng_to_restore = checkpoint.get("rng")


# ----------------------------------------------------------------------------- helper functions
def _rng_state(device: torch.device) -> dict[str, Tensor]:
    """torch's global RNG state: CPU, plus the CUDA generator of ``device`` on a GPU run."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    # clone: torch.set_rng_state crashes the process (SIGSEGV, torch 2.13) on a view with a storage offset,
    # such as one row of the per-rank states
    torch.set_rng_state(state["cpu"].cpu().clone())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu().clone(), device)
