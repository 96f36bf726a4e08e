"""``from_frames``: frames already in memory (numpy, torch, PIL images, arrays) as a :class:`~specvlm.video.Video`.

uint16 frames are scaled by the 16-bit range and PIL frames of any mode are converted as
:func:`specvlm.images.pil_to_rgb` says; any other dtype is refused by name.

What this module deliberately does not do: decode files, or duplicate frames to reach ``num_frames``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specvlm.video.clip import Video
from specvlm.video.errors import VideoDecodeError
from specvlm.video.sampling import _check_int, _check_positive, sample_indices

_FRAMES_ARRAY_PATH = "<frames array>"


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
