"""``write_video``: frames to an H.264 (or MPEG-4 Part 2) mp4, for tests and synthetic data.

What this module deliberately does not do: write audio, other containers or pixel formats than yuv420p.
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction

import numpy as np

from specvlm.video.pyav_reader import _load_av
from specvlm.video.sampling import _check_positive

logger = logging.getLogger(__name__)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0) -> None:
    """Write ``(T, H, W, 3)`` uint8 RGB frames to an mp4 (yuv420p).

    Uses H.264 (``libx264``, crf 18) when PyAV has it, else MPEG-4 Part 2
    (``mpeg4``, >= 1 Mb/s).  Height and width must be even (yuv420p chroma subsampling).
    ``fps`` is stored as a fraction with denominator <= 1001 (e.g. 30000/1001).
    """
    av = _load_av()
    fps = _check_positive("fps", fps)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames has shape {frames.shape}; expected (T, H, W, 3)")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames has dtype {frames.dtype}; expected uint8")
    t, height, width, _ = frames.shape
    if t == 0:
        raise ValueError("frames has zero frames; need at least 1 to write a video")
    if height == 0 or width == 0 or height % 2 or width % 2:
        raise ValueError(f"frame size {width}x{height} (WxH) must be even and non-zero for yuv420p")
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps {fps} is too small to represent")

    if "libx264" in av.codecs_available:
        codec, options = "libx264", {"crf": "18"}
    else:
        codec, options = "mpeg4", {}
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "mpeg4":  # the default 200 kb/s smears small synthetic frames
            stream.bit_rate = max(1_000_000, 8 * width * height * int(math.ceil(fps)))
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    logger.debug("wrote %d frames (%dx%d, %s fps, %s) to %s", t, width, height, rate, codec, path)
