"""Sampling for users and the ``edlm sample`` command: settings checked once, batch by batch, JSONL records.

    bundle = load_denoiser_bundle("runs/tiny-mdlm")             # edlm.loading: DiT + tokenizer (+ [MASK], V, L)
    energy = load_energy("ar:runs/tiny-ar", bundle)              # edlm.loading: or "hf:NAME", "nce:PATH", "none"
    settings = SampleSettings(num_samples=8, batch_size=8, length=None, steps=64, k=4)   # checked here, once
    records = sample(bundle, settings, energy=energy)            # or sample(bundle, energy=energy, steps=64, ...)
    write_jsonl(records, "samples.jsonl")                        # atomic: all records or no file

Loading checkpoints and energies, and resolving the device and dtype, is ``edlm.loading``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edlm.accel.compiling import compile_networks, compiled_target
from edlm.atomic import atomic_write
from edlm.data.dna import FastaRecord, bases_from_ids, is_dna_tokenizer, write_fasta
from edlm.diffusion.categorical import compile_draws
from edlm.loading import DenoiserBundle, resolve_dtype
from edlm.samplers.loop import generate
from edlm.samplers.semi_ar import generate_semi_ar
from edlm.samplers.settings import (
    DEFAULT_BUDGET,
    DEFAULT_ESS_THRESHOLD,
    DEFAULT_K,
    DEFAULT_K_CHOICES,
    DEFAULT_PARTICLES,
    DEFAULT_REMASK_ETA,
    DEFAULT_REMASK_WINDOW,
    DEFAULT_SAMPLER,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    DEFAULT_WINDOW,
    check_graph,
    check_positive_int,
    check_sampler_options,
    check_sampler_settings,
    check_seed,
)

__all__ = [
    "SampleSettings",
    "SampleRecord",
    "check_compile_options",
    "prepare_networks",
    "generate_kwargs",
    "settings_record",
    "sample",
    "format_records",
    "check_output_path",
    "write_jsonl",
    "fasta_path",
    "write_fasta_samples",
]


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SampleSettings:
    """Everything ``sample`` needs besides the models, checked on construction (before anything loads).

    The sampler settings (steps, k, window, temperature, top_p) are checked by the samplers' own functions
    (``edlm.samplers.settings``), called here so that bad input fails first; this class checks the rest.
    """

    num_samples: int
    batch_size: int
    length: int | None  # None = the denoiser's length L; > L needs ``stride`` (semi-autoregressive)
    steps: int  # T reverse steps per block
    k: int = DEFAULT_K  # proposals per importance-sampled step (SPEC 2.5); 1 = MDLM
    window: tuple[float, float] = DEFAULT_WINDOW  # (t_lo, t_hi): steps starting inside are importance-sampled
    temperature: float = DEFAULT_TEMPERATURE  # τ in w ∝ exp(−E/τ)
    seed: int = 0  # seeds one torch.Generator for the whole run
    top_p: float = DEFAULT_TOP_P  # nucleus filtering of the proposals (1 = off)
    noise_removal: bool = True  # argmax any mask left at the end (MDLM)
    cache: bool = True  # reuse x_θ when nothing was revealed (SPEC 1.6)
    stride: int | None = None  # S new tokens per semi-autoregressive block
    sampler: str = DEFAULT_SAMPLER  # importance (SPEC 2.5) | smc | adaptive | remask (edlm.samplers)
    particles: int = DEFAULT_PARTICLES  # smc: particles per sequence
    ess_threshold: float = DEFAULT_ESS_THRESHOLD  # smc: resample when ESS < ess_threshold · particles
    budget: int = DEFAULT_BUDGET  # adaptive: energy evaluations per sequence
    k_choices: tuple[int, ...] = DEFAULT_K_CHOICES  # adaptive: the k it picks from (1: no energy call)
    remask_eta: float = DEFAULT_REMASK_ETA  # remask: cap on the re-masked fraction per step
    remask_window: tuple[float, float] = DEFAULT_REMASK_WINDOW  # remask: steps starting in it may re-mask
    graph: bool = False  # every reveal planned up front, each step replayed from a CUDA graph (graph_loop.py)

    def __post_init__(self):
        check_positive_int("num_samples", self.num_samples)
        check_positive_int("batch_size", self.batch_size)
        for name in ("length", "stride"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        check_seed(self.seed)  # [0, 2**63 - 1]: torch.Generator.manual_seed overflows beyond
        _, _, window, _, _ = check_sampler_settings(steps=self.steps, k=self.k, window=self.window,
                                                    temperature=self.temperature, top_p=self.top_p)
        object.__setattr__(self, "window", window)
        options = check_sampler_options(self.sampler, k=self.k, window=self.window, particles=self.particles,
                                        ess_threshold=self.ess_threshold, budget=self.budget, k_choices=self.k_choices,
                                        remask_eta=self.remask_eta, remask_window=self.remask_window)
        for name in ("k_choices", "remask_window"):
            object.__setattr__(self, name, options[name])

    def sampler_options(self) -> dict:
        """The keywords of ``generate`` that choose and set the sampler (besides k, window, temperature)."""
        return dict(sampler=self.sampler, particles=self.particles, ess_threshold=self.ess_threshold,
                    budget=self.budget, k_choices=self.k_choices, remask_eta=self.remask_eta,
                    remask_window=self.remask_window) if self.sampler != DEFAULT_SAMPLER else {}

    def check_energy(self, has_energy: bool) -> None:
        """``k``, ``window`` and ``temperature`` need an energy: without one they would be ignored, so they are
        refused; so are the samplers that weight by one (smc, adaptive)."""
        if not has_energy and self.sampler in ("smc", "adaptive"):
            raise ValueError(f"sampler {self.sampler!r} weights proposals by an energy; give one (--energy).")
        check_graph(self.graph, sampler=self.sampler, top_p=self.top_p)
        if not has_energy and (self.k != DEFAULT_K or self.window != DEFAULT_WINDOW
                               or self.temperature != DEFAULT_TEMPERATURE):
            raise ValueError(f"k, window and temperature only apply with an energy (--energy); got k={self.k}, "
                             f"window={self.window}, temperature={self.temperature} and no energy.")

    def resolve_length(self, bundle: DenoiserBundle) -> int:
        """The length to sample; fails if it exceeds the model's without a stride (or a stride is useless)."""
        length = bundle.length if self.length is None else self.length
        if length > bundle.length:
            if self.stride is None:
                raise ValueError(f"length {length} exceeds the denoiser's context of {bundle.length} tokens; pass "
                                 f"a stride (--stride S, 0 < S <= {bundle.length}) for semi-autoregressive sampling.")
            if self.stride > bundle.length:
                raise ValueError(f"stride must be at most the denoiser's context of {bundle.length}, got "
                                 f"{self.stride}.")
        elif self.stride is not None:
            raise ValueError(f"stride applies only when length exceeds the denoiser's context ({bundle.length}); "
                             f"length is {length}.")
        return length


