"""The conditional side of ``edlm sample``: its prompt and template flags checked together, and the record it
writes per completion.

    conditions = conditions_from_flags(["The river"], None, [], 32, True)   # sample_records' keywords
    ConditionalRecord(index=0, text=..., prompt="The river", completion=..., spans=[...])

``edlm.conditional.sample_records`` turns completions into these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edlm.conditional_layout import parse_template, refuse_length
from edlm.errors import describe_os_error
from edlm.pipeline import SampleRecord
from edlm.samplers.settings import check_positive_int

__all__ = ["ConditionalRecord", "read_prompt_file", "conditions_from_flags"]


@dataclass
class ConditionalRecord(SampleRecord):
    """A ``SampleRecord`` (``text``: the whole text, prompt included) with its ``prompt``, ``completion`` and
    the generated ``spans``; ``edlm.pipeline.write_jsonl`` and ``format_records`` take it as they are."""

    prompt: str = ""
    completion: str = ""
    spans: list[str] = field(default_factory=list)


def read_prompt_file(path) -> list[str]:
    """The prompts of a text file, one a line (line ends dropped, blank lines skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.rstrip("\r\n") for line in f if line.strip()]
    except OSError as exc:
        raise ValueError(f"the prompt file: {describe_os_error(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"the prompt file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    if not prompts:
        raise ValueError(f"the prompt file {path} holds no prompts (one a line).")
    return prompts


def conditions_from_flags(prompts: list[str], prompt_file, templates: list[str], max_new_tokens: int | None,
                          stop_at_eos: bool, length: int | None = None) -> dict | None:
    """``edlm sample``'s --prompt, --prompt-file, --infill, --max-new-tokens and --no-stop-at-eos (and --length),
    checked together before any model loads: the keywords of ``sample_records`` (None: an unconditional run)."""
    prompts = list(prompts) + (read_prompt_file(prompt_file) if prompt_file is not None else [])
    if prompts and templates:
        raise ValueError("give prompts (--prompt, --prompt-file) or templates (--infill), not both.")
    if (prompts or templates) and length is not None:
        refuse_length(length)
    if max_new_tokens is not None:
        check_positive_int("max_new_tokens", max_new_tokens)
        if not prompts:
            raise ValueError("--max-new-tokens applies to prompts (--prompt, --prompt-file) only.")
    if not prompts and not templates:
        if not stop_at_eos:
            raise ValueError("--no-stop-at-eos applies to prompts and templates (--prompt, --infill) only.")
        return None
    for template in templates:
        parse_template(template)  # a bad marker fails before any model loads
    return dict(prompts=prompts or None, templates=templates or None, max_new_tokens=max_new_tokens,
                stop_at_eos=stop_at_eos)
