"""Benchmarks read from local directories laid out like their published datasets.

Each reader turns a dataset directory into :class:`Sample` s (one video + one prompt). Layouts
(``<root>`` is the benchmark's configured ``root``; ``annotations`` in the config overrides the
annotation file pattern):

================== ===================================================== ==========================================
benchmark          annotations (first pattern that matches)              videos
================== ===================================================== ==========================================
synthetic          ``annotations.jsonl`` (``specvlm.zoo.synthetic``)          ``videos/<sample_id>.mp4``
videodetailcaption ``test.jsonl`` | ``test.json`` | ``**/test-*.parquet`` ``Test_Videos/<video_name>.mp4``
mvbench            ``json/*.json`` (one file per task)                   ``video/<source folder of the task>/<video>``
mlvu               ``json/*.json`` | ``dev.json[l]`` | ``*.parquet``      ``video/<json stem>/<video>``
longvideobench     ``lvb_val.json`` | ``*.json[l]`` | ``*.parquet``       ``videos/<video_path>``
videomme           ``videomme/test-*.parquet`` | ``*.json[l]``            ``data/<videoID>.mp4``
================== ===================================================== ==========================================

(docs/evaluation.md spells out each layout and the fallbacks tried for videos.)
A missing video does not stop the listing: the sample keeps its expected path and the run records an
error row for it. Parquet files need ``pyarrow``; JSON and JSONL need nothing.

Prompt modes: ``benchmark`` asks the dataset's own question (multiple choice: the options lettered
A, B, C, ... and an instruction to answer with the letter; the gold answer becomes a letter) and
``caption`` asks a fixed detailed-description prompt once per distinct video (speed studies).

What this module deliberately does not do: download anything, decode videos (that happens per
sample at run time so a bad file costs one error row), or apply MVBench's start/end clip bounds
(frames are sampled over the whole file).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from eval.config import REFERENCE_CAPTION_PROMPT, BenchmarkConfig

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."

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


@dataclass(frozen=True)
class Sample:
    """One (video, prompt) pair. ``answer`` is the gold letter for multiple choice, else ``None``."""

    benchmark: str  # the benchmark's label (result group)
    prompt_mode: str  # "benchmark" | "caption"
    sample_id: str  # unique within (benchmark, prompt_mode)
    video: str  # absolute path (may be missing: the run records an error row)
    prompt: str
    options: tuple[str, ...] = ()
    answer: str | None = None
    reference: str | None = None  # reference text of open-ended answers
    task: str | None = None

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


# --------------------------------------------------------------------------- annotation files


def read_records(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``.json`` (a list, or a mapping holding one list), ``.jsonl`` or ``.parquet`` file."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as err:
                            raise ValueError(f"{path}:{lineno}: not valid JSON: {err}") from err
            return rows
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise ValueError(f"{path}: expected a list of rows or a mapping holding exactly one list")
                data = lists[0]
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise ValueError(f"{path}: expected a list of JSON objects")
            return data
        if suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError as err:
                raise ValueError(f"reading {path} needs pyarrow (pip install pyarrow), or export it to JSON/JSONL") from err
            return pq.read_table(path).to_pylist()
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    raise ValueError(f"{path}: unsupported annotation format {suffix!r}; use .json, .jsonl or .parquet")


def _annotation_files(root: Path, patterns: tuple[str, ...], override: str | None, benchmark: str) -> list[Path]:
    if not root.is_dir():
        raise ValueError(f"{benchmark}: dataset directory {str(root)!r} does not exist")
    tried = (override,) if override else patterns
    for pattern in tried:
        found = sorted(Path(p) for p in glob.glob(str(root / pattern), recursive=True) if os.path.isfile(p))
        if found:
            return found
    raise ValueError(f"{benchmark}: no annotation file in {str(root)!r} matches {', '.join(tried)}")


def _first_existing(candidates: list[Path]) -> str:
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    return str(candidates[0].absolute())


def _get(row: dict, *names: str, where: str, default: Any = KeyError) -> Any:
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    if default is KeyError:
        raise ValueError(f"{where}: missing field {' or '.join(map(repr, names))}; row has {sorted(row)}")
    return default


def _answer_index(answer: Any, options: tuple[str, ...], where: str) -> int:
    """Index of the gold answer given as option text, letter ("B", "(B)", "B. text") or integer."""
    if isinstance(answer, bool):
        raise ValueError(f"{where}: answer {answer!r} is not an option")
    if isinstance(answer, int):
        if 0 <= answer < len(options):
            return answer
        raise ValueError(f"{where}: answer index {answer} is outside 0..{len(options) - 1}")
    text = str(answer).strip()
    if text in options:
        return options.index(text)
    m = re.fullmatch(r"\(?([A-J])\)?(?:[.:)]\s*.*)?", text, flags=re.S)
    if m and LETTERS.index(m.group(1)) < len(options):
        return LETTERS.index(m.group(1))
    if text.isdigit() and int(text) < len(options):
        return int(text)
    raise ValueError(f"{where}: answer {answer!r} matches none of the options {list(options)}")


def _strip_letter(option: str) -> str:
    """'A. a cat' -> 'a cat' (Video-MME / some MLVU exports prefix options with their letter)."""
    return re.sub(r"^\(?[A-J][.)]\s*", "", str(option).strip())


def _video_file(name: str, ext: str = ".mp4") -> str:
    return name if os.path.splitext(name)[1] else name + ext


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
            ))  # fmt: skip
    return items


def _videodetailcaption(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []
    for path in _annotation_files(root, ("test.jsonl", "test.json", "**/test-*.parquet"), cfg.annotations, cfg.name):
        for i, row in enumerate(read_records(path)):
            where = f"{path} row {i}"
            name = str(_get(row, "video_name", where=where))
            items.append(Item(
                sample_id=name, video=_first_existing([root / "Test_Videos" / _video_file(name)]),
                question=str(_get(row, "question", where=where)), reference=_get(row, "answer", where=where, default=None),
            ))  # fmt: skip
    return items


def _mvbench(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []
    for path in _annotation_files(root, ("json/*.json",), cfg.annotations, cfg.name):
        task = path.stem
        for i, row in enumerate(read_records(path)):
            where = f"{path} row {i}"
            video = str(_get(row, "video", where=where))
            options = tuple(str(c) for c in _get(row, "candidates", where=where))
            folders = [MVBENCH_VIDEO_DIRS[task]] if task in MVBENCH_VIDEO_DIRS else []
            candidates = [root / "video" / f / video for f in folders + [task]] + [root / "video" / video]
            items.append(Item(
                sample_id=f"{task}/{i}", video=_first_existing(candidates), question=str(_get(row, "question", where=where)),
                options=options, answer_index=_answer_index(_get(row, "answer", where=where), options, where), task=task,
            ))  # fmt: skip
    return items


def _mlvu(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []
    patterns = ("json/*.json", "dev.json", "dev.jsonl", "*.parquet", "**/*.parquet")
    for path in _annotation_files(root, patterns, cfg.annotations, cfg.name):
        for i, row in enumerate(read_records(path)):
            where = f"{path} row {i}"
            raw = _get(row, "candidates", "options", where=where, default=None)
            if raw is None:
                continue  # open-ended MLVU tasks (sub-scene captioning, summary) have no options
            options = tuple(_strip_letter(o) for o in raw)
            task = str(_get(row, "task_type", "question_type", where=where, default=path.stem))
            video = _video_file(str(_get(row, "video_name", "video", where=where)))
            folders = [path.stem] if path.parent.name == "json" else []
            candidates = [root / "video" / f / video for f in folders + [task]] + [root / "video" / video]
            qid = _get(row, "question_id", where=where, default=None)
            items.append(Item(
                sample_id=str(qid) if qid is not None else f"{path.stem}/{i}", video=_first_existing(candidates),
                question=str(_get(row, "question", where=where)), options=options,
                answer_index=_answer_index(_get(row, "answer", where=where), options, where), task=task,
            ))  # fmt: skip
    return items


def _longvideobench(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []
    patterns = ("lvb_val.json", "*.json", "*.jsonl", "*.parquet", "**/*.parquet")
    for path in _annotation_files(root, patterns, cfg.annotations, cfg.name):
        for i, row in enumerate(read_records(path)):
            where = f"{path} row {i}"
            if "candidates" in row:
                options = tuple(str(c) for c in row["candidates"])
            else:
                options = tuple(str(row[f"option{k}"]) for k in range(10)
                                if row.get(f"option{k}") not in (None, "", "N/A"))  # fmt: skip
            if not options:
                raise ValueError(f"{where}: no options (expected 'candidates' or 'option0'..'option4')")
            video_path = str(_get(row, "video_path", where=where))
            correct = _get(row, "correct_choice", where=where, default=None)
            sid = _get(row, "id", where=where, default=None)
            items.append(Item(
                sample_id=str(sid) if sid is not None else f"{path.stem}/{i}",
                video=_first_existing([root / "videos" / video_path, root / video_path]),
                question=str(_get(row, "question", where=where)), options=options,
                answer_index=None if correct is None else _answer_index(correct, options, where),
                task=_get(row, "question_category", where=where, default=None),
            ))  # fmt: skip
    return items


def _videomme(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    items = []
    patterns = ("videomme/test-*.parquet", "videomme/*.json", "videomme/*.jsonl", "*.json", "*.jsonl", "*.parquet")
    for path in _annotation_files(root, patterns, cfg.annotations, cfg.name):
        for i, row in enumerate(read_records(path)):
            where = f"{path} row {i}"
            options = tuple(_strip_letter(o) for o in _get(row, "options", where=where))
            video_id = str(_get(row, "videoID", where=where))
            qid = _get(row, "question_id", where=where, default=None)
            items.append(Item(
                sample_id=str(qid) if qid is not None else f"{video_id}/{i}",
                video=_first_existing([root / "data" / _video_file(video_id), root / "videos" / _video_file(video_id)]),
                question=str(_get(row, "question", where=where)), options=options,
                answer_index=_answer_index(_get(row, "answer", where=where), options, where),
                task=_get(row, "task_type", where=where, default=None),
            ))  # fmt: skip
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
            if item.video in seen:
                continue
            seen.add(item.video)
            sid = os.path.splitext(os.path.basename(item.video))[0] if cfg.name != "synthetic" else item.sample_id
            if cfg.name == "mvbench" and item.task:
                sid = f"{item.task}/{sid}"
            out.append(Sample(cfg.label, mode, sid, item.video, prompt, task=item.task,
                              reference=item.reference if cfg.name in ("synthetic", "videodetailcaption") else None))
        return out
    for item in items:
        if cfg.name == "synthetic" and not item.options:
            continue  # the caption row of a synthetic video has no benchmark question
        if item.options:
            prompt = item.prompt or multiple_choice_prompt(item.question, item.options)
            answer = None if item.answer_index is None else LETTERS[item.answer_index]
        else:
            prompt, answer = item.question, None
        out.append(Sample(cfg.label, mode, item.sample_id, item.video, prompt, item.options, answer,
                          item.reference, item.task))
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
    logger.info("%s: %d samples from %s", cfg.label, len(samples), root)
    return samples


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
