"""Result rows that are never lost: append-only JSONL, fsynced per row, resumable, mergeable, one writer.

One row per (sample, method), keyed ``"<benchmark>/<prompt_mode>/<sample_id>|<method key>"``. A
single process appends to ``<output>/results.jsonl``; with several processes rank ``r`` appends to
``<output>/shards/rank<r>.jsonl`` and rank 0 merges everything into ``results.jsonl`` at the end.
Every row is flushed and fsynced as it is written, so a crash loses at most the row being written;
a torn last line (from a crash mid-write) is dropped when the file is next opened for appending
(dropped lines are kept in ``<file>.dropped`` for inspection).

Rerunning reads every row already on disk (``results.jsonl`` and any shards) and skips those keys;
a line that is not UTF-8 or not a JSON object is skipped with a warning naming the file and line.
Rows written by older versions are read as this version writes them (:func:`upgrade`: renamed fields
and old spellings of setting values), so a run resumes from them and a summary counts them.
Merging keeps the last row written for a key and orders rows deterministically (samples in
benchmark order, methods in config order), so a merged multi-process run equals a single-process one.

One writer per directory: :class:`RunLock` (``<output>/.specvlm-eval.lock``, an ``flock`` held for
the whole run, the holder's pid, host and start time written inside) makes a second run or a
``--summarize`` of a directory in use fail with a message naming the holder. The kernel releases
the lock when its process dies, so a lock file left by a crashed run is taken over.

What this module deliberately does not do: compute metrics or decide what a row contains.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

from specvlm import config as decoding
from specvlm.answers import canonical_mode

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SHARDS = "shards"
LOCK = ".specvlm-eval.lock"
#: Row fields an older version wrote under another name: {old: current}.
RENAMED_FIELDS = {"video_tokens": "visual_tokens", "kept_video_tokens": "kept_visual_tokens"}
#: Settings whose values have old spellings (``specvlm.config.canonical``); they appear in method keys.
_ALIASED_SETTINGS = ("pruning", "tree")


def row_key(sample_key: str, method_key: str) -> str:
    return f"{sample_key}|{method_key}"


def _method_key(key: str) -> str:
    """A method key (``specvlm[pruning=specvlm,drop_rate=0.9,tree=specvlm-25]``) with each aliased
    setting's value under its current name (``pruning=verifier_guided``, ``tree=reference-25``)."""

    def current(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        return f"{name}={decoding.canonical(name, value)}"

    return re.sub(rf"(?<=[\[,])({'|'.join(_ALIASED_SETTINGS)})=([^,\]\[]+)(?=[,\]])", current, key)


def upgrade(row: dict) -> dict:
    """``row`` as this version writes it: fields an older version wrote under another name
    (:data:`RENAMED_FIELDS`) renamed, and old spellings of setting values (the pruning ``specvlm``, the
    tree ``specvlm-25``, the answer mode ``specvlm``) replaced by the current names in ``settings``, the
    method key, the row key and ``answer_extraction``. A current row comes back equal; the argument is
    not modified."""
    out = {}
    for k, v in row.items():
        new = RENAMED_FIELDS.get(k)
        if new is None:
            out[k] = v
        elif new not in row:  # with both spellings present, the current one is kept
            out[new] = v
    settings = out.get("settings")
    if isinstance(settings, dict):
        out["settings"] = {k: decoding.canonical(k, v) if k in _ALIASED_SETTINGS else v for k, v in settings.items()}
    if isinstance(out.get("method"), str):
        out["method"] = _method_key(out["method"])
    if isinstance(out.get("key"), str) and "|" in out["key"]:
        sample_key, method_key = out["key"].split("|", 1)
        out["key"] = row_key(sample_key, _method_key(method_key))
    if "answer_extraction" in out:
        out["answer_extraction"] = canonical_mode(out["answer_extraction"])
    return out


def _parse_line(raw: bytes, path: Path, lineno: int, warn: bool = True) -> dict | None:
    """The row on one line, or None (with a warning naming the file and line) when it is not one."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except json.JSONDecodeError:
        problem = "is torn or not valid JSON"
    else:
        if isinstance(row, dict) and isinstance(row.get("key"), str):
            return upgrade(row)
        problem = "is not a result row (a JSON object with a string 'key')"
    if warn:
        logger.warning("%s:%d: skipping a line that %s (%d bytes)", path, lineno, problem, len(raw))
    return None


def read_rows(path: Path) -> list[dict]:
    """Valid rows of a JSONL file in file order; blank lines are ignored and unreadable ones (not
    UTF-8, torn or garbage JSON, not a row) are skipped with a warning naming the file and line."""
    rows: list[dict] = []
    if not path.is_file():
        return rows
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if raw.strip():
                row = _parse_line(raw, path, lineno)
                if row is not None:
                    rows.append(row)
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
    """Drop torn or unreadable lines so that appending starts on a fresh line (they go to ``<path>.dropped``)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    bad = [line for line in lines if line.strip() and _parse_line(line, path, 0, warn=False) is None]
    if not bad and raw.endswith(b"\n"):
        return
    rows = read_rows(path)  # warns once per dropped line, naming it
    if bad:
        with open(path.with_name(path.name + ".dropped"), "ab") as fh:
            fh.write(b"".join(line + b"\n" for line in bad))
    logger.warning("%s: rewriting without %d unreadable line(s) (%d rows kept)", path, len(bad), len(rows))
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


def ordered_rows(output: Path, order: Callable[[dict], tuple]) -> list[dict]:
    """Every row on disk (the latest per key), sorted by ``order``; writes nothing."""
    return sorted(latest_rows(output).values(), key=order)


def merge(output: Path, order: Callable[[dict], tuple]) -> list[dict]:
    """Merge ``results.jsonl`` and all shards into ``results.jsonl`` (sorted by ``order``); remove the shards.

    Only the holder of the directory's :class:`RunLock` may call this (it replaces ``results.jsonl``).
    Unreadable lines are set aside in ``<file>.dropped`` first (:func:`repair`), never silently lost."""
    for path in result_files(output):
        repair(path)
    rows = ordered_rows(output, order)
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


# --------------------------------------------------------------------------- one writer per directory


class DirectoryLocked(ValueError):
    """Another process holds the output directory's lock; the message names it."""


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process (it has not written its details yet)"
    what = f"specvlm-eval {holder.get('purpose', 'run')}" if holder.get("purpose") else "another process"
    return f"{what} (pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')})"


class RunLock:
    """Exclusive use of an output directory for one run or summary (see the module docstring).

    ``acquire`` raises :class:`DirectoryLocked` naming the holder when the directory is in use and
    ``PermissionError`` when the lock file cannot be created. Where the filesystem has no ``flock``
    (some network filesystems) the lock file alone decides: one naming a process that is no longer
    running on this host is taken over; one naming another host is refused (remove it by hand if
    that run is over).
    """

    def __init__(self, output: Path, purpose: str = "run"):
        self.path = Path(output) / LOCK
        self.purpose = purpose
        self._fd: int | None = None

    def _info(self) -> bytes:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv}  # fmt: skip
        return (json.dumps(info) + "\n").encode()

    @staticmethod
    def _holder(fd_or_path) -> dict | None:
        try:
            if isinstance(fd_or_path, int):
                raw = os.pread(fd_or_path, 65536, 0)
            else:
                raw = Path(fd_or_path).read_bytes()
            holder = json.loads(raw.decode("utf-8"))
            return holder if isinstance(holder, dict) else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None

    def _refuse(self, holder: dict | None, extra: str = "") -> DirectoryLocked:
        return DirectoryLocked(
            f"{self.path.parent} is in use by {_describe(holder)}{extra}; wait for it to finish or use another "
            f"--output (lock file {self.path})"
        )

    def _write(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._info(), 0)
        os.fsync(fd)

    def acquire(self) -> "RunLock":
        import fcntl

        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                extra = ""
                if holder and holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                        and not _pid_running(holder["pid"]):  # fmt: skip
                    extra = " (that pid has exited, but a process it started still holds the lock)"
                raise self._refuse(holder, extra) from None
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    return self._acquire_by_content()
                raise
            try:  # a holder releasing unlinks the file: make sure ours is still the one at the path
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if not current:
                os.close(fd)
                continue
            previous = self._holder(fd)
            if previous:
                logger.warning("%s: taking over the lock of %s, which no longer holds it", self.path, _describe(previous))
            self._write(fd)
            self._fd = fd
            return self
        raise DirectoryLocked(f"could not lock {self.path}: it keeps being replaced by other processes")

    def _acquire_by_content(self) -> "RunLock":
        """No flock here: an exclusive create, or the takeover of a lock whose process is gone."""
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder(self.path)
                if not holder:
                    raise self._refuse(holder) from None
                same_host = holder.get("host") == socket.gethostname()
                pid = holder.get("pid")
                if not same_host or not isinstance(pid, int) or _pid_running(pid):
                    why = "" if same_host else " (on another host: remove the lock file if that run is over)"
                    raise self._refuse(holder, why) from None
                logger.warning("%s: taking over the stale lock of %s (not running)", self.path, _describe(holder))
                stale = self.path.with_name(f"{LOCK}.stale-{os.getpid()}")
                try:
                    os.rename(self.path, stale)
                except FileNotFoundError:
                    continue  # someone else took it over first: try again
                os.unlink(stale)
                continue
            self._write(fd)
            self._fd = fd
            return self
        raise DirectoryLocked(f"could not lock {self.path}: it keeps being replaced by other processes")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                os.unlink(self.path)  # while still holding it, so nobody locks the unlinked file in between
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
