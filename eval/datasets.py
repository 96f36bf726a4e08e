"""Benchmarks read from local directories laid out like their published datasets.

Each reader turns a dataset directory into :class:`Sample` s (one video + one prompt). Layouts
(``<root>`` is the benchmark's configured ``root``; ``annotations`` in the config overrides the
annotation file pattern):

================== ======================================================== ==========================================
benchmark          annotations (first pattern that matches)                 videos
================== ======================================================== ==========================================
synthetic          ``annotations.jsonl`` (``specvlm.zoo.synthetic``)        ``videos/<sample_id>.mp4``
videodetailcaption ``test.jsonl`` | ``test.json`` | ``**/test-*.parquet``    ``Test_Videos/<video_name>.mp4``
mvbench            ``json/*.json`` (one file per task)                      ``video/<source folder of the task>/<video>``
mlvu               ``json/*.json`` | ``dev.json[l]`` | ``*.parquet``         ``video/<json stem>/<video>``
longvideobench     ``lvb_val.json`` | ``validation-*.parquet`` | ``*.json``  ``videos/<video_path>``
videomme           ``videomme/test-*.parquet`` | ``*.json[l]``               ``data/<videoID>.mp4``
================== ======================================================== ==========================================

(docs/evaluation.md spells out each layout and the fallbacks tried for videos: ``.mp4``, ``.MP4`` and
``.mkv`` for every name, MVBench's ``data0613`` clips and the lmms-eval layout, frame folders.)
A missing video does not stop the listing: the sample keeps its expected path and the run records an
error row for it. A malformed annotation row (a missing or null field, options that are not a list,
bad bounds, a video path outside ``root``) does not stop it either: it becomes a sample whose every
method records an error row saying what is wrong. A gold answer that matches none of the row's options
(two rows of MLVU's ``2_needle.json``) leaves the sample ungraded (``answer`` None, ``answer_issue``
says why): it runs and counts for speed, not for accuracy. Parquet files need ``pyarrow``; JSON and
JSONL need nothing.

Prompt modes: ``benchmark`` asks the dataset's own question (multiple choice: the options lettered
A, B, C, ... and an instruction to answer with the letter; the gold answer becomes a letter) and
``caption`` asks a fixed detailed-description prompt once per distinct video (speed studies).

:func:`load_clip` decodes one sample at run time: a video file (within MVBench's ``start``/``end``
seconds when the row has them) or a folder of frame images (MVBench's ``episodic_reasoning``, 3 fps).

What this module deliberately does not do: download anything, or decode videos while listing samples
(decoding happens per sample at run time, so a bad file costs one error row).
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from eval.config import REFERENCE_CAPTION_PROMPT, BenchmarkConfig

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
#: Extensions tried, in order, after a video's own name (lmms-eval tries the same three).
VIDEO_EXTENSIONS = (".mp4", ".MP4", ".mkv")
#: Names ending in one of these already carry a video extension (other dots belong to the name).
_KNOWN_EXTENSIONS = {".mp4", ".mkv", ".avi", ".webm", ".mov", ".m4v", ".flv", ".wmv", ".mpg", ".mpeg", ".3gp"}
#: Frame images of a frame folder (sorted by the numbers in their names).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Frame rate of MVBench's frame folders (``tvqa/frames_fps3_hq``) when the folder name does not say.
MVBENCH_FRAME_FPS = 3.0

#: MVBench's task files and the folder (under ``video/``) holding each task's videos, as published.
MVBENCH_VIDEO_DIRS = {
    "action_sequence": "star/Charades_v1_480",
    "action_prediction": "star/Charades_v1_480",
    "action_antonym": "ssv2_video",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "unexpected_action": "FunQA_test/test",
    "object_existence": "clevrer/video_validation",
    "object_interaction": "star/Charades_v1_480",
    "object_shuffle": "perception/videos",
    "moving_direction": "clevrer/video_validation",
    "action_localization": "sta/sta_video",
    "scene_transition": "scene_qa/video",
    "action_count": "perception/videos",
    "moving_count": "clevrer/video_validation",
    "moving_attribute": "clevrer/video_validation",
    "state_change": "perception/videos",
    "fine_grained_pose": "nturgbd",
    "character_order": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "episodic_reasoning": "tvqa/frames_fps3_hq",
    "counterfactual_inference": "clevrer/video_validation",
}
#: The folders lmms-eval's MVBench download uses where they differ from the published ones (directly
#: under ``root``). ``*_segment`` folders hold clips already cut to the rows' start/end: no bounds there.
MVBENCH_LMMS_EVAL_DIRS = {
    "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment",
    "object_interaction": "star/Charades_segment",
    "action_localization": "sta/sta_video_segment",
    "action_antonym": "ssv2_video_mp4",
    "fine_grained_pose": "nturgbd_convert",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
}


class AnnotationError(ValueError):
    """A malformed annotation row; its sample becomes error rows carrying this message."""


@dataclass(frozen=True)
class Sample:
    """One (video, prompt) pair. ``answer`` is the gold letter for multiple choice, else ``None``.

    ``answer_text`` is the gold answer as written in the annotations; ``answer_issue`` says why a
    multiple-choice sample has no gold letter (its answer matches none of its options). ``bounds`` are
    (start, end) seconds to sample frames from; ``frame_fps`` is the frame rate of a frame folder;
    ``error`` marks a malformed annotation row (every method records it as an error row).
    """

    benchmark: str  # the benchmark's label (result group)
    prompt_mode: str  # "benchmark" | "caption"
    sample_id: str  # unique within (benchmark, prompt_mode)
    video: str  # absolute path (may be missing: the run records an error row)
    prompt: str | None
    options: tuple[str, ...] = ()
    answer: str | None = None
    reference: str | None = None  # reference text of open-ended answers
    task: str | None = None
    answer_text: str | None = None
    answer_issue: str | None = None
    bounds: tuple[float, float] | None = None
    frame_fps: float | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.prompt_mode}/{self.sample_id}"


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


# --------------------------------------------------------------------------- annotation files


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
            return _read_parquet(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    except OSError as err:  # a directory, a permission problem, ...
        raise ValueError(f"{path}: cannot be read: {err.strerror or err}") from err
    raise ValueError(f"{path}: unsupported annotation format {suffix!r}; use .json, .jsonl or .parquet")


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


# --------------------------------------------------------------------------- readers


def _synthetic(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    from specvlm.zoo.synthetic import Question, question_prompt, read_dataset

    per_video = cfg.synthetic.questions_per_video
    items = []
    for i, row in enumerate(read_dataset(root)):
        questions = row["questions"]
        picks = range(len(questions)) if per_video is None else [(i + k) % len(questions) for k in range(min(per_video, len(questions)))]
        caption_item = Item(sample_id=row["sample_id"], video=row["video_path"], question="", reference=row["caption"])
        items.append(caption_item)
        for k in picks:
            q = Question.from_dict(questions[k])
            items.append(Item(
                sample_id=f"{row['sample_id']}-q{k}", video=row["video_path"], question=q.question,
                options=tuple(q.options), answer_index=q.answer, task=q.kind, prompt=question_prompt(q),
                answer_text=q.options[q.answer],
            ))  # fmt: skip
    return items


def _multiple_choice(question: str, options: tuple[str, ...], answer: Any, **kw) -> Item:
    """An item whose gold ``answer`` (text or letter) is matched against ``options``."""
    index, issue = (None, None) if answer is None else _gold(answer, options)
    if issue:
        logger.warning("%s: %s; the sample runs ungraded", kw.get("sample_id"), issue)
    return Item(question=question, options=options, answer_index=index, answer_issue=issue,
                answer_text=None if answer is None else str(answer), **kw)  # fmt: skip


def _videodetailcaption(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []

    def make(row: dict, i: int, where: str) -> Item:
        name = _text(_get(row, "video_name", where=where), "video_name", where)
        video, _ = _find_video(root, [root / "Test_Videos"], name, cfg, where)
        reference = _get(row, "answer", where=where, default=None)
        return Item(sample_id=name, video=video, question=_text(_get(row, "question", where=where), "question", where),
                    reference=None if reference is None else str(reference))  # fmt: skip

    for path in _annotation_files(root, ("test.jsonl", "test.json", "**/test-*.parquet"), cfg.annotations, cfg.name):
        items.extend(_rows(path, make, lambda row, i: (_id_or(row, ("video_name",), f"{path.stem}/{i}"), None)))
    return items


def _bounds(row: dict, where: str) -> tuple[float, float] | None:
    """MVBench's (start, end) seconds, or None when the row has neither."""
    start, end = row.get("start"), row.get("end")
    if start is None and end is None:
        return None
    try:
        s, e = float(start), float(end)
    except (TypeError, ValueError):
        raise AnnotationError(
            f"{where}: start/end must both be numbers of seconds, got start={start!r}, end={end!r}"
        ) from None
    if not (math.isfinite(s) and math.isfinite(e) and 0 <= s < e):
        raise AnnotationError(f"{where}: start/end must satisfy 0 <= start < end, got start={start!r}, end={end!r}")
    return s, e