def check_compile_options(compile: bool, *, freeze: bool = True, cuda_graphs: bool = True) -> None:
    """``freeze=False`` and ``cuda_graphs=False`` tune compiling: without ``compile=True`` they are refused."""
    for name, value, flag in (("freeze", freeze, "--no-freeze"), ("cuda_graphs", cuda_graphs, "--no-cuda-graphs")):
        if not value and not compile:
            raise ValueError(f"{name}=False ({flag}) only applies with compile=True (--compile).")


# ----------------------------------------------------------------------------- sampling
def _cast(energy, dtype: torch.dtype) -> None:
    """Cast an energy's network in place (the module `compile_networks` compiles: an ``AREnergy``'s AR model)."""
    net = compiled_target(energy)
    if isinstance(net, torch.nn.Module):
        net.to(dtype=dtype)


@dataclass
class SampleRecord:
    """One generated sequence; ``seconds`` and the NFEs describe the batch that made it."""

    index: int  # position in the run (0 … num_samples − 1)
    text: str  # decoded, special tokens stripped
    tokens: list[int]
    settings: dict = field(default_factory=dict)  # JSON-able: models, sampler settings, device
    seconds: float = 0.0  # wall-clock time of its batch / batch size
    nfe_denoiser: int = 0  # denoiser calls of its batch
    nfe_energy: int = 0  # energy calls of its batch

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _energy_length(energy) -> int | None:
    for obj in (energy, getattr(energy, "ar_model", None)):
        value = getattr(obj, "length", None)
        if isinstance(value, int):
            return value
    return None


def prepare_networks(bundle: DenoiserBundle, energy, *, block: int, device: torch.device, dtype: torch.dtype | None,
                     compile: bool = False, freeze: bool = True, cuda_graphs: bool = True) -> torch.nn.Module:
    """The denoiser on ``device`` in eval mode, ready to sample blocks of ``block`` tokens: checks that the energy
    reads that many, casts both networks to ``dtype`` (None: as saved) and compiles them if asked (see ``sample``).
    ``edlm.conditional`` prepares its runs with it too."""
    energy_len = _energy_length(energy)
    if energy_len is not None and energy_len < block:
        raise ValueError(f"the energy reads at most {energy_len} tokens but is asked to score blocks of {block}.")
    denoiser = bundle.denoiser.to(device).eval()
    if dtype is not None:
        denoiser.to(dtype=dtype)
        _cast(energy, dtype)
    if compile:
        compile_networks(denoiser, energy, freeze=freeze, cuda_graphs=cuda_graphs)  # the weights never change while sampling
        compile_draws()  # the exact proposal draw too (fused; same draws)
    return denoiser


