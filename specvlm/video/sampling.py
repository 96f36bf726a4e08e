"""Which source frames to keep: uniform or by fps, capped, within start/end seconds; the sampling arguments' checks.

:func:`sample_indices` chooses the source frame indices: ``num_frames`` frames spread uniformly over the whole
clip, or ``fps`` frames per second of video, optionally capped by ``max_frames``. ``_pick`` does the same
within ``start`` / ``end`` seconds (``round(seconds * fps)``, as VideoChat2 cuts MVBench's clips), returning
indices of the whole source. The ``_check_*`` functions validate the sampling arguments (a bad one is a plain
``ValueError``), for every module of :mod:`specvlm.video` that takes them.

What this module deliberately does not do: decode anything, or sample by timestamps (pts): frame ``i`` is at
``i / fps``, i.e. a constant frame rate is assumed; frames are never repeated to reach ``num_frames``.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from typing import Any

import numpy as np

from specvlm.video.errors import VideoDecodeError

logger = logging.getLogger(__name__)

#: Frames sampled by ``load_video`` when neither ``num_frames`` nor ``fps`` is given.
DEFAULT_NUM_FRAMES = 8


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating, Fraction)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _check_sampling_args(num_frames: Any, fps: Any, max_frames: Any) -> None:
    if (num_frames is None) == (fps is None):
        raise ValueError(
            f"give exactly one of num_frames or fps, got num_frames={num_frames!r} and fps={fps!r}"
        )
    if num_frames is not None:
        _check_int("num_frames", num_frames, 1)
    if fps is not None:
        _check_positive("fps", fps)
    if max_frames is not None:
        _check_int("max_frames", max_frames, 1)


def _uniform(total_frames: int, n: int) -> list[int]:
    """``n <= total_frames`` indices, the centre of each of ``n`` equal segments."""
    return [int((i + 0.5) * total_frames / n) for i in range(n)]


def sample_indices(
    total_frames: int,
    source_fps: float,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> list[int]:
    """Source frame indices to keep, ascending and without duplicates.

    Exactly one of:

    * ``num_frames``: uniform over the whole clip, frame ``i`` is
      ``floor((i + 0.5) * total_frames / num_frames)`` (the centre of the
      ``i``-th of ``num_frames`` equal segments).  If ``num_frames >
      total_frames`` all ``total_frames`` frames are returned (with a warning):
      frames are never repeated.
    * ``fps``: one frame every ``source_fps / fps`` source frames starting at
      frame 0 (so at least one frame).  Asking for more than ``source_fps``
      returns every frame (with a warning).

    ``max_frames`` caps the result in either mode; an ``fps`` sampling that
    exceeds it is replaced by ``max_frames`` frames uniform over the whole clip.
    """
    _check_int("total_frames", total_frames, 1)
    source_fps = _check_positive("source_fps", source_fps)
    _check_sampling_args(num_frames, fps, max_frames)
    total_frames = int(total_frames)

    if num_frames is not None:
        n = int(num_frames)
        if max_frames is not None and n > max_frames:
            logger.debug("num_frames=%d capped by max_frames=%d", n, max_frames)
            n = int(max_frames)
        if n > total_frames:
            logger.warning(
                "asked for %d frames but the video has only %d; returning all %d frames",
                n, total_frames, total_frames,
            )
            return list(range(total_frames))
        return _uniform(total_frames, n)

    step = source_fps / float(fps)
    if step < 1.0:
        logger.warning(
            "sampling fps %.4g is above the source fps %.4g; returning every frame", fps, source_fps
        )
        step = 1.0
    # A tiny epsilon keeps e.g. 3 * (30 / 10) == 9 from landing on 8.999...
    count = int(math.floor((total_frames - 1) / step + 1e-9)) + 1
    indices = sorted({min(total_frames - 1, int(math.floor(k * step + 1e-9))) for k in range(count)})
    if max_frames is not None and len(indices) > max_frames:
        logger.debug(
            "fps sampling gave %d frames, above max_frames=%d; re-sampling uniformly",
            len(indices), max_frames,
        )
        return _uniform(total_frames, int(max_frames))
    return indices


def _check_bounds(start: Any, end: Any) -> tuple[float | None, float | None] | None:
    """``(start, end)`` seconds as floats (either may be None), or None when neither is given."""
    if start is None and end is None:
        return None
    for name, value in (("start", start), ("end", end)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating, Fraction))
            or not math.isfinite(float(value))
            or float(value) < 0
        ):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    start = None if start is None else float(start)
    end = None if end is None else float(end)
    if start is not None and end is not None and not start < end:
        raise ValueError(f"start must be before end, got start={start:g}, end={end:g}")
    return start, end


def _pick(total: int, fps: float, sampling: dict, bounds: tuple | None, path: str) -> list[int]:
    """Source frame indices: ``sampling`` over the whole clip, or over the frames within ``bounds``
    seconds, ``round(start * fps)`` .. ``round(end * fps)`` clipped to the clip (as VideoChat2 computes
    them); an empty window is a :class:`VideoDecodeError`."""
    if bounds is None:
        return sample_indices(total, fps, **sampling)
    start, end = bounds
    first = 0 if start is None else max(0, round(start * fps))
    last = total - 1 if end is None else min(round(end * fps), total - 1)
    if last < first:
        span = f"{start or 0:g}-{'end' if end is None else format(end, 'g')}"
        raise VideoDecodeError(path, f"start/end {span} s lie outside the video "
                                     f"({total} frames at {fps:g} fps = {total / fps:.2f} s)")  # fmt: skip
    return [first + i for i in sample_indices(last - first + 1, fps, **sampling)]
