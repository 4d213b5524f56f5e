"""Sample generation for a sweep (SPEC 4): the lazily loaded models and one cell's samples and speed.

    models = SweepModels(cfg, device)
    samples, speed = generate_cell(cell, models)    # sample records and the speed record of the header

A diffusion cell runs ``edlm.pipeline.sample``; the reference cells are chunks of held-out text and
samples of the AR model. ``edlm.bench.sweep`` writes what this returns.

Prefix completion (``prompt_tokens`` = P > 0): the held-out windows of ``held_out_windows`` give every cell the same
prompts, window i's first P tokens for sample i; diffusion cells keep them fixed (``x_init``), the AR reference
continues them, and the real-text reference is the windows themselves, so its continuations are the true ones.
Each sample record then also holds ``prompt`` and ``continuation`` (texts; ``text`` is the whole sequence).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from edlm.bench.cells import Cell, SweepConfig
from edlm.bench.records import hardware_string, max_rss_bytes, utc_now
from edlm.errors import ConfigError


# ----------------------------------------------------------------------------- the models (loaded lazily)
class SweepModels:
    """The denoiser bundle, energies and the AR reference model, each loaded on first use."""

    def __init__(self, cfg: SweepConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self._bundle = None
        self._energies: dict[str, object] = {}
        self._warm: set[str] = set()

    @property
    def bundle(self):
        if self._bundle is None:
            from edlm.loading import load_denoiser_bundle

            self._bundle = load_denoiser_bundle(self.cfg.denoiser, map_location=self.device)
        return self._bundle

    def energy(self, spec: str):
        if spec == "none":
            return None
        if spec not in self._energies:
            from edlm.loading import load_energy

            self._energies[spec] = load_energy(spec, self.bundle, self.device)
        return self._energies[spec]

    def warm_up(self, cell: Cell) -> None:
        """One small untimed run per energy, so one-time costs (allocator, thread pools) are not timed."""
        if cell.energy_spec in self._warm:
            return
        from edlm.pipeline import sample

        energy = self.energy(cell.energy_spec)
        k = 2 if energy is not None else 1
        sample(self.bundle, num_samples=1, batch_size=1, length=cell.length, steps=2, energy=energy, k=k,
               seed=0, device=self.device, progress=False)
        self._warm.add(cell.energy_spec)


def training_corpus(cfg: SweepConfig) -> str | None:
    """data.corpus of the denoiser's training run, as ``edlm train`` records it in config.json."""
    if cfg.reference.corpus is not None or not cfg.reference.real_text:
        return cfg.reference.corpus
    from edlm.models.checkpoints import CONFIG_NAME

    path = Path(cfg.denoiser)
    for candidate in (path / CONFIG_NAME, path / "model" / CONFIG_NAME):  # a checkpoint or a training run dir
        if candidate.is_file():
            try:
                extra = json.loads(candidate.read_text()).get("extra") or {}
            except (json.JSONDecodeError, AttributeError):
                return None
            break
    else:
        return None
    return ((extra.get("run_config") or {}).get("data") or {}).get("corpus")


# ----------------------------------------------------------------------------- generation
def generate_cell(cell: Cell, models: SweepModels) -> tuple[list[dict], dict]:
    """(samples, speed record) of one cell."""
    from edlm.eval.speed import peak_memory, reset_peak_memory

    bundle, device = models.bundle, models.device
    length = bundle.length if cell.length is None else cell.length
    P = cell.prompt_tokens
    if P and not 0 < P < min(length, bundle.length):
        raise ConfigError(f"prompt_tokens must be below the sample length and the denoiser's context "
                          f"({min(length, bundle.length)} tokens), got {P}.")
    windows = held_out_windows(cell.prompts, bundle, min(length, bundle.length), cell.num_samples) if P else None
    reset_peak_memory(device)
    if cell.kind in ("real_text", "shuffled_text"):
        tokens = windows.tolist() if P else _real_text(cell, bundle, length)
        if cell.kind == "shuffled_text":
            tokens = shuffle_words(tokens, bundle.tokenizer, length, cell.seed)
        seconds, nfe_d, nfe_e = None, 0, 0
    elif cell.kind == "ar_samples":
        tokens, seconds, nfe_d = _ar_samples(cell, models, length, None if windows is None else windows[:, :P])
        nfe_e = 0
    else:
        from edlm.pipeline import sample

        models.warm_up(cell)
        x_init = None
        if P:
            x_init = windows.clone()  # (n, L): the prompt, then masks
            x_init[:, P:] = bundle.mask_id
        records = sample(bundle, num_samples=cell.num_samples, batch_size=cell.batch_size, length=length,
                         steps=cell.steps, energy=models.energy(cell.energy_spec), k=cell.k, window=cell.window,
                         temperature=cell.temperature, seed=cell.seed, cache=cell.cache, device=device,
                         progress=False, x_init=x_init, **cell.sampler_settings())
        tokens = [r.tokens for r in records]
        seconds = sum(r.seconds for r in records)  # each record holds its batch's time / batch size
        batches = math.ceil(cell.num_samples / cell.batch_size)
        firsts = records[:: cell.batch_size]  # one record per batch carries that batch's NFEs
        nfe_d = sum(r.nfe_denoiser for r in firsts) / batches
        nfe_e = sum(r.nfe_energy for r in firsts) / batches
    texts = [bundle.tokenizer.decode(t, skip_special_tokens=True) for t in tokens]  # as `edlm sample` decodes
    speed = {
        "length": length,
        "generation_seconds": seconds,
        "seconds_per_sample": None if seconds is None else seconds / cell.num_samples,
        "tokens_per_s": None if not seconds else cell.num_samples * length / seconds,
        "nfe_denoiser": nfe_d,  # network calls per batch (per generate() call), averaged over batches
        "nfe_energy": nfe_e,
        "peak_memory_bytes": peak_memory(device),
        "process_max_rss_bytes": max_rss_bytes(),
        "hardware": hardware_string(device),
        "device": str(device),
        "torch_version": torch.__version__,
        "generated_date": utc_now(),
    }
    samples = [{"record": "sample", "index": i, "text": x, "tokens": t} for i, (x, t) in enumerate(zip(texts, tokens))]
    if P:
        for r in samples:
            r["prompt"] = bundle.tokenizer.decode(r["tokens"][:P], skip_special_tokens=True)
            r["continuation"] = bundle.tokenizer.decode(r["tokens"][P:], skip_special_tokens=True)
    return samples, speed


