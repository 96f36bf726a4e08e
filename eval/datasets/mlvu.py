"""MLVU: ``json/*.json`` | ``dev.json[l]`` | ``*.parquet`` rows; the multiple-choice tasks (the open-ended
ones have no options and are passed over); videos in ``video/<json stem or task>/<video>``."""

from __future__ import annotations

from pathlib import Path

from specvlm_eval.config import BenchmarkConfig
from specvlm_eval.datasets.annotations import Item, _annotation_files, _find_video, _get, _id_or, _multiple_choice
from specvlm_eval.datasets.annotations import _options, _rows, _text


def read(cfg: BenchmarkConfig, root: Path) -> list[Item]:
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
