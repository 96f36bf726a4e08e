"""The :class:`Video` container: sampled frames plus what places them in time, and their ``VideoMetadata``.

A :class:`Video` holds ``(T, H, W, 3)`` uint8 RGB frames, the source frame rate and frame count, the source
index of every sampled frame and the backend that produced them. :meth:`Video.metadata` builds the
``transformers`` ``VideoMetadata`` that video processors (e.g. Qwen2.5-VL) need; without the source fps they
assume 24 fps and compute wrong temporal positions.

What this module deliberately does not do: decode or sample frames (the readers and
:mod:`specvlm.video.sampling` do), or convert frames of other dtypes (:mod:`specvlm.video.frames`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from transformers.video_utils import VideoMetadata


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
