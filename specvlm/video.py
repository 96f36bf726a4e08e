"""Video decoding and frame sampling for SpecVLM.

What this module does
---------------------
* ``load_video`` decodes a video file into a :class:`Video`: a ``(T, H, W, 3)``
  uint8 RGB numpy array of *sampled* frames plus the source frame rate, the
  source frame count and the source index of every sampled frame.  Decoding
  uses decord (``backend="decord"``), PyAV (``backend="pyav"``) or decord with a
  fallback to PyAV when decord is not installed or cannot read the file
  (``backend="auto"``, the default).
* ``sample_indices`` chooses which source frames to keep: ``num_frames``
  frames spread uniformly over the whole clip, or ``fps`` frames per second of
  video, optionally capped by ``max_frames``.
* ``load_video(..., start=, end=)`` samples only the frames between ``start``
  and ``end`` seconds (``round(seconds * fps)``, as VideoChat2 cuts MVBench's
  clips); the returned indices stay indices of the whole source.
* ``load_video(folder, frame_fps=)`` reads a folder of frame images
  (``00001.jpg`` ..., in the numeric order of their names) as a video at
  ``frame_fps``, sampled (and bounded) like a file (``backend="frames"``).
* ``from_frames`` wraps frames that are already in memory (numpy, torch, a list
  of PIL images or arrays) in the same :class:`Video` container.
* ``Video.metadata()`` builds the ``transformers`` ``VideoMetadata`` that video
  processors (e.g. Qwen2.5-VL) need; without the source fps they assume 24 fps
  and compute wrong temporal positions.
* ``write_video`` writes frames to an H.264 (or MPEG-4 Part 2) mp4, for tests
  and synthetic data.

Every way a file can fail to decode (missing, a directory, empty, not a
video, truncated, corrupt, zero frames, no frame rate, start/end outside the
video; a frame folder with no images, an unreadable image or images of
different sizes) raises :class:`VideoDecodeError`, a ``ValueError`` that names
the path and the reason.  Bad arguments raise a plain ``ValueError``.

What it deliberately does not do
--------------------------------
* No resizing, cropping, normalisation or patching: that is the model
  processor's job.  Frames are returned at the file's resolution.
* No audio, no GPU decoding, no caching, no rotation/display-matrix handling.
* No timestamp (pts) based sampling: frame ``i`` is the ``i``-th decoded frame
  and times are ``i / fps``, i.e. a constant frame rate is assumed (start/end
  bounds included: no seeking, PyAV decodes from the start).
* No guessing a frame folder's rate: a directory is read as frames only when
  ``frame_fps`` is given.
* No silent repair: frames are never duplicated to reach ``num_frames``, and a
  stream that breaks before all requested frames were decoded is an error,
  not a shorter video.
* It never changes global library state (e.g. ``decord.bridge.set_bridge`` or
  log levels).
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from transformers.video_utils import VideoMetadata

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "DEFAULT_NUM_FRAMES",
    "FRAME_IMAGE_EXTENSIONS",
    "Video",
    "VideoDecodeError",
    "from_frames",
    "load_video",
    "sample_indices",
    "write_video",
]

#: Accepted values of ``load_video(backend=...)``.
BACKENDS = ("auto", "decord", "pyav")
#: Frames sampled by ``load_video`` when neither ``num_frames`` nor ``fps`` is given.
DEFAULT_NUM_FRAMES = 8
#: Images of a frame folder (``load_video(folder, frame_fps=...)``); other files there are passed over.
FRAME_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

_FRAMES_ARRAY_PATH = "<frames array>"
_MAX_REASON_CHARS = 400


class VideoDecodeError(ValueError):
    """A video could not be decoded.

    Raised for a missing or unreadable file, data that is not a decodable
    video, a video with zero decodable frames, or an unusable frames array.
    ``path`` is the file path (or ``"<frames array>"``) and ``reason`` says why.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = os.fsdecode(path) if path is not None else None
        self.reason = reason
        super().__init__(f"cannot decode video {self.path!r}: {reason}")

    def __reduce__(self):  # keep (path, reason) through pickling (multiprocessing loaders)
        return (type(self), (self.path, self.reason))


