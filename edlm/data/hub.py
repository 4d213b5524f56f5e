"""Corpora from the Hugging Face hub through `datasets.load_dataset`: ``hf:NAME[:CONFIG]``.

    load_hub_corpus("hf:wikitext:wikitext-103-raw-v1", "validation")           # a hub dataset and its config
    load_hub_corpus("hf:allenai/c4:en", "train[:1%]", text_column="text")      # split slicing as `datasets` has it
    load_hub_corpus("hf:path/to/a/clone", "train")                             # a local folder in hub layout

NAME is what `datasets.load_dataset` takes as its path: a hub id, or a local folder of data files laid out as
a hub dataset repository (``train.jsonl``, ``validation.parquet``, ``data/train-*.csv``, or the ``configs``
of its README) — the same code path, which needs no network for a local folder. The split is passed on
as it is; the text column is renamed ``text``, rows whose text is empty or missing are dropped.
"""

from __future__ import annotations

from edlm.errors import DataError, first_line

__all__ = ["HUB_PREFIX", "parse_hub_spec", "load_hub_corpus"]

HUB_PREFIX = "hf:"


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """``hf:NAME[:CONFIG]`` -> (NAME, CONFIG or None)."""
    if not spec.startswith(HUB_PREFIX) or not spec[len(HUB_PREFIX):]:
        raise DataError(f"a hub corpus is written hf:NAME or hf:NAME:CONFIG (e.g. hf:wikitext:wikitext-2-raw-v1), "
                        f"got {spec!r}.")
    name, _, config = spec[len(HUB_PREFIX):].partition(":")
    if not name or (config == "" and spec.endswith(":")):
        raise DataError(f"hub corpus {spec!r} has an empty name or config; write hf:NAME or hf:NAME:CONFIG.")
    return name, config or None


def load_hub_corpus(spec: str, split: str, *, text_column: str = "text", max_docs: int | None = None,
                    max_chars: int | None = None, cache_dir: str | None = None):
    """Load split ``split`` of the hub corpus ``spec`` as a `Dataset` with one column ``text``.

    Args:
        spec: ``hf:NAME[:CONFIG]``.
        split: the dataset's split, e.g. "train", "validation", "train[:5%]".
        text_column: the column that holds each document.
        max_docs, max_chars: keep only a prefix (the last document cut).
        cache_dir: `datasets`' cache folder (default: its own).

    Raises:
        DataError: `datasets` not installed, the dataset or split not found (offline: not cached), no such
            column, no text.
    """
    name, config = parse_hub_spec(spec)
    try:
        import datasets  # only when a hub corpus is asked for
    except ImportError:
        raise DataError(f"hub corpus {spec!r} needs the `datasets` package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
    except Exception as exc:  # unknown dataset, split or config; offline; auth: all one line for the user
        cause = exc.__cause__ if isinstance(exc, datasets.exceptions.DatasetGenerationError) else None
        raise DataError(f"could not load hub dataset {spec!r} split {split!r}: "
                        f"{first_line(cause or exc)[:300]}") from exc
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"hub dataset {spec!r} split {split!r} is not one table ({type(ds).__name__}).")
    if text_column not in ds.column_names:
        raise DataError(f"hub dataset {spec!r} has no column {text_column!r} (columns: "
                        f"{', '.join(ds.column_names)}); name the one that holds the text with --text-column.")
    ds = ds.select_columns([text_column])
    if text_column != "text":
        ds = ds.rename_column(text_column, "text")
    if ds.features["text"].dtype not in ("string", "large_string"):
        raise DataError(f"hub dataset {spec!r} column {text_column!r} holds {ds.features['text']}, not text.")
    ds = ds.filter(lambda batch: [bool(t) for t in batch["text"]], batched=True, desc="dropping empty rows")
    if max_docs is not None:
        ds = ds.select(range(min(max_docs, len(ds))))
    if max_chars is not None:
        ds = _take_chars(ds, max_chars, datasets)
    if len(ds) == 0:
        raise DataError(f"hub dataset {spec!r} split {split!r} holds no text.")
    return ds


def _take_chars(ds, max_chars: int, datasets):
    """The first ``max_chars`` characters of ``ds`` (the last row cut)."""
    total = 0
    for i, text in enumerate(ds["text"]):
        if total + len(text) >= max_chars:
            head = ds.select(range(i))
            cut = datasets.Dataset.from_dict({"text": [text[: max_chars - total]]}, features=ds.features)
            return datasets.concatenate_datasets([head, cut])
        total += len(text)
    return ds
