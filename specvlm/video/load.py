"""``load_video``: check the arguments and the file, then decode with decord, PyAV or both (``"auto"``).

``backend="auto"`` (the default) tries decord and falls back to PyAV when decord is not installed or cannot
read the file; ``"decord"`` / ``"pyav"`` force one. A directory with ``frame_fps`` is read as a frame folder.
Every way a file can fail to decode (missing, a directory, empty, not a video, truncated, corrupt, zero
frames, no frame rate, start/end outside the video) raises :class:`~specvlm.video.VideoDecodeError`.

What this module deliberately does not do: decode frames itself (the readers do) or choose them
(:mod:`specvlm.video.sampling`), or resize, crop or normalise them (the model processor's job).
"""

from __future__ import annotations

import logging
import os

from specvlm.files import check_input_file
from specvlm.video import decord_reader
from specvlm.video.clip import Video
from specvlm.video.errors import VideoDecodeError, _BackendFailure
from specvlm.video.frame_folder import _decode_folder
from specvlm.video.pyav_reader import _decode_pyav, _pyav_reason
from specvlm.video.sampling import DEFAULT_NUM_FRAMES, _check_bounds, _check_positive, _check_sampling_args

logger = logging.getLogger(__name__)

#: Accepted values of ``load_video(backend=...)``.
BACKENDS = ("auto", "decord", "pyav")


def load_video(
    path: str | os.PathLike,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    backend: str = "auto",
    start: float | None = None,
    end: float | None = None,
    frame_fps: float | None = None,
) -> Video:
    """Decode and sample a video file (or a folder of frame images).

    Sampling (see :func:`sample_indices`): give ``num_frames`` (uniform over the
    clip) or ``fps`` (frames per second of video, optionally capped by
    ``max_frames``); with neither, ``num_frames=DEFAULT_NUM_FRAMES`` (8).

    ``start`` / ``end``: sample only the frames between these seconds (either
    may be left out: the clip's start or end), source frames ``round(start *
    fps)`` .. ``round(end * fps)``; the returned ``indices`` and
    ``total_frames`` still count the whole source.  A window that holds no
    frame raises :class:`VideoDecodeError`.

    ``frame_fps``: the frame rate of a folder of frame images; with it, a
    directory ``path`` is read as a video of its :data:`FRAME_IMAGE_EXTENSIONS`
    files in the numeric order of their names (``backend`` plays no part).
    A video file keeps its own frame rate.

    ``backend``: ``"auto"`` tries decord and falls back to PyAV if decord is not
    installed or fails on this file; ``"decord"`` / ``"pyav"`` force one.
    PyAV decodes sequentially from the start (no seeking), so it is slower for
    frames late in long videos but robust.

    Raises :class:`VideoDecodeError` when the file cannot be decoded,
    ``ValueError`` for bad arguments, ``ImportError`` when a forced backend is
    not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(map(repr, BACKENDS))}")
    if num_frames is None and fps is None:
        num_frames = DEFAULT_NUM_FRAMES
    _check_sampling_args(num_frames, fps, max_frames)
    sampling = {"num_frames": num_frames, "fps": fps, "max_frames": max_frames}
    bounds = _check_bounds(start, end)
    if frame_fps is not None:
        frame_fps = _check_positive("frame_fps", frame_fps)

    path_str = os.fsdecode(os.fspath(path))
    if frame_fps is not None and os.path.isdir(path_str):
        return _decode_folder(path_str, frame_fps, sampling, bounds)
    check_input_file(
        path_str, VideoDecodeError, "is a directory, not a video file (give frame_fps to read a folder of frame images)"
    )

    if backend == "pyav":
        try:
            return _decode_pyav(path_str, sampling, bounds)
        except _BackendFailure as exc:
            raise VideoDecodeError(path_str, _pyav_reason(exc.reason)) from exc

    if backend == "decord":
        try:
            decord_reader._load_decord()
        except ImportError as exc:
            raise ImportError(f"backend='decord' requested but decord cannot be imported: {exc}") from exc
        try:
            return decord_reader._decode_decord(path_str, sampling, bounds)
        except _BackendFailure as exc:
            reason = exc.reason if exc.reason == "no decodable frames" else f"cannot be decoded by decord: {exc.reason}"
            raise VideoDecodeError(path_str, reason) from exc

    # auto
    try:
        return decord_reader._decode_decord(path_str, sampling, bounds)
    except ImportError as exc:
        decord_reason = f"decord not importable ({exc})"
        logger.debug("decord not importable (%s); using PyAV for %s", exc, path_str)
    except _BackendFailure as exc:
        decord_reason = exc.reason
        logger.info("decord failed on %s (%s); falling back to PyAV", path_str, exc.reason)
    try:
        return _decode_pyav(path_str, sampling, bounds)
    except _BackendFailure as exc:
        if exc.reason == "no decodable frames":
            reason = f"no decodable frames (decord: {decord_reason})"
        else:
            reason = f"cannot be decoded by decord or PyAV (decord: {decord_reason}; PyAV: {exc.reason})"
        raise VideoDecodeError(path_str, reason) from exc
