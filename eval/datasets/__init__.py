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

One module a benchmark (its reader: annotation rows -> items), :mod:`specvlm_eval.datasets.annotations` for what
the readers share (annotation files, fields, options, gold answers, video paths), and
:mod:`specvlm_eval.datasets.samples` for the prompt modes, the listing of every configured benchmark and
:func:`load_clip`, which decodes one sample at run time through ``specvlm.video.load_video``: a video file
(within MVBench's ``start``/``end`` seconds when the row has them) or a folder of frame images (MVBench's
``episodic_reasoning``, 3 fps).

What this package deliberately does not do: download anything, or decode videos while listing samples
(decoding happens per sample at run time, so a bad file costs one error row).
"""

from __future__ import annotations

from specvlm_eval.datasets.annotations import LETTERS, VIDEO_EXTENSIONS, AnnotationError, Item, read_records
from specvlm_eval.datasets.mvbench import MVBENCH_FRAME_FPS, MVBENCH_LMMS_EVAL_DIRS, MVBENCH_VIDEO_DIRS
from specvlm_eval.datasets.samples import (
    MC_INSTRUCTION,
    READERS,
    Sample,
    benchmark_root,
    caption_prompt,
    load_all,
    load_benchmark,
    load_clip,
    multiple_choice_prompt,
)
from specvlm_eval.datasets.synthetic import ensure_synthetic, synthetic_root

# Private names reached through the package: specvlm_eval.lmms reads MVBench's frame folders with _frame_folder and
# _folder_fps, and read_records reads parquet with the package's _read_parquet (replacing that one here
# replaces it for every reader)
from specvlm_eval.datasets.annotations import _read_parquet
from specvlm_eval.datasets.mvbench import _folder_fps
from specvlm_eval.datasets.samples import _frame_folder

__all__ = [
    "LETTERS",
    "MC_INSTRUCTION",
    "MVBENCH_FRAME_FPS",
    "MVBENCH_LMMS_EVAL_DIRS",
    "MVBENCH_VIDEO_DIRS",
    "READERS",
    "VIDEO_EXTENSIONS",
    "AnnotationError",
    "Item",
    "Sample",
    "benchmark_root",
    "caption_prompt",
    "ensure_synthetic",
    "load_all",
    "load_benchmark",
    "load_clip",
    "multiple_choice_prompt",
    "read_records",
    "synthetic_root",
]
