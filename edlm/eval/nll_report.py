"""The likelihoods of one denoiser and its energies on held-out text, each with its kind (``edlm eval nll``).

Rows: the MDLM bound; per energy the EDLM plug-in estimate and the EDLM bound (with the MDLM bound at the same
steps), and for an AR energy its model's exact NLL.

    report = evaluate_nll("runs/tiny-mdlm", "tinyshakespeare", split="valid",
                          energies=["nce:runs/tiny-nce", "ar:runs/tiny-ar"], time_samples=16)
    print(report.summary())                                     # a header, the table and what the rows mean
    report.write_json("nll.json")

The data are packed exactly as training packs its validation split (same tokenizer, length, packing,
prefix limits and cache), so the MDLM row is comparable with the ``val/nll`` that ``edlm train`` logged.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edlm.atomic import atomic_write_text
from edlm.errors import ConfigError

__all__ = ["NLLReport", "evaluate_nll", "held_out_data", "format_table", "quiet_datasets"]


@contextlib.contextmanager
def quiet_datasets():
    """No ``datasets`` progress bars or warnings while a corpus is read: a bad file gives one error line."""
    from datasets.utils import logging as datasets_logging

    bars, verbosity = datasets_logging.is_progress_bar_enabled(), datasets_logging.get_verbosity()
    datasets_logging.disable_progress_bar()
    datasets_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bars:
            datasets_logging.enable_progress_bar()
        datasets_logging.set_verbosity(verbosity)


def held_out_data(data: str, tokenizer, length: int, *, split: str = "valid", max_docs: int | None = None,
                  max_chars: int | None = None, packing: str = "wrap", cache_dir: str | None = None,
                  progress: bool = True, text_column: str = "text"):
    """A corpus split tokenized and packed into rows of ``length`` tokens, as training packs it (torch format);
    ``progress=False`` also hides the tokenizing bar."""
    from edlm.data import load_corpus, tokenize_and_pack

    with quiet_datasets():  # reading a held-out split is quick; its "Generating split" bar says little
        text = load_corpus(data, split, max_docs=max_docs, max_chars=max_chars, text_column=text_column,
                           cache_dir=None if cache_dir is None else os.path.join(cache_dir, "corpora"))
    with contextlib.nullcontext() if progress else quiet_datasets():
        return tokenize_and_pack(text, tokenizer, length, packing, cache_dir=cache_dir).with_format("torch")


def format_table(rows, bits_per_base: bool = False) -> str:
    """The results as an aligned text table (one row per LikelihoodOutput); each NLL and PPL cell carries its kind
    (exact / bound / estimate) and the half-width of its 95 % interval; ``bits_per_base`` adds the NLL in bits per
    base (DNA: one token is one base, `edlm.eval.dna.bits_per_base`)."""
    from edlm.eval.dna import bits_per_base as to_bits

    nll = [r.cell(3) for r in rows]
    ppl = [r.cell(2, ppl=True) for r in rows]
    names = [r.name if r.detail is None else f"{r.name} [{r.detail}]" for r in rows]
    w, wn, wp = max(5, *map(len, names)), max(16, *map(len, nll)), max(3, *map(len, ppl))
    bits = f"  {'bits/base':>9}" if bits_per_base else ""
    head = f"{'model':<{w}}  {'NLL (nats/token)':<{wn}}{bits}  {'PPL':<{wp}}  {'EDLM − MDLM':>11}"
    lines = [head, "-" * len(head)]
    for name, r, a, b in zip(names, rows, nll, ppl):
        corr = "" if r.energy_correction is None else f"{r.energy_correction:+.4f}"
        per_base = f"  {to_bits(r.nll):>9.4f}" if bits_per_base else ""
        lines.append(f"{name:<{w}}  {a:<{wn}}{per_base}  {b:<{wp}}  {corr:>11}")
    return "\n".join(lines)


@dataclass
class NLLReport:
    """What ``evaluate_nll`` measured: the MDLM row first, then one EDLM row per energy."""

    denoiser: str
    data: str
    split: str
    length: int  # tokens per row
    time_samples: int
    seed: int
    batch_size: int
    rows: list = field(default_factory=list)  # LikelihoodOutput
    dna: bool = False  # the denoiser's tokenizer is base-level DNA: NLLs are also given in bits per base

    def summary(self) -> str:
        """A header line, the table, and (with energies) what the EDLM rows are."""
        first = self.rows[0]
        lines = [f"edlm eval nll: {self.denoiser} on {self.data}:{self.split}, {first.num_sequences} sequences x "
                 f"{self.length} tokens ({first.num_tokens} tokens), {self.time_samples} time samples, "
                 f"seed {self.seed}", format_table(self.rows, bits_per_base=self.dna)]
        kinds = {r.kind for r in self.rows}
        notes = {"bound": "bound: an upper bound on the model's NLL in expectation (EDLM: of the sampler with k "
                          "proposals and T steps)",
                 "estimate": "estimate: the EDLM plug-in (SPEC 2.6), biased low, not a bound",
                 "exact": "exact: the AR model's own NLL, no Monte Carlo"}
        lines.append("; ".join(notes[k] for k in ("exact", "bound", "estimate") if k in kinds)
                     + "; +- : 95 % interval over time samples (docs/likelihood.md).")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"denoiser": self.denoiser, "data": self.data, "split": self.split, "length": self.length,
                "time_samples": self.time_samples, "seed": self.seed, "batch_size": self.batch_size,
                "results": [self._row_json(r) for r in self.rows]}

    def _row_json(self, row) -> dict:
        from edlm.eval.dna import bits_per_base

        return {**row.to_dict(), **({"bits_per_base": bits_per_base(row.nll)} if self.dna else {})}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write ``to_json()`` atomically (the parent directory is created if needed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path


def evaluate_nll(denoiser: str | os.PathLike, data: str, *, split: str | None = None, energies: Iterable[str] = (),
                 time_samples: int = 8, batch_size: int = 32, max_docs: int | None = None,
                 max_chars: int | None = None, length: int | None = None, packing: str = "wrap",
                 cache_dir: str | None = None, tokenizer=None, log_z: str = "auto", n_neg: int = 16, seed: int = 0,
                 bound_k: int = 8, bound_steps: int | None = 128, bound_draws: int = 8,
                 energy_batch_size: int | None = None, device: str | torch.device = "auto", progress: bool = True,
                 ar: str | None = None, text_column: str = "text") -> NLLReport:
    """Load the denoiser, its tokenizer and the energies; score the held-out split (SPEC 1.5, 2.6).

    Args:
        denoiser: save_pretrained dir (or hub id) of the MDLM denoiser.
        data, split, max_docs, max_chars, packing, cache_dir, text_column: the held-out text, as training's
            ``data.*``; split None = `edlm.data.held_out_split` ("valid", or "validation" for an hf: dataset).
        energies: energy specs (``edlm.loading.load_energy``), one EDLM row each.
        time_samples: independent (t, x_t) passes. batch_size: sequences per batch (antithetic t per batch).
        length: tokens per row; None = the denoiser's length.
        tokenizer: the tokenizer, if the denoiser checkpoint holds none.
        log_z: "one" (Z ≈ 1), "negatives" (log mean exp(−E) over ``n_neg`` draws), or "auto": one for ar/hf
            energies with carry-over (SPEC 2.6), negatives for the rest. The exact AR energy (``carry_over=false``)
            also scores the unmasked positions, so its Z is far from 1 (the shipped wikipedia_en set: a Z ≈ 1
            estimate of 17 nats/token against the AR model's exact 3.2).
        seed: seed of the (t, x_t) draws; every row reuses the MDLM row's draws.
        bound_k, bound_steps, bound_draws: per energy, an EDLM bound row (``edlm.eval.nll_bound.edlm_bound``): an
            upper bound on the NLL of the sampler with ``bound_k`` proposals and ``bound_steps`` steps (None:
            continuous time), ``bound_draws`` draws per log; with it, the MDLM bound at the same steps (k = 1).
            ``bound_k=0``: no bound rows. Each AR energy also gets its model's exact NLL.
        energy_batch_size: sequences per energy call (memory); None = all draws of a batch at once.
        device: auto | cpu | cuda | cuda:N.
        progress: a progress bar over the batches of each row (on stderr).
        ar: an AR model (``edlm train ar`` run or model dir) whose exact next-token NLL on the same rows is a
            last row, the reference point of the others.
    """
    from edlm.data.dna import is_dna_tokenizer
    from edlm.energy.ar_energy import AREnergy
    from edlm.eval.likelihood import ar_nll, edlm_estimate, mdlm_bound
    from edlm.eval.nll_bound import edlm_bound
    from edlm.loading import load_denoiser_bundle, load_energy, resolve_device

    positive = [("time_samples", time_samples), ("batch_size", batch_size), ("n_neg", n_neg),
                ("bound_draws", bound_draws)] + [(n, v) for n, v in (("bound_steps", bound_steps),
                                                                   ("energy_batch_size", energy_batch_size)) if v is not None]
    for name, value in positive:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
    if not isinstance(bound_k, int) or isinstance(bound_k, bool) or bound_k < 0:
        raise ConfigError(f"bound_k must be a positive integer or 0 (no bound rows), got {bound_k!r}.")
    from edlm.data import held_out_split

    split = split or held_out_split(data)
    device = resolve_device(device)
    bundle = load_denoiser_bundle(denoiser, tokenizer=tokenizer, map_location=device)
    loaded = [load_energy(spec, bundle, device) for spec in energies]  # all checked before any scoring
    ar_model = None if ar is None else _load_ar(ar, bundle, device)
    length = length or bundle.length
    rows_data = held_out_data(data, bundle.tokenizer, length, split=split, max_docs=max_docs, max_chars=max_chars,
                              packing=packing, cache_dir=cache_dir, progress=progress, text_column=text_column)

    common = dict(num_time_samples=time_samples, batch_size=batch_size, device=device, progress=progress)
    seeded = lambda offset=0: torch.Generator(device=device).manual_seed(seed + offset)
    rows = [mdlm_bound(bundle.denoiser, rows_data, generator=seeded(), **common)]
    bound = dict(num_steps=bound_steps, n_draws=bound_draws, energy_batch_size=energy_batch_size, **common)
    if loaded and bound_k and bound_steps is not None:  # MDLM at the bounded sampler's steps: k = 1, no energy
        rows.append(edlm_bound(bundle.denoiser, None, rows_data, k=1, generator=seeded(2000), name="MDLM", **bound))
    for i, energy in enumerate(loaded):  # the same seed: each EDLM row reuses the MDLM row's (t, x_t) draws
        is_ar = isinstance(energy, AREnergy)
        mode = ("one" if is_ar and energy.carry_over else "negatives") if log_z == "auto" else log_z
        kind = "EDLM-AR" if is_ar else "EDLM-NCE"
        if is_ar:
            rows.append(ar_nll(energy.ar_model, rows_data, batch_size=batch_size, device=device, progress=progress,
                               name=f"AR ({energy.spec.split(',')[0]})"))
        rows.append(edlm_estimate(bundle.denoiser, energy, rows_data, generator=seeded(), log_z=mode, n_neg=n_neg,
                                  negatives_generator=seeded(1000 + i), name=f"{kind} ({energy.spec})",
                                  energy_batch_size=energy_batch_size, **common))
        if bound_k:
            rows.append(edlm_bound(bundle.denoiser, energy, rows_data, k=bound_k, generator=seeded(2000),
                                   draws_generator=seeded(3000 + i), name=f"{kind} ({energy.spec})", **bound))
    if ar_model is not None and not any(r.name == f"AR (ar:{ar})" for r in rows):  # not already an energy's row
        rows.append(ar_nll(ar_model, rows_data, batch_size=batch_size, device=device, progress=progress,
                           name=f"AR (ar:{ar})"))
    return NLLReport(denoiser=str(denoiser), data=str(data), split=split, length=length, time_samples=time_samples,
                     seed=seed, batch_size=batch_size, rows=rows, dna=is_dna_tokenizer(bundle.tokenizer))


def _load_ar(path: str, bundle, device: torch.device):
    """An ``edlm train ar`` model on ``device`` in eval mode, checked against the denoiser's tokenizer (as the
    ``ar:`` energy loads it)."""
    from edlm.loading import load_energy

    return load_energy(f"ar:{path}", bundle, device).ar_model.eval()