def _mvbench_dirs(root: Path, task: str) -> tuple[list[Path], set[int]]:
    """Folders to search for a task's videos, in order, and the indices of those holding pre-cut segments."""
    dirs: list[Path] = []
    published = MVBENCH_VIDEO_DIRS.get(task)
    if published:  # as published (video/...), the clips of video/data0613.zip, and unzipped at the root
        dirs += [root / "video" / published, root / "video" / "data0613" / published, root / "data0613" / published,
                 root / published]  # fmt: skip
    segments = set()
    lmms = MVBENCH_LMMS_EVAL_DIRS.get(task)
    if lmms:
        dirs += [root / lmms, root / "video" / lmms]
        if lmms.endswith("_segment"):
            segments = {len(dirs) - 2, len(dirs) - 1}
    dirs += [root / "video" / task, root / "video"]
    return dirs, segments


def _folder_fps(path: str) -> float:
    m = re.search(r"fps(\d+(?:\.\d+)?)", path)
    return float(m.group(1)) if m else MVBENCH_FRAME_FPS


def _mvbench(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []
    for path in _annotation_files(root, ("json/*.json",), cfg.annotations, cfg.name):
        task = path.stem
        dirs, segments = _mvbench_dirs(root, task)

        def make(row: dict, i: int, where: str, task=task, dirs=dirs, segments=segments) -> Item:
            name = _text(_get(row, "video", where=where), "video", where)
            options = _options(_get(row, "candidates", where=where), "candidates", where)
            video, found_in = _find_video(root, dirs, name, cfg, where, allow_dirs=True)
            bounds = _bounds(row, where)
            if not cfg.apply_bounds or found_in in segments:
                bounds = None  # off by config, or a clip already cut to its bounds
            return _multiple_choice(
                _text(_get(row, "question", where=where), "question", where), options, _get(row, "answer", where=where),
                sample_id=f"{task}/{i}", video=video, task=task, bounds=bounds,
                frame_fps=_folder_fps(video) if os.path.isdir(video) else None,
            )  # fmt: skip

        items.extend(_rows(path, make, lambda row, i, task=task: (f"{task}/{i}", task)))
    return items


def _mlvu(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []
    patterns = ("json/*.json", "dev.json", "dev.jsonl", "*.parquet", "**/*.parquet")
    for path in _annotation_files(root, patterns, cfg.annotations, cfg.name):

        def make(row: dict, i: int, where: str, path=path) -> Item | None:
            raw = _get(row, "candidates", "options", where=where, default=None)
            if raw is None:
                return None  # open-ended MLVU tasks (sub-scene captioning, summary) have no options
            options = _options(raw, "candidates", where, strip_letters=True)
            task = _text(_get(row, "task_type", "question_type", where=where, default=path.stem), "task_type", where)
            name = _text(_get(row, "video_name", "video", where=where), "video", where)
            folders = [path.stem] if path.parent.name == "json" else []
            dirs = [root / "video" / f for f in folders + [task]] + [root / "video"]
            video, _ = _find_video(root, dirs, name, cfg, where)
            return _multiple_choice(
                _text(_get(row, "question", where=where), "question", where), options, _get(row, "answer", where=where),
                sample_id=_id_or(row, ("question_id",), f"{path.stem}/{i}"), video=video, task=task,
            )  # fmt: skip

        def fallback(row, i, path=path):
            task = _id_or(row, ("task_type", "question_type"), path.stem)
            return _id_or(row, ("question_id",), f"{path.stem}/{i}"), task

        items.extend(_rows(path, make, fallback))
    return items


def _longvideobench(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []
    # The hub ships validation-*.parquet and test-*.parquet (no answers); lvb_test_wo_gt.json likewise.
    patterns = ("lvb_val.json", "validation-*.parquet", "**/validation-*.parquet", "*.json", "*.jsonl")
    for path in _annotation_files(root, patterns, cfg.annotations, cfg.name, exclude=r"(^|[_-])test"):

        def make(row: dict, i: int, where: str, path=path) -> Item:
            if "candidates" in row:
                options = _options(_get(row, "candidates", where=where), "candidates", where)
            else:
                options = tuple(str(row[f"option{k}"]) for k in range(len(LETTERS))
                                if row.get(f"option{k}") not in (None, "", "N/A"))  # fmt: skip
            if not options:
                raise AnnotationError(f"{where}: no options (expected 'candidates' or 'option0'..'option4')")
            name = _text(_get(row, "video_path", where=where), "video_path", where)
            video, _ = _find_video(root, [root / "videos", root], name, cfg, where)
            correct = _get(row, "correct_choice", where=where, default=None)
            index, issue = None, None
            if correct is not None:  # an index into the options by definition
                if isinstance(correct, str) and correct.strip().isdigit():
                    correct = int(correct)
                if isinstance(correct, bool) or not isinstance(correct, int):
                    raise AnnotationError(f"{where}: correct_choice must be an option index, got {correct!r}")
                if 0 <= correct < len(options):
                    index = correct
                else:
                    issue = f"correct_choice {correct} is outside 0..{len(options) - 1}"
            return Item(
                sample_id=_id_or(row, ("id",), f"{path.stem}/{i}"), video=video,
                question=_text(_get(row, "question", where=where), "question", where), options=options,
                answer_index=index, answer_issue=issue, answer_text=None if index is None else options[index],
                task=_get(row, "question_category", where=where, default=None),
            )  # fmt: skip

        items.extend(_rows(path, make, lambda row, i, path=path: (_id_or(row, ("id",), f"{path.stem}/{i}"), None)))
    return items


def _videomme(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []
    patterns = ("videomme/test-*.parquet", "videomme/*.json", "videomme/*.jsonl", "*.json", "*.jsonl", "*.parquet")
    for path in _annotation_files(root, patterns, cfg.annotations, cfg.name):

        def make(row: dict, i: int, where: str) -> Item:
            options = _options(_get(row, "options", where=where), "options", where, strip_letters=True)
            video_id = _text(_get(row, "videoID", where=where), "videoID", where)
            video, _ = _find_video(root, [root / "data", root / "videos"], video_id, cfg, where)
            return _multiple_choice(
                _text(_get(row, "question", where=where), "question", where), options, _get(row, "answer", where=where),
                sample_id=_id_or(row, ("question_id",), f"{video_id}/{i}"), video=video,
                task=_get(row, "task_type", where=where, default=None),
            )  # fmt: skip

        items.extend(_rows(path, make, lambda row, i, path=path: (_id_or(row, ("question_id",), f"{path.stem}/{i}"),
                                                                   _id_or(row, ("task_type",), None))))  # fmt: skip
    return items


READERS: dict[str, Callable[[BenchmarkConfig, Path], list[Item]]] = {
    "synthetic": _synthetic,
    "videodetailcaption": _videodetailcaption,
    "mvbench": _mvbench,
    "mlvu": _mlvu,
    "longvideobench": _longvideobench,
    "videomme": _videomme,
}


# --------------------------------------------------------------------------- prompts and samples


def multiple_choice_prompt(question: str, options: tuple[str, ...]) -> str:
    """The question, its options lettered A., B., ... one per line, and the answer-with-a-letter instruction."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)] + [MC_INSTRUCTION]
    return "\n".join(lines)


def caption_prompt(cfg: BenchmarkConfig) -> str:
    """The configured caption prompt, else the synthetic set's own one, else the reference's."""
    if cfg.caption_prompt:
        return cfg.caption_prompt
    if cfg.name == "synthetic":
        from specvlm.zoo.synthetic import CAPTION_PROMPT

        return CAPTION_PROMPT
    return REFERENCE_CAPTION_PROMPT


def _samples(cfg: BenchmarkConfig, items: list[Item], mode: str) -> list[Sample]:
    out: list[Sample] = []
    if mode == "caption":
        seen: set[str] = set()
        prompt = caption_prompt(cfg)
        for item in items:
            if item.error:
                out.append(Sample(cfg.label, mode, item.sample_id, "", None, task=item.task, error=item.error))
                continue
            if item.video in seen:
                continue
            seen.add(item.video)
            sid = os.path.splitext(os.path.basename(item.video))[0] if cfg.name != "synthetic" else item.sample_id
            if cfg.name == "mvbench" and item.task:
                sid = f"{item.task}/{sid}"
            # the whole video (not one question's bounds): one caption per distinct video
            out.append(Sample(cfg.label, mode, sid, item.video, prompt, task=item.task, frame_fps=item.frame_fps,
                              reference=item.reference if cfg.name in ("synthetic", "videodetailcaption") else None))
        return out
    for item in items:
        if item.error:
            out.append(Sample(cfg.label, mode, item.sample_id, "", None, task=item.task, error=item.error))
            continue
        if cfg.name == "synthetic" and not item.options:
            continue  # the caption row of a synthetic video has no benchmark question
        if item.options:
            prompt = item.prompt or multiple_choice_prompt(item.question, item.options)
            answer = None if item.answer_index is None else LETTERS[item.answer_index]
        else:
            prompt, answer = item.question, None
        out.append(Sample(cfg.label, mode, item.sample_id, item.video, prompt, item.options, answer, item.reference,
                          item.task, answer_text=item.answer_text, answer_issue=item.answer_issue, bounds=item.bounds,
                          frame_fps=item.frame_fps))  # fmt: skip
    return out


def _unique_ids(samples: list[Sample]) -> list[Sample]:
    counts: dict[str, int] = {}
    out = []
    for s in samples:
        n = counts.get(s.sample_id, 0)
        counts[s.sample_id] = n + 1
        out.append(s if n == 0 else Sample(**{**s.__dict__, "sample_id": f"{s.sample_id}#{n}"}))
    return out


def load_benchmark(cfg: BenchmarkConfig, root: Path, limit: int | None = None) -> list[Sample]:
    """All samples of one benchmark entry, per prompt mode in config order, each mode cut to ``limit``."""
    items = READERS[cfg.name](cfg, root)
    if cfg.tasks is not None:
        items = [i for i in items if i.task in cfg.tasks or (i.sample_id.split("/")[0] in cfg.tasks)]
    caps = [n for n in (limit, cfg.limit) if n is not None]
    samples: list[Sample] = []
    for mode in cfg.prompt_modes:
        mode_samples = _unique_ids(_samples(cfg, items, mode))
        samples.extend(mode_samples[: min(caps)] if caps else mode_samples)
    if not samples:
        raise ValueError(f"{cfg.label}: no samples in {str(root)!r} (tasks={cfg.tasks}, prompt_modes={cfg.prompt_modes})")
    errors = sum(1 for s in samples if s.error)
    logger.info("%s: %d samples from %s (%d malformed rows)", cfg.label, len(samples), root, errors)
    return samples


# --------------------------------------------------------------------------- clips (decoded at run time)


def _window(total: int, fps: float, bounds: tuple[float, float], path: str) -> tuple[int, int]:
    """First and last source frame (inclusive) within ``bounds`` seconds, as VideoChat2 computes them:
    ``round(start * fps)`` .. ``round(end * fps)``, clipped to the video."""
    from specvlm.video import VideoDecodeError

    first = max(0, round(bounds[0] * fps))
    last = min(round(bounds[1] * fps), total - 1)
    if last < first:
        raise VideoDecodeError(path, f"start/end {bounds[0]:g}-{bounds[1]:g} s lie outside the video "
                                     f"({total} frames at {fps:g} fps = {total / fps:.2f} s)")  # fmt: skip
    return first, last


def _pick(total: int, fps: float, bounds, path: str, sampling: dict) -> list[int]:
    """Source frame indices: ``sampling`` (num_frames | fps [+ max_frames]) over the frames within bounds."""
    from specvlm.video import sample_indices

    first, last = (0, total - 1) if bounds is None else _window(total, fps, bounds, path)
    return [first + i for i in sample_indices(last - first + 1, fps, **sampling)]


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _frame_folder(path: str, fps: float, bounds, sampling: dict):
    """A folder of frame images (``00001.jpg`` ...) as a video at ``fps``, sampled like a video file."""
    import numpy as np
    from PIL import Image

    from specvlm.images import pil_to_rgb
    from specvlm.video import Video, VideoDecodeError

    files = sorted((f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS)), key=_natural)
    if not files:
        raise VideoDecodeError(path, f"folder holds no frame images ({', '.join(IMAGE_EXTENSIONS)})")
    indices = _pick(len(files), fps, bounds, path, sampling)
    frames = []
    for i in indices:
        frame_path = os.path.join(path, files[i])
        try:
            with Image.open(frame_path) as im:
                frames.append(pil_to_rgb(im, f"frame image {frame_path!r}"))  # 16-bit scaled, never saturated
        except (OSError, ValueError) as err:
            raise VideoDecodeError(frame_path, f"cannot read frame image: {err}") from err
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoDecodeError(path, f"frame images differ in size: {sorted(shapes)}")
    return Video(frames=np.stack(frames), fps=fps, total_frames=len(files), indices=indices, backend="frames", path=path)


def _bounded_file(path: str, bounds: tuple[float, float], sampling: dict):
    """Frames of a video file within ``bounds`` seconds (decord, else PyAV decoding from the start)."""
    import numpy as np

    from specvlm.video import Video, VideoDecodeError, load_video

    load_video(path, num_frames=1)  # the same existence and decodability checks (and errors) as unbounded clips
    reason = None
    try:
        import decord

        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        total, fps = len(vr), float(vr.get_avg_fps())
        indices = _pick(total, fps, bounds, path, sampling)
        frames = vr.get_batch(indices).asnumpy()
        return Video(frames=np.ascontiguousarray(frames), fps=fps, total_frames=total, indices=indices,
                     backend="decord", path=path)  # fmt: skip
    except VideoDecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - not installed or cannot read this file: PyAV below decides
        reason = f"{type(err).__name__}: {err}"
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            total = int(stream.frames or 0)
            if total <= 0:  # the container stores no frame count (mkv, webm): count by decoding
                total = sum(1 for _ in container.decode(stream))
        if total <= 0 or fps <= 0:
            raise VideoDecodeError(path, f"no frame count or frame rate to apply start/end to (decord: {reason})")
        indices = _pick(total, fps, bounds, path, sampling)
        wanted, kept = set(indices), {}
        with av.open(path) as container:
            for n, frame in enumerate(container.decode(container.streams.video[0])):
                if n in wanted:
                    kept[n] = frame.to_ndarray(format="rgb24")
                if n >= indices[-1]:
                    break
    except VideoDecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure is this sample's error row
        raise VideoDecodeError(path, f"cannot be decoded by decord or PyAV (decord: {reason}; PyAV: {err})") from err
    if len(kept) < len(indices):
        raise VideoDecodeError(path, f"the stream ends after {len(kept)} of the frames within start/end")
    return Video(frames=np.stack([kept[i] for i in indices]), fps=fps, total_frames=total, indices=indices,
                 backend="pyav", path=path)  # fmt: skip


def load_clip(sample: Sample, *, num_frames: int | None = None, fps: float | None = None,
              max_frames: int | None = None):  # fmt: skip
    """The sample's frames as a ``specvlm.Video``: ``num_frames`` uniform or ``fps`` (capped by
    ``max_frames``) over the video file, the frame folder (at ``sample.frame_fps``), or only the frames
    within ``sample.bounds`` seconds. Raises :class:`AnnotationError` for a malformed row and
    ``VideoDecodeError`` for a video that cannot be read (each becomes error rows)."""
    from specvlm.video import load_video

    if sample.error:
        raise AnnotationError(sample.error)
    sampling = {"num_frames": num_frames, "fps": fps, "max_frames": max_frames}
    if os.path.isdir(sample.video):
        return _frame_folder(sample.video, sample.frame_fps or MVBENCH_FRAME_FPS, sample.bounds, sampling)
    if sample.bounds is not None:
        return _bounded_file(sample.video, sample.bounds, sampling)
    return load_video(sample.video, **sampling)


# --------------------------------------------------------------------------- roots


def synthetic_root(cfg: BenchmarkConfig, output: Path) -> Path:
    """The configured root, or ``<output>/../.data/synthetic-n<N>-seed<S>-<T>f<H>x<W>``."""
    if cfg.root:
        return Path(os.path.expandvars(os.path.expanduser(cfg.root)))
    s = cfg.synthetic
    return output.absolute().parent / ".data" / f"synthetic-n{s.num_samples}-seed{s.seed}-{s.num_frames}f{s.height}x{s.width}"


def ensure_synthetic(cfg: BenchmarkConfig, root: Path) -> Path:
    """Generate the synthetic set into ``root`` if it does not exist (atomically: safe with many ranks)."""
    if (root / "annotations.jsonl").is_file():
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(
            f"synthetic: {str(root)!r} exists but has no annotations.jsonl; remove it or point benchmarks[].root "
            "elsewhere (the harness generates the set only into a missing or empty directory)"
        )
    from specvlm.zoo.synthetic import write_dataset

    s = cfg.synthetic
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    logger.info("generating the synthetic benchmark (%d samples, seed %d) into %s", s.num_samples, s.seed, root)
    write_dataset(tmp, s.num_samples, seed=s.seed, num_frames=s.num_frames, height=s.height, width=s.width)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # os.rename replaces only a missing directory portably
        os.rename(tmp, root)
    except OSError:
        if not (root / "annotations.jsonl").is_file():
            raise
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # another rank finished first; its copy is identical
    return root


def benchmark_root(cfg: BenchmarkConfig, output: Path) -> Path:
    """Where the benchmark's files are (generating the synthetic set if needed)."""
    if cfg.name == "synthetic":
        return ensure_synthetic(cfg, synthetic_root(cfg, output))
    return Path(os.path.expandvars(os.path.expanduser(cfg.root)))


def load_all(benchmarks, output: Path, limit: int | None = None) -> list[Sample]:
    """Every sample of every configured benchmark, in config order (deterministic)."""
    samples: list[Sample] = []
    for cfg in benchmarks:
        samples.extend(load_benchmark(cfg, benchmark_root(cfg, output), limit))
    return samples
