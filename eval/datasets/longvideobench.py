"""LongVideoBench: ``lvb_val.json`` | ``validation-*.parquet`` | ``*.json`` rows (the answerless test split
left out), options as ``candidates`` or ``option0``..``option4``, the gold answer an option index; videos
in ``videos/<video_path>``."""

from __future__ import annotations

from pathlib import Path

from specvlm_eval.config import BenchmarkConfig
from specvlm_eval.datasets.annotations import LETTERS, AnnotationError, Item, _annotation_files, _find_video, _get
from specvlm_eval.datasets.annotations import _id_or, _options, _rows, _text


def read(cfg: BenchmarkConfig, root: Path) -> list[Item]:
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
