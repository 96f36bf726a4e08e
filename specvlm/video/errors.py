"""How decoding a video fails: :class:`VideoDecodeError` for the user, a backend's failure inside the package.

:class:`VideoDecodeError` is the ``ValueError`` every way of failing to decode raises (it names the path and
the reason); ``_BackendFailure`` is one backend's failure on one file, which :func:`specvlm.video.load_video`
turns into a :class:`VideoDecodeError` (or a fallback to the other backend); ``_short`` makes a decoding
library's error a bounded, one-line reason.

What this module deliberately does not do: decode anything, or decide which failures fall back to another
backend (:mod:`specvlm.video.load`).
"""

from __future__ import annotations

import os
import re

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
