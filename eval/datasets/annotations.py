"""What every benchmark reader shares: annotation files (JSON, JSONL, parquet) read into rows, a row's
fields, options and gold answer checked into an :class:`Item` (or an error item saying what is wrong), and
a row's video found under the benchmark's root.

What this module deliberately does not do: know any one benchmark's layout (each has its module beside
this one), or decode videos.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from specvlm_eval.config import BenchmarkConfig

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
#: Extensions tried, in order, after a video's own name (lmms-eval tries the same three).
VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv")
#: Names ending in one of these already carry a video extension (other dots belong to the name).
_KNOWN_EXTENSIONS = {".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".flv", ".wmv", ".mpg", ".mpeg", ".3gp"}


class AnnotationError(ValueError):
    """A malformed annotation row; its sample becomes error rows carrying this message."""


@dataclass(frozen=True)
class Item:
    """A benchmark row before a prompt mode is applied."""

    sample_id: str
    video: str
    question: str
    options: tuple[str, ...] = ()
    answer_index: int | None = None
    reference: str | None = None
    task: str | None = None
    prompt: str | None = None  # a ready-made benchmark prompt (synthetic)
    answer_text: str | None = None
    answer_issue: str | None = None
    bounds: tuple[float, float] | None = None
    frame_fps: float | None = None
    error: str | None = None


class _BadLine:
    """A JSONL line that is not valid JSON (becomes an error row, not an aborted run)."""

    def __init__(self, reason: str):
        self.reason = reason


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ValueError(
            f"reading {path} needs pyarrow: pip install -e \".[eval]\" (or pip install pyarrow), "
            "or export the file to JSON/JSONL"
        ) from err
    return pq.read_table(path).to_pylist()


def read_records(path: str | os.PathLike) -> list:
    """Rows of a ``.json`` (a list, or a mapping holding one list), ``.jsonl`` or ``.parquet`` file.

    Text is read as editors write it: UTF-8 with or without a byte-order mark, lines ending in LF or
    CRLF (a UTF-16 file, which starts with its own byte-order mark, is refused by name).
    A file that cannot be read as a whole raises ``ValueError`` naming it. Single rows are not checked
    here: a JSONL line that is not valid JSON comes back as a marker and the readers turn it (like any
    row that is not a JSON object) into an error row.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            with open(path, "rb") as fh:
                head = fh.read(2)
            if head.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise ValueError(f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
        if suffix == ".jsonl":
            rows: list = []
            with open(path, "rb") as fh:
                for lineno, raw in enumerate(fh, 1):
                    if raw.strip():
                        try:  # utf-8-sig: a byte-order mark (first line) is not part of the row
                            rows.append(json.loads(raw.decode("utf-8-sig")))
                        except (UnicodeDecodeError, json.JSONDecodeError) as err:
                            rows.append(_BadLine(f"line {lineno} is not valid JSON ({err})"))
            return rows
        if suffix == ".json":
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
            if isinstance(data, dict):
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise ValueError(f"{path}: expected a list of rows or a mapping holding exactly one list")
                data = lists[0]
            if not isinstance(data, list):
                raise ValueError(f"{path}: expected a list of JSON objects")
            return data
        if suffix == ".parquet":
            return _parquet_reader()(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    except OSError as err:  # a directory, a permission problem, ...
        raise ValueError(f"{path}: cannot be read: {err.strerror or err}") from err
    raise ValueError(f"{path}: unsupported annotation format {suffix!r}; use .json, .jsonl or .parquet")


def _parquet_reader() -> Callable[[Path], list[dict]]:
    """The package's ``specvlm_eval.datasets._read_parquet``, looked up when a file is read: that name is the one to
    replace (the tests read parquet without pyarrow through it), and this module never imports its package."""
    return getattr(sys.modules.get(__package__), "_read_parquet", _read_parquet)


def _annotation_files(root: Path, patterns: tuple[str, ...], override: str | None, benchmark: str,
                      exclude: str | None = None) -> list[Path]:  # fmt: skip
    """Files of the first pattern that matches (``exclude``: a regex on file names the patterns skip)."""
    if not root.is_dir():
        raise ValueError(f"{benchmark}: dataset directory {str(root)!r} does not exist")
    tried = (override,) if override else patterns
    for pattern in tried:
        found = sorted(Path(p) for p in glob.glob(str(root / pattern), recursive=True) if os.path.isfile(p))
        if exclude and not override:
            found = [p for p in found if not re.search(exclude, p.name)]
        if found:
            return found
    raise ValueError(f"{benchmark}: no annotation file in {str(root)!r} matches {', '.join(tried)}")


def _rows(path: Path, make: Callable[[dict, int, str], "Item | None"],
          fallback: Callable[[Any, int], tuple[str, str | None]]) -> Iterator[Item]:  # fmt: skip
    """``make(row, index, where)`` per row; a malformed row becomes an error item (``fallback`` -> id, task)."""
    for i, row in enumerate(read_records(path)):
        where = f"{path} row {i}"
        try:
            if isinstance(row, _BadLine):
                raise AnnotationError(f"{path}: {row.reason}")
            if not isinstance(row, dict):
                raise AnnotationError(f"{where}: expected a JSON object, got {type(row).__name__}: {str(row)[:80]}")
            item = make(row, i, where)
        except AnnotationError as err:
            sid, task = fallback(row, i)
            logger.warning("%s; its sample becomes error rows", err)
            yield Item(sample_id=sid, video="", question="", task=task, error=str(err))
            continue
        if item is not None:
            yield item


def _id_or(row: Any, names: tuple[str, ...], fallback: str) -> str:
    if isinstance(row, dict):
        for n in names:
            if row.get(n) is not None and str(row[n]).strip():
                return str(row[n])
    return fallback


def _get(row: dict, *names: str, where: str, default: Any = KeyError) -> Any:
    """The first of ``names`` with a value; ``default`` when none has one, else an :class:`AnnotationError`
    saying whether the field is missing or null."""
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    if default is not KeyError:
        return default
    field = " or ".join(map(repr, names))
    if any(n in row for n in names):
        raise AnnotationError(f"{where}: field {field} is null")
    raise AnnotationError(f"{where}: missing field {field}; row has {sorted(row)}")


def _text(value: Any, name: str, where: str) -> str:
    if isinstance(value, (dict, list)):
        raise AnnotationError(f"{where}: field {name!r} must be text, got {type(value).__name__}")
    return str(value)


def _options(value: Any, name: str, where: str, strip_letters: bool = False) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise AnnotationError(f"{where}: field {name!r} must be a non-empty list of options, got {value!r}")
    if len(value) > len(LETTERS):
        raise AnnotationError(f"{where}: {len(value)} options; at most {len(LETTERS)} can be lettered")
    if any(o is None or isinstance(o, (dict, list)) for o in value):
        raise AnnotationError(f"{where}: field {name!r} holds an option that is not text: {value!r}")
    return tuple(_strip_letter(o) if strip_letters else str(o) for o in value)


def _gold(answer: Any, options: tuple[str, ...]) -> tuple[int | None, str | None]:
    """(index of the gold answer, None), or (None, why it matches no option).

    The answer is an option's text, or a letter ("B", "(B)", "B. text"). A number is compared as
    text: digits are never taken as an index (benchmarks whose field is an index convert it themselves).
    """
    if isinstance(answer, (dict, list)) or isinstance(answer, bool):
        return None, f"gold answer {answer!r} is not among the options {list(options)}"
    text = str(answer).strip()
    if text in options:
        return options.index(text), None
    stripped = [o.strip() for o in options]
    if text in stripped:
        return stripped.index(text), None
    m = re.fullmatch(r"\(?([A-J])\)?(?:[.:)]\s*.*)?", text, flags=re.S)
    if m and LETTERS.index(m.group(1)) < len(options):
        return LETTERS.index(m.group(1)), None
    return None, f"gold answer {answer!r} is not among the options {list(options)}"


def _strip_letter(option: Any) -> str:
    """'A. a cat' -> 'a cat' (Video-MME / some MLVU exports prefix options with their letter)."""
    return re.sub(r"^\(?[A-J][.)]\s*", "", str(option).strip())


def _name_candidates(name: str) -> list[str]:
    """The name itself, then the same stem with each of :data:`VIDEO_EXTENSIONS`."""
    stem, ext = os.path.splitext(name)
    if ext.lower() not in _KNOWN_EXTENSIONS:
        stem = name
    out = [name] + [stem + e for e in VIDEO_EXTENSIONS]
    return list(dict.fromkeys(out))


def _inside(root: Path, path: Path) -> bool:
    root_abs = os.path.normpath(os.path.abspath(root))
    path_abs = os.path.normpath(os.path.abspath(path))
    return path_abs == root_abs or path_abs.startswith(root_abs.rstrip(os.sep) + os.sep)


def _find_video(root: Path, dirs: list[Path], name: str, cfg: BenchmarkConfig, where: str,
                allow_dirs: bool = False) -> tuple[str, int]:  # fmt: skip
    """(path of the first existing candidate, index of its directory in ``dirs``), else (the first
    candidate, -1). ``name`` (with the fallback extensions) is tried in each directory in order; a folder
    counts only with ``allow_dirs`` (frame folders). A name leading outside ``root`` is refused unless
    the config allows it."""
    name = name.strip()
    if not name:
        raise AnnotationError(f"{where}: the video name is empty")
    if not cfg.allow_outside_root and not _inside(root, dirs[0] / name):
        raise AnnotationError(
            f"{where}: video path {name!r} resolves outside the benchmark root {str(root)!r}; set "
            f"benchmarks[{cfg.label}].allow_outside_root: true to allow it"
        )
    names = _name_candidates(name)
    for k, d in enumerate(dirs):
        for n in names:
            c = d / n
            if c.is_file() or (allow_dirs and c.is_dir()):
                return str(c.resolve()), k
    return str((dirs[0] / name).absolute()), -1


def _multiple_choice(question: str, options: tuple[str, ...], answer: Any, **kw) -> Item:
    """An item whose gold ``answer`` (text or letter) is matched against ``options``."""
    index, issue = (None, None) if answer is None else _gold(answer, options)
    if issue:
        logger.warning("%s: %s; the sample runs ungraded", kw.get("sample_id"), issue)
    return Item(question=question, options=options, answer_index=index, answer_issue=issue,
                answer_text=None if answer is None else str(answer), **kw)  # fmt: skip
