"""The files of a sweep directory (SPEC 4): results and samples JSONL, the machine/date/command they record.

    rows = read_results("runs/bench/tiny_cpu", judge="SmolLM2-135M-Instruct")   # one row per (cell, judge)
    header, samples = read_samples("runs/bench/tiny_cpu/samples/<cell_key>.jsonl")
    merge_results("runs/bench/tiny_cpu")                      # results.rank*.jsonl -> results.jsonl

Results rows are appended durably one line at a time and a line torn by a crash is skipped when read;
samples files are written atomically by the sweep. The directory layout is in ``edlm.bench.sweep``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from edlm.atomic import atomic_write_text
from edlm.bench.cells import Cell
from edlm.errors import DataError
from edlm.locks import dir_lock

__all__ = ["TIMING_FIELDS", "RESULTS_FILE", "merge_results", "read_results", "read_samples", "read_sample_texts",
           "append_jsonl", "read_jsonl", "samples_path", "samples_finished", "hardware_string", "utc_now",
           "command_line", "max_rss_bytes"]

# Row fields that depend on the machine, the moment or the invocation, not on the cell's settings:
# a re-run or another sharding of the same cells changes only these.
TIMING_FIELDS = (
    "seconds_per_sample", "tokens_per_s", "generation_seconds", "score_seconds", "peak_memory_bytes",
    "process_max_rss_bytes", "hardware", "scored_on", "torch_version", "date", "generated_date", "command",
)
RESULTS_FILE = "results.jsonl"
_RANK_RESULTS = re.compile(r"^results\.rank(\d+)\.jsonl$")


# ----------------------------------------------------------------------------- files
def append_jsonl(path: Path, record: dict) -> None:
    """Append one line durably (flush + fsync). A torn last line from a crash is cut off first; a failed append (a
    full disk) is cut back off, leaving the file as it was, and raised as an ``OSError`` naming ``path``."""
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b", buffering=0)  # unbuffered: nothing is left to write after a failure
    except OSError as exc:
        raise _naming(exc, path) from exc
    with f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":  # a line torn by a crash: drop it (its cell is redone)
                f.seek(0)
                size = f.read().rfind(b"\n") + 1
                f.truncate(size)
        try:
            view = memoryview(line)
            while view:
                view = view[f.write(view):]  # O_APPEND: at the end
            os.fsync(f.fileno())
        except OSError as exc:
            try:  # what did reach the file goes again: the earlier rows stay byte-identical
                f.truncate(size)
                os.fsync(f.fileno())
            except OSError:
                pass  # a torn last line is cut off by the next append and skipped by readers
            raise _naming(exc, path) from exc


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` about ``path`` (a write error on a file object names no file)."""
    return OSError(exc.errno, exc.strerror, str(path)) if exc.errno is not None and exc.filename is None else exc


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file; a torn last line (a crash mid-append) is skipped."""
    if not path.is_file():
        return []
    # split on "\n" only: str.splitlines() also breaks at U+2028, \x85, \x0b, ... which json.dumps(ensure_ascii=False)
    # leaves raw inside strings, and byte-level BPE samples do contain them
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue  # torn by a crash; that cell is simply not finished
            raise DataError(f"{path}, line {i + 1}, is not valid JSON; the file is corrupt.") from None
    return out


def _results_files(out: Path) -> list[Path]:
    """results.jsonl first, then results.rank{r}.jsonl by r."""
    ranked = sorted(((int(m.group(1)), p) for p in out.glob("results.rank*.jsonl")
                     if (m := _RANK_RESULTS.match(p.name))), key=lambda rp: rp[0])
    return [out / RESULTS_FILE] + [p for _, p in ranked]


def read_results(out: str | os.PathLike, judge: str | None = None) -> list[dict]:
    """Every result row of a sweep directory (merged and per-rank files), one per (cell, judge), by cell key.

    A row in a later file (a rank file, or later in the same file) replaces an earlier one for the same
    cell and judge. ``judge`` keeps only that judge's rows.
    """
    rows: dict[tuple[str, str], dict] = {}
    for path in _results_files(Path(out)):
        for row in read_jsonl(path):
            rows[(row["cell_key"], row["judge"])] = row
    picked = [rows[k] for k in sorted(rows)]
    return [r for r in picked if judge is None or r["judge"] == judge]


def merge_results(out: str | os.PathLike) -> Path:
    """Join results.jsonl and every results.rank{r}.jsonl into results.jsonl, sorted by (cell key, judge).

    Deterministic (same rows, same bytes) and idempotent; the rank files are kept. It runs under the directory's
    lock (``edlm.locks``; re-entrant for the sweep that holds it): a row appended between the read and the
    rename would be lost, so a merge into a directory that another live sweep owns is refused.
    """
    out = Path(out)
    with dir_lock(out, flag="--out"):
        rows = read_results(out)
        atomic_write_text(out / RESULTS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out / RESULTS_FILE


def samples_path(out: Path, cell: Cell) -> Path:
    """Where a sweep directory keeps one cell's samples."""
    return out / "samples" / f"{cell.key}.jsonl"


def read_samples(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(header, samples) of one cell's samples file: the header has the settings and speed of the cell."""
    records = read_jsonl(Path(path))
    if not records or records[0].get("record") != "cell":
        raise DataError(f"{path} is not a sweep samples file (no header record).")
    return records[0], records[1:]


def read_sample_texts(path: str | os.PathLike) -> tuple[list[str], list[list[int]] | None]:
    """(texts, token lists or None) of a samples JSONL: ``edlm sample --out`` records or a sweep samples file."""
    records = [r for r in read_jsonl(Path(path)) if r.get("record") != "cell"]
    if not records:
        raise DataError(f"{path} holds no sample records.")
    if any("text" not in r for r in records):
        raise DataError(f"{path}: every record needs a `text` field (as `edlm sample --out` writes).")
    tokens = [r["tokens"] for r in records] if all("tokens" in r for r in records) else None
    return [r["text"] for r in records], tokens


def read_sample_energies(path: str | os.PathLike) -> set[str]:
    """The energy specs that chose the samples of a JSONL (``settings.energy`` of ``edlm sample`` records,
    ``settings.energy_spec`` of a sweep's cell header); "none" entries are left out."""
    specs = set()
    for r in read_jsonl(Path(path)):
        settings = r.get("settings") or {}
        spec = settings.get("energy_spec", settings.get("energy"))
        if isinstance(spec, str) and spec.strip().lower() not in ("", "none"):
            specs.add(spec)
    return specs


def samples_finished(out: Path, cell: Cell) -> bool:
    """Does ``out`` hold every sample of ``cell`` (a complete samples file with the cell's key)?"""
    path = samples_path(out, cell)
    if not path.is_file():
        return False
    try:
        header, samples = read_samples(path)
    except DataError:
        return False
    return header.get("cell_key") == cell.key and len(samples) == cell.num_samples


# ----------------------------------------------------------------------------- environment
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_string(device: str | torch.device = "cpu") -> str:
    """The machine that did the work: the GPU's name on CUDA, else the CPU model and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{_cpu_model()}, {torch.get_num_threads()} threads, {os.cpu_count()} logical CPUs"


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def command_line() -> str:
    """This process's command line (the program's base name, then its arguments), shell-quoted."""
    argv = [Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv)]
    return " ".join(shlex.quote(a) for a in argv)


def max_rss_bytes() -> int:
    """The peak resident memory of this process so far, in bytes."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB

