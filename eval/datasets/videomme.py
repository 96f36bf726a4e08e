"""Video-MME: ``videomme/test-*.parquet`` | ``*.json[l]`` rows, options prefixed with their letter;
videos in ``data/<videoID>.mp4``."""

from __future__ import annotations

from pathlib import Path

from specvlm_eval.config import BenchmarkConfig
from specvlm_eval.datasets.annotations import Item, _annotation_files, _find_video, _get, _id_or, _multiple_choice
from specvlm_eval.datasets.annotations import _options, _rows, _text


def read(cfg: BenchmarkConfig, root: Path) -> list[Item]:
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
