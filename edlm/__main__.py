"""``python -m edlm`` = the ``edlm`` command (for machines where the package is on PYTHONPATH, not installed)."""

from edlm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