def generate_kwargs(s: SampleSettings, energy, generator: torch.Generator, *, device: torch.device,
                    progress) -> dict:
    """The keyword arguments of ``generate`` / ``generate_semi_ar`` that ``s`` and the run decide."""
    return dict(energy=energy, k=s.k, window=s.window, temperature=s.temperature, cache=s.cache, generator=generator,
                noise_removal=s.noise_removal, top_p=s.top_p, device=device, progress=progress, **s.sampler_options(),
                **({"graph": True} if s.graph else {}))


def settings_record(bundle: DenoiserBundle, s: SampleSettings, energy, denoiser, *, length: int,
                    device: torch.device) -> dict:
    """The JSON-able ``settings`` of a run's records: models, sampler settings, length, device, dtype."""
    record = {"denoiser": str(bundle.path), "energy": getattr(energy, "spec", None) if energy is not None else "none",
              **dataclasses.asdict(s), "length": length, "device": str(device),
              "dtype": str(next(denoiser.parameters()).dtype).removeprefix("torch.")}
    record["window"] = list(s.window)
    record["k_choices"], record["remask_window"] = list(s.k_choices), list(s.remask_window)
    return record


def sample(bundle: DenoiserBundle, settings: SampleSettings | None = None, *, energy=None,
           device: str | torch.device = "cpu", progress: bool = True, compile: bool = False, freeze: bool = True,
           cuda_graphs: bool = True, dtype: str | torch.dtype | None = None, x_init: torch.Tensor | None = None,
           **fields) -> list[SampleRecord]:
    """Generate ``settings.num_samples`` sequences, ``batch_size`` at a time, with MDLM or EDLM (SPEC 1.6, 2.5).

    ``settings`` is a ``SampleSettings``; or leave it out and pass its fields as keywords
    (``sample(bundle, num_samples=8, batch_size=8, length=None, steps=64, energy=energy, k=4)``), which build
    the one ``SampleSettings`` of the run.

    One ``torch.Generator(device).manual_seed(seed)`` drives the whole run, so the same settings (batch size
    included) and seed give the same tokens. ``length`` > the model's L samples semi-autoregressively with
    ``stride`` new tokens per block; ``length=None`` means L. ``k``, ``window`` and ``temperature`` need an
    energy: without one they would be ignored, so they are refused. ``compile`` torch.compiles the denoiser
    and energy networks in place first (`edlm.accel.compiling.compile_networks`; with ``freeze`` the compiled
    graphs keep these weights as constants and hold a second copy of them: faster calls, more memory; with
    ``cuda_graphs`` each energy call on a GPU replays a CUDA graph, its outputs being small), and the exact
    proposal draw (`edlm.diffusion.categorical.compile_draws`, process-wide): worth it on a GPU for long runs;
    the samples are the same up to floating-point rounding. ``x_init`` (num_samples, L) conditions sample i on the
    unmasked tokens of row i (kept in place, scored by the energy; ``mask_id`` where tokens are generated); with
    semi-autoregressive sampling it is the first block's start. ``dtype`` (``bfloat16``, ``float32``; None: as
    saved) casts the denoiser and the energy network in place first; bf16 is what `edlm bench speed`
    measures on a GPU, and its samples differ from float32's by the networks' rounding (the draws stay exact:
    float64, and on a GPU an IS step's k proposals come from float32 block bounds with an exact float64
    accept / redraw, `categorical._draw_fast`).
    """
    if settings is None:
        settings = SampleSettings(**fields)
    elif fields:
        raise TypeError(f"sample() takes a SampleSettings or its fields as keywords, not both; got {sorted(fields)}.")
    s = settings
    dtype = resolve_dtype(dtype)
    check_compile_options(compile, freeze=freeze, cuda_graphs=cuda_graphs)
    s.check_energy(energy is not None)
    length = s.resolve_length(bundle)
    device = torch.device(device)
    denoiser = prepare_networks(bundle, energy, block=min(length, bundle.length), device=device, dtype=dtype,
                                compile=compile, freeze=freeze, cuda_graphs=cuda_graphs)
    generator = torch.Generator(device).manual_seed(s.seed)
    record_settings = settings_record(bundle, s, energy, denoiser, length=length, device=device)
    kwargs = generate_kwargs(s, energy, generator, device=device, progress=progress)
    block = min(length, bundle.length)
    if x_init is not None and (not isinstance(x_init, torch.Tensor) or tuple(x_init.shape) != (s.num_samples, block)):
        raise ValueError(f"x_init must be a ({s.num_samples}, {block}) tensor of token ids (num_samples, the first "
                         f"block's length), got {tuple(getattr(x_init, 'shape', ())) or type(x_init).__name__}.")
    records: list[SampleRecord] = []
    while len(records) < s.num_samples:
        n = min(s.batch_size, s.num_samples - len(records))
        start = None if x_init is None else x_init[len(records):len(records) + n].to(device)  # (n, block)
        if length > bundle.length:  # SPEC 1.6, semi-autoregressive
            out = generate_semi_ar(denoiser, length, bundle.length, s.stride, n, bundle.vocab_size, bundle.mask_id,
                                   s.steps, x_init=start, **kwargs)
        else:
            out = generate(denoiser, length, n, bundle.vocab_size, bundle.mask_id, s.steps, x_init=start, **kwargs)
        for row in out.tokens.cpu().tolist():
            records.append(SampleRecord(
                index=len(records), text=bundle.tokenizer.decode(row, skip_special_tokens=True), tokens=row,
                settings=dict(record_settings), seconds=out.seconds / n, nfe_denoiser=out.nfe_denoiser,
                nfe_energy=out.nfe_energy))
    return records


