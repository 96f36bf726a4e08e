"""Video decoding and frame sampling for SpecVLM: the public front of the package, one module a job.

What this package does
----------------------
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

The modules
-----------
* :mod:`~specvlm.video.clip` — the :class:`Video` container and its ``VideoMetadata``;
* :mod:`~specvlm.video.errors` — :class:`VideoDecodeError` and a backend's failure;
* :mod:`~specvlm.video.sampling` — :func:`sample_indices`, start/end bounds, the sampling arguments' checks;
* :mod:`~specvlm.video.decord_reader`, :mod:`~specvlm.video.pyav_reader`,
  :mod:`~specvlm.video.frame_folder` — one way of decoding each;
* :mod:`~specvlm.video.load` — :func:`load_video`: the checks, the choice of backend, the fallback;
* :mod:`~specvlm.video.frames` — :func:`from_frames`; :mod:`~specvlm.video.writing` — :func:`write_video`.

Imports point one way: errors, clip <- sampling <- the three readers <- load; frames and writing use
sampling (writing PyAV's import too) and nothing of load.

What this package deliberately does not do
------------------------------------------
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

from specvlm.video.clip import Video
from specvlm.video.errors import VideoDecodeError
from specvlm.video.frame_folder import FRAME_IMAGE_EXTENSIONS
from specvlm.video.frames import from_frames
from specvlm.video.load import BACKENDS, load_video
from specvlm.video.sampling import DEFAULT_NUM_FRAMES, sample_indices
from specvlm.video.writing import write_video

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
