"""MVBench: one ``json/<task>.json`` per task, multiple choice; each task's videos in its published folder
under ``video/`` (or the ``data0613`` clips, or lmms-eval's download), some as folders of frames, some
rows bounded by ``start``/``end`` seconds."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from specvlm_eval.config import BenchmarkConfig
from specvlm_eval.datasets.annotations import AnnotationError, Item, _annotation_files, _find_video, _get
from specvlm_eval.datasets.annotations import _multiple_choice, _options, _rows, _text

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


def read(cfg: BenchmarkConfig, root: Path) -> list[Item]:
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