# ----------------------------------------------------------------------------- output
def format_records(records: list[SampleRecord], show_text: bool = True) -> str:
    """A settings header, a speed line, then each sample's text under a separator."""
    if not records:
        return "(no samples)"
    s = records[0].settings
    n = len(records)
    header = (f"# edlm sample: denoiser={s['denoiser']} energy={s['energy']} steps={s['steps']} k={s['k']} "
              f"window={tuple(s['window'])} temperature={s['temperature']} top_p={s['top_p']} seed={s['seed']} "
              f"length={s['length']}" + (f" stride={s['stride']}" if s.get("stride") else "") +
              (f" sampler={s['sampler']}" if s.get("sampler", DEFAULT_SAMPLER) != DEFAULT_SAMPLER else "") +
              f" device={s['device']}")
    speed = (f"# {n} samples: {sum(r.seconds for r in records) / n:.4f} s/sample, denoiser NFE "
             f"{sum(r.nfe_denoiser for r in records) / n:.1f}, energy NFE {sum(r.nfe_energy for r in records) / n:.1f}"
             " (per batch, averaged over samples)")
    lines = [header, speed]
    if show_text:
        for r in records:
            lines += [f"----- sample {r.index} -----", r.text]
    return "\n".join(lines)


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail before sampling, not after, if ``path`` cannot be an output file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output path {path} is a directory; give a file name such as {path / 'samples.jsonl'}.")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write {path}: {parent} is not a writable directory.")
    return path


def write_jsonl(records: Iterable[SampleRecord | dict], path: str | os.PathLike) -> Path:
    """Write one JSON object per line, atomically: a temporary file renamed over ``path`` when complete.

    An error or Ctrl-C while writing leaves no file (and no half-written one) behind; the parent
    directory is created if needed.
    """
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r.to_json() if isinstance(r, SampleRecord) else r, ensure_ascii=False) + "\n")

    return atomic_write(check_output_path(path), write)


def fasta_path(fasta: str | os.PathLike | None, out: str | os.PathLike, tokenizer) -> Path | None:
    """Where a run's FASTA goes: ``fasta`` if given (a DNA denoiser only), else, for a DNA denoiser, ``out`` with
    ``.fa`` in place of its suffix (``samples.jsonl`` -> ``samples.fa``); None for a text denoiser."""
    dna = is_dna_tokenizer(tokenizer)
    if fasta is not None:
        if not dna:
            raise ValueError(f"--fasta {fasta}: FASTA output needs a DNA denoiser (A, C, G, T tokens); this one's "
                             "tokenizer is text.")
        return check_output_path(fasta)
    return check_output_path(Path(out).with_suffix(".fa")) if dna else None


def write_fasta_samples(records: list[SampleRecord], tokenizer, path: str | os.PathLike) -> Path:
    """The samples as FASTA, atomically: one record per sample, ``>sample_<index>`` and its settings, the bases of
    its tokens (an id that is not a base, such as a separator, written N, so every base keeps its position)."""
    fasta = []
    for r in records:
        s = r.settings
        about = " ".join(f"{key}={s[key]}" for key in ("energy", "steps", "k", "seed", "length") if key in s)
        fasta.append(FastaRecord(f"sample_{r.index} {about}".strip(), bases_from_ids(r.tokens, tokenizer)))
    return write_fasta(fasta, check_output_path(path))
