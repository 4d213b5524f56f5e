"""The `edlm` command. Each subcommand is one short function; the logic lives in the library.

    edlm train {mdlm,ar,energy} ...   edlm sample ...   edlm eval {nll,genppl} ...
    edlm bench {sweep,merge,plot,speed} ...  edlm data fetch NAME ...  edlm convert SRC DST  edlm demo

Importing this module and building its parser import nothing heavy (torch, omegaconf, transformers,
lightning): each subcommand imports what it needs when it runs.
"""

from __future__ import annotations

import sys

from edlm.cli.parser import build_parser
from edlm.errors import EdlmError

__all__ = ["build_parser", "main"]


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
    except OSError as exc:  # a read-only file system, a full disk, a file in a directory's place: one line
        if args.debug:
            raise
        from edlm.errors import describe_os_error

        print(f"edlm: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