@dataclass
class Video:
    """Sampled frames of one video plus what is needed to place them in time.

    ``frames`` is ``(T, H, W, 3)`` uint8 RGB; ``indices[k]`` is the source frame
    index of ``frames[k]``; ``fps`` and ``total_frames`` describe the *source*.
    """

    frames: np.ndarray
    fps: float
    total_frames: int
    indices: list[int]
    backend: str
    path: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.frames, np.ndarray) or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            shape = getattr(self.frames, "shape", type(self.frames).__name__)
            raise ValueError(f"Video.frames must be a (T, H, W, 3) numpy array, got {shape}")
        if len(self.indices) != self.frames.shape[0]:
            raise ValueError(
                f"Video.indices has {len(self.indices)} entries but frames has {self.frames.shape[0]} frames"
            )

    @property
    def duration(self) -> float:
        """Duration of the source video in seconds (``total_frames / fps``)."""
        return self.total_frames / self.fps

    @property
    def num_frames(self) -> int:
        """Number of sampled frames (``T``)."""
        return int(self.frames.shape[0])

    @property
    def timestamps(self) -> list[float]:
        """Time in seconds of each sampled frame (``index / fps``)."""
        return [i / self.fps for i in self.indices]

    def metadata(self) -> "VideoMetadata":
        """``transformers.video_utils.VideoMetadata`` for a video processor.

        Pass it with the frames (``videos=[v.frames], video_metadata=[v.metadata()],
        do_sample_frames=False``) so the processor knows the real fps and which
        frames were sampled.  ``do_sample_frames=False`` matters: with sampling
        on, the processor re-samples against ``total_num_frames`` (the source
        count) and indexes past the end of the already-sampled ``frames``.
        """
        try:
            from transformers.video_utils import VideoMetadata
        except Exception as exc:  # transformers may fail at import time (e.g. broken torchvision)
            raise ImportError(
                f"Video.metadata() needs transformers.video_utils, which failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        _, height, width, _ = self.frames.shape
        return VideoMetadata(
            total_num_frames=int(self.total_frames),
            fps=float(self.fps),
            width=int(width),
            height=int(height),
            duration=float(self.duration),
            video_backend=self.backend,
            frames_indices=[int(i) for i in self.indices],
        )


# --------------------------------------------------------------------------- sampling


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


# --------------------------------------------------------------------------- decoding


class _BackendFailure(Exception):
    """Internal: one backend could not decode the file; ``reason`` is user-facing."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_DECORD_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


def _short(exc: BaseException) -> str:
    """One-line, bounded description of a (possibly very chatty) library error."""
    text = " ".join(str(exc).split())
    text = _DECORD_LOG_PREFIX.sub("", text)  # decord prefixes "[hh:mm:ss] /src/file.cc:123: "
    if len(text) > _MAX_REASON_CHARS:
        text = text[: _MAX_REASON_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def _load_av():
    import av

    return av


def _check_file(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoDecodeError(path, "file does not exist") from None
    except OSError as exc:
        raise VideoDecodeError(path, f"cannot stat file: {_short(exc)}") from exc
    if stat.S_ISDIR(st.st_mode):
        reason = "is a directory, not a video file (give frame_fps to read a folder of frame images)"
        raise VideoDecodeError(path, reason)
    if not stat.S_ISREG(st.st_mode):  # FIFOs etc. could block a decoder forever
        raise VideoDecodeError(path, "is not a regular file")
    if st.st_size == 0:
        raise VideoDecodeError(path, "file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(path, "file is not readable (permission denied)")


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


def _natural(name: str) -> list:
    """Sort key: the numbers in a name compare as numbers (``2.jpg`` before ``10.jpg``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _decode_folder(path: str, frame_fps: float, sampling: dict, bounds: tuple | None) -> Video:
    """A folder of frame images as a video at ``frame_fps``, sampled like a file."""
    from PIL import Image

    from specvlm.images import pil_to_rgb

    try:
        names = os.listdir(path)
    except OSError as exc:
        raise VideoDecodeError(path, f"cannot list the frame folder: {_short(exc)}") from exc
    files = sorted((f for f in names if f.lower().endswith(FRAME_IMAGE_EXTENSIONS)), key=_natural)
    if not files:
        raise VideoDecodeError(path, f"folder holds no frame images ({', '.join(FRAME_IMAGE_EXTENSIONS)})")
    indices = _pick(len(files), frame_fps, sampling, bounds, path)
    frames = []
    for i in indices:
        frame_path = os.path.join(path, files[i])
        try:
            with Image.open(frame_path) as im:
                frames.append(pil_to_rgb(im, f"frame image {frame_path!r}"))  # 16-bit scaled, never saturated
        except (OSError, ValueError) as exc:
            raise VideoDecodeError(frame_path, f"cannot read frame image: {exc}") from exc
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoDecodeError(path, f"frame images differ in size: {sorted(shapes)}")
    return Video(
        frames=np.stack(frames), fps=frame_fps, total_frames=len(files), indices=indices, backend="frames", path=path
    )


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
    _check_file(path_str)

    if backend == "pyav":
        try:
            return _decode_pyav(path_str, sampling, bounds)
        except _BackendFailure as exc:
            raise VideoDecodeError(path_str, _pyav_reason(exc.reason)) from exc

    if backend == "decord":
        try:
            _load_decord()
        except ImportError as exc:
            raise ImportError(f"backend='decord' requested but decord cannot be imported: {exc}") from exc
        try:
            return _decode_decord(path_str, sampling, bounds)
        except _BackendFailure as exc:
            reason = exc.reason if exc.reason == "no decodable frames" else f"cannot be decoded by decord: {exc.reason}"
            raise VideoDecodeError(path_str, reason) from exc

    # auto
    try:
        return _decode_decord(path_str, sampling, bounds)
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


def _pyav_reason(reason: str) -> str:
    if reason == "no decodable frames":
        return reason
    return f"cannot be decoded by PyAV: {reason}"


# --------------------------------------------------------------------------- in-memory frames


def _frames_to_array(frames: Any) -> np.ndarray:
    if isinstance(frames, (list, tuple)):
        if len(frames) == 0:
            raise VideoDecodeError(_FRAMES_ARRAY_PATH, "zero frames")
        arrays = []
        for k, frame in enumerate(frames):
            if hasattr(frame, "convert") and hasattr(frame, "mode"):  # PIL image: every mode, faithfully
                from specvlm.images import pil_to_rgb

                frame = pil_to_rgb(frame, f"frame {k}")
            elif hasattr(frame, "detach"):  # torch tensor
                frame = _tensor_to_numpy(frame)
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(f"frame {k} has shape {frame.shape}; each frame must be (H, W, 3)")
            arrays.append(frame)
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise ValueError(f"frames have different shapes {sorted(shapes)}; all frames must share (H, W, 3)")
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) != 1:
            raise ValueError(f"frames have different dtypes {sorted(map(str, dtypes))}; all must be uint8 (or all uint16)")
        return np.stack(arrays)
    if hasattr(frames, "detach"):  # torch tensor, without importing torch
        frames = _tensor_to_numpy(frames)
    if not isinstance(frames, np.ndarray):
        raise ValueError(
            f"frames must be a (T, H, W, 3) uint8 numpy array or torch tensor, or a list of PIL images / "
            f"(H, W, 3) arrays; got {type(frames).__name__}"
        )
    return frames


def _tensor_to_numpy(tensor: Any) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.uint16":  # numpy() has no uint16 path on every torch version
        import torch

        return tensor.to(torch.int32).numpy().astype(np.uint16)
    return tensor.numpy()


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 frames as they are, uint16 frames scaled by the 16-bit range (``round(v * 255 / 65535)``,
    as :mod:`specvlm.images` reads 16-bit images); any other dtype is refused by name."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    hint = " (e.g. frames.astype(np.uint8) if the values are 0-255)" if array.dtype.kind in "iub" else ""
    raise ValueError(
        f"frames has dtype {array.dtype}; expected uint8 (values 0-255) or uint16 (0-65535, scaled to 8 bits){hint}"
    )


def from_frames(
    frames: Any, *, fps: float = 1.0, num_frames: int | None = None, max_frames: int | None = None
) -> Video:
    """Wrap in-memory frames in a :class:`Video` (``backend="array"``).

    ``frames``: ``(T, H, W, 3)`` uint8 numpy array or torch tensor, or a list of
    PIL images or ``(H, W, 3)`` uint8 arrays.  uint16 frames are scaled by the
    16-bit range (65535 is white) and PIL frames of any mode are converted as
    :func:`specvlm.images.pil_to_rgb` says (16-bit scaled, transparency over
    white, float refused); other dtypes are refused by name.  ``fps`` is the
    frame rate of those frames.  ``num_frames`` optionally sub-samples them
    uniformly (:func:`sample_indices`); otherwise all frames are kept, at most
    ``max_frames`` of them (uniformly sub-sampled when there are more).
    """
    fps = _check_positive("fps", fps)
    if num_frames is not None:
        _check_int("num_frames", num_frames, 1)
    if max_frames is not None:
        _check_int("max_frames", max_frames, 1)
    array = _frames_to_array(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames has shape {array.shape}; expected 4-D (T, H, W, 3) with 3 RGB channels last")
    array = _to_uint8(array)
    if array.shape[0] == 0:
        raise VideoDecodeError(_FRAMES_ARRAY_PATH, "zero frames")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"frames has shape {array.shape}; height and width must be >= 1")
    total = int(array.shape[0])
    if num_frames is None and (max_frames is None or total <= max_frames):
        indices = list(range(total))
    else:
        indices = sample_indices(total, fps, num_frames=num_frames or total, max_frames=max_frames)
        array = array[indices]
    return Video(
        frames=np.ascontiguousarray(array), fps=fps, total_frames=total, indices=indices, backend="array", path=None
    )


# --------------------------------------------------------------------------- writing


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
