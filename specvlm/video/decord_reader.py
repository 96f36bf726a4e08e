"""Decoding a video file with decord: the frames it samples, read in one batch (``backend="decord"``).

What this module deliberately does not do: fall back to PyAV (:mod:`specvlm.video.load` does), check the
file before opening it, or change decord's global state (``decord.bridge.set_bridge``, log levels).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from specvlm.video.clip import Video
from specvlm.video.errors import VideoDecodeError, _BackendFailure, _short
from specvlm.video.sampling import _pick


def _load_decord():
    """Import decord (separate function so tests can simulate its absence).

    Any import-time failure (missing package, missing shared library) is
    reported as ImportError.
    """
    try:
        import decord
    except ImportError:
        raise
    except Exception as exc:
        raise ImportError(f"importing decord failed: {_short(exc)}") from exc
    return decord


def _as_uint8_rgb(frames: Any, expected: int) -> np.ndarray:
    if hasattr(frames, "asnumpy"):  # decord NDArray (native bridge)
        frames = frames.asnumpy()
    elif hasattr(frames, "numpy"):  # torch tensor if someone set decord's bridge to torch
        frames = frames.cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] != expected or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise _BackendFailure(
            f"decoder returned frames of shape {frames.shape} and dtype {frames.dtype}, "
            f"expected ({expected}, H, W, 3) uint8"
        )
    return np.ascontiguousarray(frames)


def _decode_decord(path: str, sampling: dict, bounds: tuple | None = None) -> Video:
    decord = _load_decord()
    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        total = int(len(vr))
        fps = float(vr.get_avg_fps())
        if total <= 0:
            raise _BackendFailure("no decodable frames")
        if not (math.isfinite(fps) and fps > 0):
            raise _BackendFailure(f"no usable frame rate (decord reports {fps})")
        indices = _pick(total, fps, sampling, bounds, path)
        frames = _as_uint8_rgb(vr.get_batch(indices), len(indices))
    except (_BackendFailure, VideoDecodeError):  # VideoDecodeError: start/end outside the video
        raise
    except Exception as exc:  # decord raises DECORDError, RuntimeError, TVM errors, ...
        raise _BackendFailure(_short(exc)) from exc
    finally:
        vr = None  # release the file handle promptly
    return Video(frames=frames, fps=fps, total_frames=total, indices=indices, backend="decord", path=path)
