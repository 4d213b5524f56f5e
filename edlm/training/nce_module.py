"""``NCEModule``: trains an EDLM-NCE energy against a frozen denoiser (SPEC 2.4)."""

from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

from edlm.config import OptimConfig
from edlm.diffusion.forward import q_sample
from edlm.diffusion.loss import antithetic_times
from edlm.diffusion.schedules import NoiseSchedule
from edlm.energy.nce_loss import NCELossOutput, nce_loss, sample_negatives
from edlm.training.base import LanguageModelModule

__all__ = ["NCEModule"]


class NCEModule(LanguageModelModule):
    """Noise-contrastive training of ``energy`` with the denoiser frozen (SPEC 2.4).

    Each batch: t antithetic over the batch (SPEC 1.5), x_t ~ q(x_t | x_0) (SPEC 1.2), then ``n_neg``
    negatives x̃_0 ~ Π_i x_θⁱ(· | x_t) for the same x_t, drawn exactly (float64 inversion) at the masked
    positions only, unmasked positions copied. The energy scores the data and the negatives in one call;
    the loss is ``nce_loss``.

    Logs ``train/nce_loss``, ``train/nce_acc``, ``train/energy_margin`` each step and, over the whole
    validation split (a generator seeded with ``val_seed``, EMA weights), ``val/nce_loss``,
    ``val/nce_acc``, ``val/nce_acc_se`` (its standard error over validation sequences), ``val/nce_acc_z``
    = (acc − 0.5) / se, and ``val/energy_margin``.

    The denoiser is not trained, not averaged and not saved: it stays in eval mode with
    ``requires_grad=False``, runs under ``torch.no_grad`` (bf16 autocast on CUDA), and its weights are
    left out of the Lightning checkpoint (the run records its path instead).

    Args:
        energy: the network that is trained, averaged and saved (e.g. ``NCEEnergy.from_denoiser(...)``);
            called as ``energy(x_0, x_t, t, None, attention_mask)``.
        denoiser: ``denoiser(x_t, t) -> logits (B, L, V+1)`` (e.g. ``edlm.models.Denoiser``).
        schedule: the noise schedule α_t of the denoiser.
        mask_id: the ``[MASK]`` id.
        n_neg: negatives per data sequence (≥ 1).
        optim, ema_decay, ema_warmup, val_seed: see ``LanguageModelModule``.
        t_min: antithetic times are mapped to [t_min, 1] (SPEC 1.5).
        antithetic: stratify t across the batch; else i.i.d. uniform.
    """

    kind = "energy"

    def __init__(
        self,
        energy: nn.Module,
        denoiser: nn.Module,
        schedule: NoiseSchedule,
        mask_id: int,
        n_neg: int = 1,
        optim: OptimConfig | None = None,
        ema_decay: float = 0.9999,
        ema_warmup: bool = True,
        val_seed: int = 0,
        t_min: float = 1e-3,
        antithetic: bool = True,
    ):
        if not isinstance(n_neg, int) or n_neg < 1:
            raise ValueError(f"`n_neg` must be a positive integer, got {n_neg!r}.")
        denoiser.requires_grad_(False)  # before the EMA (built in super) looks for trainable parameters
        super().__init__(energy, optim, ema_decay, ema_warmup, val_seed)
        self.denoiser = denoiser.eval()
        self.schedule = schedule
        self.mask_id = mask_id
        self.n_neg = n_neg
        self.t_min = t_min
        self.antithetic = antithetic
        self.val_loss_sum = SumMetric()  # Σ per-sequence NCE loss over the split, synced over ranks
        self.val_correct_sum = SumMetric()  # Σ per-sequence accuracy
        self.val_correct_sq_sum = SumMetric()  # Σ its square (for the standard error)
        self.val_margin_sum = SumMetric()
        self.val_count = SumMetric()  # number of validation sequences

    def train(self, mode: bool = True) -> NCEModule:
        """Lightning puts the whole module in train mode each epoch; the frozen denoiser stays in eval."""
        super().train(mode)
        self.denoiser.eval()
        return self

    def forward(self, x_0: Tensor, x_t: Tensor, t: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Energies (N,) of ``x_0`` (N, L) given ``x_t`` (N, L) at times ``t`` (N,)."""
        return self.model(x_0, x_t, t, None, attention_mask)

    def _denoiser_logits(self, x_t: Tensor, t: Tensor) -> Tensor:
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if x_t.is_cuda
                    else contextlib.nullcontext())
        with torch.no_grad(), autocast:
            return self.denoiser(x_t, t)  # (B, L, V+1)

    def nce_batch(self, x_0: Tensor, attention_mask: Tensor | None,
                  generator: torch.Generator | None) -> NCELossOutput:
        """One NCE estimate on a batch of data ``x_0`` (B, L) (SPEC 2.4)."""
        B, L = x_0.shape
        if self.antithetic:
            t = antithetic_times(B, self.t_min, generator=generator, device=x_0.device)  # (B,)
        else:
            t = self.t_min + (1.0 - self.t_min) * torch.rand(B, generator=generator, device=x_0.device)
        x_t = q_sample(x_0, self.schedule.alpha(t), self.mask_id, attention_mask, generator=generator)  # (B, L)
        logits = self._denoiser_logits(x_t, t)
        negatives = sample_negatives(logits, x_t, self.mask_id, self.n_neg, generator)  # (B, n, L)
        del logits
        k = 1 + self.n_neg
        x_0_all = torch.cat((x_0[:, None], negatives), dim=1).reshape(B * k, L)  # (B·k, L): data first
        x_t_all = x_t.repeat_interleave(k, dim=0)  # (B·k, L)
        t_all = t.repeat_interleave(k, dim=0)  # (B·k,)
        mask_all = None if attention_mask is None else attention_mask.repeat_interleave(k, dim=0)
        energies = self(x_0_all, x_t_all, t_all, mask_all).reshape(B, k)  # (B, 1 + n_neg)
        return nce_loss(energies[:, 0], energies[:, 1:])

    # ------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.nce_batch(batch["input_ids"], batch.get("attention_mask"), generator=None)
        self.log("train/nce_loss", out.loss, prog_bar=True)
        self.log("train/nce_acc", out.accuracy, prog_bar=True)
        self.log("train/energy_margin", out.margin)
        return out.loss

    # ------------------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        out = self.nce_batch(batch["input_ids"], batch.get("attention_mask"), generator=self._val_generator)
        self.val_loss_sum.update(out.per_example.double().sum())
        self.val_correct_sum.update(out.correct.double().sum())
        self.val_correct_sq_sum.update(out.correct.double().pow(2).sum())
        self.val_margin_sum.update(out.margin.double() * out.correct.numel())
        self.val_count.update(torch.tensor(float(out.correct.numel()), dtype=torch.float64))

    def on_validation_epoch_end(self) -> None:
        self.ema.swap_out()
        n = float(self.val_count.compute())
        if n > 0:  # no batches (limit_val_batches=0): log nothing rather than a fake 0
            acc = float(self.val_correct_sum.compute()) / n
            var = max(float(self.val_correct_sq_sum.compute()) / n - acc * acc, 0.0) * n / max(n - 1.0, 1.0)
            se = math.sqrt(var / n)
            self.log("val/nce_loss", float(self.val_loss_sum.compute()) / n)
            self.log("val/nce_acc", acc, prog_bar=True)
            self.log("val/nce_acc_se", se)
            self.log("val/nce_acc_z", (acc - 0.5) / se if se > 0 else 0.0)
            self.log("val/energy_margin", float(self.val_margin_sum.compute()) / n)
            self.log("val/sequences", n)
        for metric in (self.val_loss_sum, self.val_correct_sum, self.val_correct_sq_sum, self.val_margin_sum,
                       self.val_count):
            metric.reset()
        self.val_nll_sum.reset()
        self.val_num_tokens.reset()
        if not self.trainer.sanity_checking:
            self.last_val_step = self.global_step

    # ------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith("denoiser.")]:
            del state[key]  # frozen and stored elsewhere; the run config records its path
        checkpoint["edlm"]["n_neg"] = self.n_neg

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.setdefault("state_dict", {})
        for key, value in self.denoiser.state_dict().items():  # keep strict loading for the energy's keys
            state.setdefault(f"denoiser.{key}", value)
