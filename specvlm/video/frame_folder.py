"""A folder of frame images (``00001.jpg`` ...) read as a video at a given frame rate (``backend="frames"``).

The images are taken in the numeric order of their names and sampled (and bounded) like a file; an empty
folder, an unreadable image or images of different sizes raise :class:`~specvlm.video.VideoDecodeError`.

What this module deliberately does not do: guess the folder's frame rate (``load_video`` reads a directory
as frames only when ``frame_fps`` is given), or read files other than :data:`FRAME_IMAGE_EXTENSIONS`.
"""

from __future__ import annotations

import os
import re

import numpy as np

from specvlm.video.clip import Video
from specvlm.video.errors import VideoDecodeError, _short
from specvlm.video.sampling import _pick

#: Images of a frame folder (``load_video(folder, frame_fps=...)``); other files there are passed over.
FRAME_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


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
