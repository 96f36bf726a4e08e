"""VideoDetailCaption: ``test.jsonl`` | ``test.json`` | ``**/test-*.parquet`` rows of open-ended questions
with a reference answer; videos in ``Test_Videos/<video_name>.mp4``."""

from __future__ import annotations

from pathlib import Path

from specvlm_eval.config import BenchmarkConfig
from specvlm_eval.datasets.annotations import Item, _annotation_files, _find_video, _get, _id_or, _rows, _text


def read(cfg: BenchmarkConfig, root: Path) -> list[Item]:
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
