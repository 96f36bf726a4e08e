"""A synthetic data set on disk: :func:`write_dataset` writes many samples as mp4 files plus an
``annotations.jsonl``; :func:`read_dataset` reads and validates it."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from specvlm.video import write_video
from specvlm.zoo.synthetic.records import ObjectTrack, Question, Sample
from specvlm.zoo.synthetic.sample import _check_int, generate_sample
from specvlm.zoo.synthetic.world import check_text

logger = logging.getLogger(__name__)


def sample_annotation(sample: Sample, video: str) -> dict[str, Any]:
    """The JSON-serialisable annotation row of ``sample`` whose video is at relative path ``video``."""
    return {
        "sample_id": sample.sample_id,
        "seed": sample.seed,
        "video": video,
        "fps": sample.fps,
        "num_frames": sample.num_frames,
        "height": sample.height,
        "width": sample.width,
        "caption": sample.caption,
        "questions": [q.to_dict() for q in sample.questions],
        "objects": [o.to_dict() for o in sample.objects],
    }


def _dataset_seed(seed: int, index: int) -> int:
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def write_dataset(out_dir: str | os.PathLike, num_samples: int, *, seed: int = 0, **sample_kwargs: Any) -> Path:
    """Write ``num_samples`` samples to ``out_dir/videos/<sample_id>.mp4`` and ``out_dir/annotations.jsonl``.

    Sample ``i`` is ``generate_sample(derived_seed(seed, i), **sample_kwargs)`` with
    ``sample_id = "<i:06d>"``, so the same arguments give identical annotations and
    frames.  Existing files of the same names are overwritten; the annotations
    file is written last (via a temporary file), so a complete
    ``annotations.jsonl`` means all its videos were written.  Returns ``out_dir``.
    """
    num_samples = _check_int("num_samples", num_samples, 1)
    seed = _check_int("seed", seed, 0)
    out = Path(out_dir)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_samples):
        sample = replace(generate_sample(_dataset_seed(seed, i), **sample_kwargs), sample_id=f"{i:06d}")
        rel = f"videos/{sample.sample_id}.mp4"
        write_video(out / rel, sample.frames, fps=sample.fps)
        rows.append(sample_annotation(sample, rel))
        if (i + 1) % 100 == 0 or i + 1 == num_samples:
            logger.info("wrote %d/%d synthetic samples to %s", i + 1, num_samples, out)
    tmp = out / "annotations.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    os.replace(tmp, out / "annotations.jsonl")
    return out


_ROW_TYPES = {
    "sample_id": str, "video": str, "fps": (int, float), "num_frames": int, "height": int, "width": int,
    "caption": str, "questions": list, "objects": list,
}


def _validate_row(row: Any, root: Path) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    for key, typ in _ROW_TYPES.items():
        if key not in row:
            raise ValueError(f"missing key {key!r}")
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, typ):
            raise ValueError(f"{key!r} has type {type(value).__name__}")
    if not row["sample_id"]:
        raise ValueError("empty sample_id")
    if row["fps"] <= 0 or row["num_frames"] < 1 or row["height"] < 2 or row["width"] < 2:
        raise ValueError("fps, num_frames, height and width must be positive")
    video = Path(row["video"])
    if video.is_absolute() or ".." in video.parts:
        raise ValueError(f"video {row['video']!r} must be a relative path inside the dataset")
    if not (root / video).is_file():
        raise ValueError(f"video file {str(root / video)!r} does not exist")
    check_text(row["caption"], "caption")
    for key, kind, cls in (("questions", "question", Question), ("objects", "object", ObjectTrack)):
        if not row[key]:
            raise ValueError(f"no {key}")
        for item in row[key]:
            if not isinstance(item, dict):
                raise ValueError(f"a {kind} is not a JSON object")
            try:
                cls.from_dict(item)
            except (KeyError, TypeError) as exc:
                raise ValueError(f"malformed {kind} {item!r}: {exc!r}") from exc
    return row


def read_dataset(out_dir: str | os.PathLike) -> list[dict]:
    """Read and validate ``out_dir/annotations.jsonl``.

    Returns the rows in file order, each as written by :func:`write_dataset`
    plus ``"video_path"``: the absolute path of its mp4.  Blank lines are
    skipped.  A malformed row (bad JSON, missing or mistyped key, text outside
    :data:`VOCABULARY`, a bad question or object, a missing video file, a
    duplicate sample_id) raises ``ValueError`` naming the file and line.
    """
    root = Path(out_dir)
    path = root / "annotations.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    rows: list[dict] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = _validate_row(json.loads(line), root)
                if row["sample_id"] in seen:
                    raise ValueError(f"duplicate sample_id {row['sample_id']!r}")
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise ValueError(f"{path}:{lineno}: malformed annotation: {exc}") from exc
            seen.add(row["sample_id"])
            row["video_path"] = str((root / row["video"]).resolve())
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no annotation rows")
    return rows