def held_out_windows(source: str, bundle, length: int, n: int) -> torch.Tensor:
    """(n, length) token windows of held-out text ("corpus:split"), spread over the documents: each document gives
    at most ceil(n / documents) consecutive windows from its start (more where documents are too short), so a
    corpus of many documents gives prompts from many of them and a single-stream corpus still gives n."""
    from edlm.data import load_corpus
    from edlm.errors import DataError
    from edlm.eval.reference import real_text_reference

    corpus, _, split = source.rpartition(":")
    texts = load_corpus(corpus, split)["text"]
    per = max(1, math.ceil(n / max(1, len(texts))))
    while True:
        try:
            return real_text_reference(texts, length, bundle.tokenizer, n, chunks_per_text=per).tokens
        except DataError:
            if per >= n:
                raise
            per = min(n, 2 * per)


def _real_text(cell: Cell, bundle, length: int) -> list[list[int]]:
    from edlm.data import load_corpus
    from edlm.eval.reference import real_text_reference

    corpus, _, split = cell.source.rpartition(":")
    texts = load_corpus(corpus, split)["text"]
    # one long document (tinyshakespeare's valid split is one stream) must give all chunks
    ref = real_text_reference(texts, length, bundle.tokenizer, cell.num_samples, chunks_per_text=cell.num_samples)
    return ref.tokens.tolist()


def shuffle_words(tokens: list[list[int]], tokenizer, length: int, seed: int) -> list[list[int]]:
    """Each chunk decoded, its whitespace-separated words put in a random order (``random.Random(seed)``) and joined by
    spaces, then tokenized again (at most ``length`` tokens): the corpus's own words and unigram statistics without
    their order. A judge should find real text far more likely; samples that score near this are word salad."""
    import random

    rng = random.Random(seed)
    out = []
    for t in tokens:
        words = tokenizer.decode(t, skip_special_tokens=True).split()
        rng.shuffle(words)
        out.append(tokenizer.encode(" ".join(words), add_special_tokens=False)[:length])
    return out


def _ar_samples(cell: Cell, models: SweepModels, length: int,
                prompts: torch.Tensor | None = None) -> tuple[list[list[int]], float, float]:
    """AR-model samples of ``length`` tokens: continuations of ``prompts`` (n, P) when given; else the first token is
    drawn from the denoiser's position-0 marginal.

    An AR model conditions on its first token and never predicts it, and rows packed by "wrap" start
    anywhere in the stream, so the first token comes from x_θ⁰(· | all masked): the denoiser's estimate
    of the marginal of a row's first token (exact float64 draw, SPEC 1.6). The AR model does the rest.
    """
    from edlm.baselines.ar_sampler import ar_sample
    from edlm.diffusion.categorical import sample_categorical, uniform64
    from edlm.diffusion.subs import subs_log_probs
    from edlm.eval.speed import Timer

    bundle, device = models.bundle, models.device
    ar_model = getattr(models.energy(cell.source), "ar_model", None)
    if ar_model is None:
        raise ConfigError(f"the AR reference model {cell.source!r} is not an autoregressive LM.")
    exclude = tuple(i for i in (bundle.mask_id, bundle.tokenizer.pad_token_id) if i is not None)
    generator = torch.Generator(device).manual_seed(cell.seed)
    tokens: list[list[int]] = []
    seconds, nfe = 0.0, 0
    for start in range(0, cell.num_samples, cell.batch_size):
        n = min(cell.batch_size, cell.num_samples - start)
        with Timer(device) as timer:
            if prompts is not None:
                first = prompts[start:start + n].to(device)  # (n, P)
            else:
                x_t = torch.full((n, length), bundle.mask_id, dtype=torch.long, device=device)  # (n, L) all masked
                with torch.no_grad():
                    logits = bundle.denoiser(x_t, torch.ones(n, device=device))  # (n, L, V+1)
                log_p0 = subs_log_probs(logits, x_t, bundle.mask_id)[:, 0]  # (n, V+1)
                if exclude:
                    log_p0 = log_p0.index_fill(-1, torch.tensor(exclude, device=device), float("-inf"))
                first = sample_categorical(log_p0, uniform64((n,), generator, device))[:, None]  # (n, 1)
            out = ar_sample(ar_model, first, length, generator, exclude_ids=exclude)
        tokens += out.tokens.cpu().tolist()
        seconds += timer.seconds
        nfe += out.nfe
    batches = math.ceil(cell.num_samples / cell.batch_size)
    return tokens, seconds, nfe / batches

