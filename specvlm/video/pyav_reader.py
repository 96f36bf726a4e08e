"""Decoding a video file with PyAV: a probe for the frame count and rate, then one sequential pass
(``backend="pyav"``).

PyAV decodes from the start (no seeking) and stops after the last wanted frame. A container that stores no
frame count is counted by decoding; a stream that ends cleanly before its declared count is re-sampled from
the frames that decode; a stream that breaks is an error, not a shorter video.

What this module deliberately does not do: seek, sample by timestamps (pts), or handle rotation/display
matrices and audio.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

from specvlm.video.clip import Video
from specvlm.video.errors import _BackendFailure, _short
from specvlm.video.sampling import _pick

logger = logging.getLogger(__name__)


def _load_av():
    import av

    return av


def _stream_fps(stream) -> float | None:
    for attr in ("average_rate", "base_rate", "guessed_rate"):
        rate = getattr(stream, attr, None)
        if rate:
            value = float(rate)
            if math.isfinite(value) and value > 0:
                return value
    return None


def _pyav_errors(av) -> tuple:
    return (av.FFmpegError, OSError, EOFError, ValueError, IndexError, RuntimeError)


def _pyav_probe(av, path: str) -> tuple[int, float | None]:
    """(declared frame count or 0, fps or None); raises _BackendFailure."""
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise _BackendFailure("no video stream")
            stream = container.streams.video[0]
            return int(stream.frames or 0), _stream_fps(stream)
    except _BackendFailure:
        raise
    except _pyav_errors(av) as exc:
        raise _BackendFailure(_short(exc)) from exc


def _pyav_scan(av, path: str, wanted: Sequence[int] | None) -> tuple[dict[int, np.ndarray], int]:
    """Decode sequentially from the start; keep frames whose index is in ``wanted``.

    Stops after the last wanted frame (or at the end when ``wanted`` is None,
    which just counts).  Returns (kept frames, frames decoded).  A decode error
    raises _BackendFailure: a broken stream is not silently shortened.
    """
    want = set(wanted) if wanted is not None else set()
    last = max(want) if want else None
    kept: dict[int, np.ndarray] = {}
    n = 0
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if n in want:
                    kept[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if last is not None and n > last:
                    break
    except _pyav_errors(av) as exc:
        raise _BackendFailure(f"decoding failed after {n} frames: {_short(exc)}") from exc
    return kept, n


def _decode_pyav(path: str, sampling: dict, bounds: tuple | None = None) -> Video:
    av = _load_av()
    declared, fps = _pyav_probe(av, path)
    total = declared
    if total <= 0:  # container does not store a frame count (e.g. mkv/webm): count by decoding
        _, total = _pyav_scan(av, path, None)
    if total <= 0:
        raise _BackendFailure("no decodable frames")
    if fps is None:
        raise _BackendFailure("no frame rate found in the video stream (average_rate/base_rate/guessed_rate)")

    indices = _pick(total, fps, sampling, bounds, path)
    kept, decoded = _pyav_scan(av, path, indices)
    if len(kept) < len(indices):
        # The stream ended cleanly before the declared frame count: trust the decoder.
        if decoded == 0:
            raise _BackendFailure("no decodable frames")
        logger.warning(
            "%s: stream declares %d frames but only %d decode; sampling from %d frames",
            path, total, decoded, decoded,
        )
        total = decoded
        indices = _pick(total, fps, sampling, bounds, path)
        kept, _ = _pyav_scan(av, path, indices)
        if len(kept) < len(indices):
            raise _BackendFailure("frame count changed between decoding passes")

    shapes = {kept[i].shape for i in indices}
    if len(shapes) != 1:
        raise _BackendFailure(f"frame size changes within the stream: {sorted(shapes)}")
    frames = np.ascontiguousarray(np.stack([kept[i] for i in indices]))
    return Video(frames=frames, fps=fps, total_frames=total, indices=indices, backend="pyav", path=path)


def _pyav_reason(reason: str) -> str:
    if reason == "no decodable frames":
        return reason
    return f"cannot be decoded by PyAV: {reason}"
