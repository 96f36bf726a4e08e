"""One synthetic sample from a seed: the scene, its frames, its caption and its questions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from specvlm.zoo.synthetic.records import Sample
from specvlm.zoo.synthetic.render import _background, _render
from specvlm.zoo.synthetic.scene import _sample_objects
from specvlm.zoo.synthetic.text import _caption, _questions
from specvlm.zoo.synthetic.world import MAX_OBJECTS, MIN_NUM_FRAMES, MIN_SIDE


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def generate_sample(
    seed: int,
    *,
    num_frames: int = 32,
    height: int = 96,
    width: int = 96,
    fps: float = 8.0,
    min_objects: int = 2,
    max_objects: int = 4,
) -> Sample:
    """Generate one sample deterministically from ``seed`` (a non-negative integer).

    ``height`` and ``width`` must be even and >= 32, ``num_frames >= 8``,
    ``1 <= min_objects <= max_objects <= 4``.  Questions: one colour, shape and
    motion question per object, then (with >= 2 objects) one count question and
    one order question per appearance position.
    """
    seed = _check_int("seed", seed, 0)
    t = _check_int("num_frames", num_frames, MIN_NUM_FRAMES)
    height = _check_int("height", height, MIN_SIDE)
    width = _check_int("width", width, MIN_SIDE)
    if height % 2 or width % 2:
        raise ValueError(f"height and width must be even (mp4/yuv420p), got {width}x{height} (WxH)")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not (
        math.isfinite(fps) and fps > 0
    ):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    lo = _check_int("min_objects", min_objects, 1)
    hi = _check_int("max_objects", max_objects, 1)
    if not lo <= hi <= MAX_OBJECTS:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {lo} and {hi}")

    rng = np.random.default_rng(seed)
    n = int(rng.integers(lo, hi + 1))
    objects = _sample_objects(rng, n, t, height, width)
    frames = _render(_background(rng, height, width), objects, t)
    caption = _caption(rng, objects, t, height, width)
    questions = _questions(rng, objects)
    return Sample(sample_id=f"synth-{seed}", frames=frames, fps=float(fps), objects=objects,
                  caption=caption, questions=questions, seed=seed)
