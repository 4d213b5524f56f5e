"""The ``edlm`` command. Each subcommand is one short function; the logic lives in the library.

    edlm train {mdlm,ar,energy} ...   edlm sample ...   edlm eval {nll,genppl} ...
    edlm bench {sweep,speed} ...      edlm demo
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

    from edlm.training.trainer import train

    result = train(cfg, args.kind)
    if result.rank == 0:  # under DDP every process runs this; one summary is enough
        print(result.summary())
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    raise EdlmError("`edlm sample` is not implemented yet.")


def cmd_eval(args: argparse.Namespace) -> int:
    raise EdlmError("`edlm eval` is not implemented yet.")


def cmd_bench(args: argparse.Namespace) -> int:
    raise EdlmError("`edlm bench` is not implemented yet.")


def cmd_demo(args: argparse.Namespace) -> int:
    raise EdlmError("`edlm demo` is not implemented yet.")


# ----------------------------------------------------------------------------- parser
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
        k.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.max_steps=100")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate text with MDLM or EDLM (importance sampling)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="likelihood bounds/estimates and generative perplexity")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="speed/quality sweeps and speed benchmarks")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="run the shipped models offline and print a comparison table")
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
