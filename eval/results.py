"""Result rows that are never lost: append-only JSONL, fsynced per row, resumable, mergeable.

One row per (sample, method), keyed ``"<benchmark>/<prompt_mode>/<sample_id>|<method key>"``. A
single process appends to ``<output>/results.jsonl``; with several processes rank ``r`` appends to
``<output>/shards/rank<r>.jsonl`` and rank 0 merges everything into ``results.jsonl`` at the end.
Every row is flushed and fsynced as it is written, so a crash loses at most the row being written;
a torn last line (from a crash mid-write) is dropped when the file is next opened for appending.

Rerunning reads every row already on disk (``results.jsonl`` and any shards) and skips those keys.
Merging keeps the last row written for a key and orders rows deterministically (samples in
benchmark order, methods in config order), so a merged multi-process run equals a single-process one.

What this module deliberately does not do: compute metrics or decide what a row contains.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SHARDS = "shards"


def row_key(sample_key: str, method_key: str) -> str:
    return f"{sample_key}|{method_key}"


def read_rows(path: Path) -> list[dict]:
    """Valid rows of a JSONL file in file order; blank and unparsable (torn) lines are skipped."""
    rows: list[dict] = []
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("%s:%d: skipping a torn or corrupt line (%d bytes)", path, lineno, len(line))
                continue
            if isinstance(row, dict) and isinstance(row.get("key"), str):
                rows.append(row)
            else:
                logger.warning("%s:%d: skipping a line that is not a result row", path, lineno)
    return rows


def result_files(output: Path) -> list[Path]:
    """``results.jsonl`` then every shard file, in a fixed order."""
    files = [output / RESULTS] if (output / RESULTS).is_file() else []
    shards = output / SHARDS
    if shards.is_dir():
        files += sorted(shards.glob("rank*.jsonl"))
    return files


def latest_rows(output: Path) -> dict[str, dict]:
    """{key: the last row written for it} over all result files."""
    rows: dict[str, dict] = {}
    for path in result_files(output):
        for row in read_rows(path):
            rows[row["key"]] = row
    return rows


def finished_keys(output: Path, retry_errors: bool = False) -> set[str]:
    """Keys that need no rerun (error rows too, unless ``retry_errors``)."""
    return {k for k, r in latest_rows(output).items() if not (retry_errors and r.get("status") == "error")}


def _atomic_write(path: Path, rows: Iterable[dict]) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def repair(path: Path) -> None:
    """Drop torn or corrupt lines so that appending starts on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    ok = True
    for line in lines:
        if line.strip():
            try:
                json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                ok = False
                break
    if ok and raw.endswith(b"\n"):
        return
    rows = read_rows(path)
    logger.warning("%s: rewriting without torn lines (%d rows kept)", path, len(rows))
    _atomic_write(path, rows)


class RowWriter:
    """Append rows to one JSONL file, flushing and fsyncing each."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        repair(path)
        self._fh = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._fh.write(json.dumps(row, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def writer_path(output: Path, rank: int, world_size: int) -> Path:
    return output / RESULTS if world_size == 1 else output / SHARDS / f"rank{rank}.jsonl"


def merge(output: Path, order: Callable[[dict], tuple]) -> list[dict]:
    """Merge ``results.jsonl`` and all shards into ``results.jsonl`` (sorted by ``order``); remove the shards."""
    rows = sorted(latest_rows(output).values(), key=order)
    _atomic_write(output / RESULTS, rows)
    shards = output / SHARDS
    if shards.is_dir():
        for path in shards.glob("rank*.jsonl"):
            path.unlink()
        try:
            shards.rmdir()
        except OSError:
            pass  # something else lives there; leave it
    return rows
