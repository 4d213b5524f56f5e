"""`python -m edlm.cli ...`: the `edlm` command (what torchrun and subprocess tests run)."""

import sys

from edlm.cli import main

sys.exit(main())
