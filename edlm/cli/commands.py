"""The subcommands of `edlm`: one short function each; the logic lives in the library. Each imports what it
needs when it runs, so that importing the CLI stays light."""

from __future__ import annotations

import argparse
import functools
import re
import sys

from edlm.errors import EdlmError

# the library's checks name Python arguments ("num_samples must be ..."); the command line names its flags
_FLAGS = {name: "--" + name.replace("_", "-") for name in (
    "num_samples", "batch_size", "length", "stride", "steps", "k", "window", "temperature", "top_p", "seed",
    "time_samples", "n_neg", "max_docs", "max_chars", "max_new_tokens", "names", "windows", "bootstrap", "sampler",
    "particles", "ess_threshold", "budget", "k_choices", "remask_eta", "remask_window", "bound_k", "bound_steps",
    "bound_draws", "energy_batch_size")}


def _in_flag_terms(command):
    """Run a subcommand; a ValueError whose message starts with a Python argument that has a flag is raised
    again with the flag in its place (``--num-samples must be a positive integer, got 0.``)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ValueError as exc:
            text = str(exc)
            match = re.match(r"`?([a-z_]+)`?(?=[ =])", text)
            if match is None or match[1] not in _FLAGS:
                raise
            message = _FLAGS[match[1]] + text[match.end():]
            try:
                renamed = type(exc)(message)
            except Exception:  # an exception class that takes other arguments
                renamed = ValueError(message)
            raise renamed from exc

    return run


# ----------------------------------------------------------------------------- subcommands
def cmd_train(args: argparse.Namespace) -> int:
    from edlm.config import load_config

    overrides = list(args.overrides)
    if args.run_dir is not None:
        overrides.append(f"train.run_dir={args.run_dir}")
    if args.resume:
        overrides.append("train.resume=true")
    for flag, key in (("data", "corpus"), ("text_column", "text_column"), ("train_split", "train_split"),
                      ("valid_split", "valid_split")):
        if getattr(args, flag) is not None:
            overrides.append(f"data.{key}={getattr(args, flag)}")
    cfg = load_config(args.preset, overrides)  # fails fast, before the heavy imports below

    if args.kind == "energy":
        from edlm.training.energy_trainer import train_energy

        result = train_energy(cfg, args.denoiser)
    else:
        from edlm.training.trainer import train

        result = train(cfg, args.kind)
    if result.rank == 0:  # under DDP every process runs this; one summary is enough
        print(result.summary())
    return 0


@_in_flag_terms
def cmd_sample(args: argparse.Namespace) -> int:
    from edlm import conditional, loading, pipeline

    settings = pipeline.SampleSettings(  # every check that needs no model, before anything loads
        num_samples=args.num_samples, batch_size=args.batch_size, length=args.length, steps=args.steps, k=args.k,
        window=tuple(args.window), temperature=args.temperature, seed=args.seed, top_p=args.top_p, stride=args.stride,
        sampler=args.sampler, particles=args.particles, ess_threshold=args.ess_threshold, budget=args.budget,
        k_choices=tuple(args.k_choices), remask_eta=args.remask_eta, remask_window=tuple(args.remask_window),
        graph=args.graph)
    conditions = conditional.conditions_from_flags(args.prompt, args.prompt_file, args.infill, args.max_new_tokens,
                                                   not args.no_stop_at_eos, args.length)  # None: unconditional
    spec = loading.parse_energy_spec(args.energy)
    settings.check_energy(spec is not None)
    options = dict(compile=args.compile, freeze=not args.no_freeze, cuda_graphs=not args.no_cuda_graphs)
    pipeline.check_compile_options(**options)
    dtype = loading.resolve_dtype(args.dtype)
    pipeline.check_output_path(args.out)
    device = loading.resolve_device(args.device)
    bundle = loading.load_denoiser_bundle(args.denoiser, tokenizer=args.tokenizer, map_location=device)
    fasta = pipeline.fasta_path(args.fasta, args.out, bundle.tokenizer)  # DNA: FASTA beside the JSONL
    if conditions is None:
        settings.resolve_length(bundle)  # a too-long length fails before the energy loads
    energy = loading.load_energy(spec, bundle, device)
    run = dict(energy=energy, device=device, progress=not args.no_progress, dtype=dtype, **options)
    records = pipeline.sample(bundle, settings, **run) if conditions is None else \
        conditional.sample_records(bundle, settings, **conditions, **run)
    print(pipeline.format_records(records, show_text=not args.no_print))
    path = pipeline.write_jsonl(records, args.out)  # atomic: all records or no file
    print(f"# wrote {len(records)} samples to {path}")
    if fasta is not None:
        print(f"# wrote their bases to {pipeline.write_fasta_samples(records, bundle.tokenizer, fasta)}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.metric == "nll":  # SPEC 1.5 / 2.6 and the EDLM bound (docs/likelihood.md) on held-out text
        return cmd_eval_nll(args)
    if args.metric == "genppl":  # SPEC 4: gen-PPL under an independent judge, unigram entropy beside it
        return cmd_eval_genppl(args)
    if args.metric == "dna":  # GC, k-mer spectra, ORFs of DNA samples against real and shuffled windows
        return cmd_eval_dna(args)
    raise EdlmError(f"`edlm eval {args.metric}` is not implemented yet.")


@_in_flag_terms
def cmd_eval_nll(args: argparse.Namespace) -> int:
    from edlm.eval.nll_report import evaluate_nll

    report = evaluate_nll(
        args.denoiser, args.data, split=args.split, energies=args.energy, time_samples=args.time_samples,
        batch_size=args.batch_size, max_docs=args.max_docs, max_chars=args.max_chars, length=args.length,
        packing=args.packing, cache_dir=args.cache_dir, tokenizer=args.tokenizer, log_z=args.log_z,
        n_neg=args.n_neg, seed=args.seed, bound_k=args.bound_k, bound_steps=args.bound_steps or None,
        bound_draws=args.bound_draws, energy_batch_size=args.energy_batch_size, device=args.device,
        progress=not args.no_progress, ar=args.ar, text_column=args.text_column)
    print(report.summary())
    if args.json:
        report.write_json(args.json)
    return 0


@_in_flag_terms
def cmd_eval_dna(args: argparse.Namespace) -> int:
    from edlm.eval.dna_report import dna_report

    report = dna_report(args.samples, args.data, args.split, names=args.names, bootstrap=args.bootstrap,
                        seed=args.seed, windows=args.windows, length=args.length)
    print(report.summary())
    if args.json:
        print(f"# wrote {report.write_json(args.json)}")
    return 0


def cmd_eval_genppl(args: argparse.Namespace) -> int:
    from edlm.bench.records import read_sample_energies, read_sample_texts
    from edlm.bench.scoring import BOOTSTRAP_RESAMPLES
    from edlm.eval import entropy_report, generative_perplexity, load_judge
    from edlm.eval.bootstrap import bootstrap_gen_ppl
    from edlm.eval.gen_ppl import check_judge_independent, parse_judges
    from edlm.eval.repetition import repetition_report
    from edlm.loading import resolve_device

    texts, tokens = read_sample_texts(args.samples)
    reference = read_sample_texts(args.reference)[0] if args.reference else None  # read before any judge loads
    judges = parse_judges(args.judge)
    for name in judges:  # judge ≠ energy: every judge checked before any loads
        check_judge_independent(name, read_sample_energies(args.samples))
    for name in judges:
        judge = load_judge(name, device=resolve_device(args.device))
        g = generative_perplexity(texts, judge, batch_size=args.batch_size, max_length=args.max_length,
                                  progress=not args.no_progress)
        ci = bootstrap_gen_ppl(g.per_sample_nll, g.per_sample_tokens, BOOTSTRAP_RESAMPLES)
        print(f"{g}; 95 % interval [{ci.low:.2f}, {ci.high:.2f}] (bootstrap over samples)")
        if reference is not None:
            from edlm.eval.mauve_score import judge_features, mauve_from_features

            feats = [judge_features([t for t in x if t], judge, batch_size=args.batch_size) for x in (texts, reference)]
            print(f"MAUVE against {args.reference} ({len(reference)} texts), {judge.name} features: "
                  f"{mauve_from_features(*feats):.3f}")
    print(entropy_report(tokens) if tokens else "unigram entropy: n/a (the records hold no `tokens`)")
    if tokens:
        print(repetition_report(tokens))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edlm.bench import merge_results, plot_sweep

    if args.action == "merge":
        path = merge_results(args.dir)
        print(f"edlm bench merge: {sum(1 for _ in open(path))} rows -> {path}")
        return 0
    if args.action == "plot":
        for path in plot_sweep(args.dir, judge=args.judge):
            print(path)
        return 0
    from edlm.bench import load_sweep_config, run_sweep  # action == "sweep"

    overrides = list(args.overrides) + ([f"device={args.device}"] if args.device else [])
    cfg = load_sweep_config(args.config, overrides)  # fails fast, before any model loads
    report = run_sweep(cfg, args.out, stage=args.stage, judge=args.judge, shard=args.shard,
                       plot=not args.no_plot, progress=not args.no_progress)
    print(report.summary())
    return 0


def cmd_bench_speed(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from edlm.bench.speed import run_speed
    from edlm.bench.speed_report import render_markdown

    from_shell = Path(sys.argv[0]).name in ("edlm", "__main__.py")  # in-process calls record their settings
    results = run_speed(preset=args.preset, models=args.models, batch_size=args.batch_size,
                        length=args.length, steps=args.steps, ks=args.k, window=args.window,
                        compile=args.compile, device=args.device, out=args.out, quick=args.quick, long=args.long,
                        command=shlex.join(["edlm", *sys.argv[1:]]) if from_shell else None)
    print("\n" + render_markdown(results))
    return 1 if results["errors"] else 0


@_in_flag_terms
def cmd_demo(args: argparse.Namespace) -> int:
    from edlm.demo import print_demo

    print_demo(args.models, steps=args.steps, k=args.k, num_samples=args.num_samples, seed=args.seed, judge=args.judge,
               device=args.device)  # the models, a sample per method, the table, then a prompt continued by each
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from edlm.data.fetch import fetch_corpus

    for name in args.names:
        path = fetch_corpus(name, args.dest, progress=not args.no_progress)
        print(f"edlm data fetch: {name} -> {path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from edlm.models.mdlm_release import convert_mdlm_checkpoint

    tokenizer = None
    if args.tokenizer is not None:
        from edlm.data.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)  # a hub tokenizer without [MASK] gets it as its last id
    path = convert_mdlm_checkpoint(args.src, args.dst, weights=args.weights, length=args.length,
                                   time_conditioning=args.time_conditioning, tokenizer=tokenizer)
    from edlm.models import read_checkpoint_config

    c = read_checkpoint_config(path)["config"]
    print(f"edlm convert: {args.src} -> {path} (DiT {c['n_blocks']} x {c['hidden_size']}, {c['n_heads']} heads, "
          f"vocab {c['vocab_size']}, L {c['length']}; use it with --denoiser {path}"
          f"{'' if tokenizer is not None else ' --tokenizer gpt2'})")
    return 0
