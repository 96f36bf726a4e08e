"""Tests for specvlm.video: decoding (decord and PyAV), sampling, metadata, errors; and frames through an engine
(read channels-last whatever their height, ``max_frames`` capping fps sampling).

Videos are tiny (64x48, 20 frames) and every frame is a distinct solid colour
from a well-separated palette, so a decoded frame can be mapped back to the
source frame it came from despite lossy compression.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import sys
import types
from dataclasses import field, make_dataclass

import av
import numpy as np
import pytest
import torch
from PIL import Image

from specvlm import SpecVLM
from specvlm import video as V
from specvlm.video import decord_reader, pyav_reader  # where load_video looks the backends up (monkeypatch targets)
from specvlm.video import (
    Video,
    VideoDecodeError,
    from_frames,
    load_video,
    sample_indices,
    write_video,
)

T, H, W, FPS = 20, 48, 64, 8.0

# 27 colours on a {40, 128, 216}^3 grid (pairwise distance >= 88), shuffled so that
# frame order is not monotone in any channel; take the first T.
_GRID = np.array(list(itertools.product((40, 128, 216), repeat=3)), dtype=np.uint8)
PALETTE = _GRID[np.random.default_rng(0).permutation(len(_GRID))][:T]


def make_frames(n: int = T, h: int = H, w: int = W) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(PALETTE[:n, None, None, :], (n, h, w, 3)))


def assert_frames_match(frames: np.ndarray, indices: list[int], tol: float = 12.0) -> None:
    """Each decoded frame is (close to) the solid colour of its source frame."""
    means = frames.reshape(frames.shape[0], -1, 3).astype(np.float64).mean(axis=1)
    dist = np.linalg.norm(means[:, None, :] - PALETTE[None].astype(np.float64), axis=-1)
    assert dist.argmin(axis=1).tolist() == list(indices)
    assert dist.min(axis=1).max() < tol, dist.min(axis=1)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "palette.mp4"
    write_video(path, make_frames(), fps=FPS)
    return path


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_load_num_frames_both_backends(mp4, backend):
    v = load_video(mp4, num_frames=5, backend=backend)
    assert isinstance(v, Video)
    assert v.backend == backend
    assert v.frames.shape == (5, H, W, 3)
    assert v.frames.dtype == np.uint8 and v.frames.flags["C_CONTIGUOUS"]
    assert v.fps == pytest.approx(FPS)
    assert v.total_frames == T
    assert v.indices == [2, 6, 10, 14, 18]
    assert v.num_frames == 5
    assert v.duration == pytest.approx(T / FPS)
    assert v.path == str(mp4)
    assert_frames_match(v.frames, v.indices)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_load_fps_and_cap_both_backends(mp4, backend):
    v = load_video(mp4, fps=2.0, backend=backend)  # one frame every 4 source frames
    assert v.indices == [0, 4, 8, 12, 16]
    assert_frames_match(v.frames, v.indices)
    capped = load_video(mp4, fps=4.0, max_frames=3, backend=backend)  # 10 frames > cap -> uniform 3
    assert capped.indices == [3, 10, 16]
    assert_frames_match(capped.frames, capped.indices)


def test_all_frames_and_backends_agree(mp4):
    a = load_video(mp4, num_frames=T, backend="decord")
    b = load_video(mp4, num_frames=T, backend="pyav")
    assert a.indices == b.indices == list(range(T))
    assert_frames_match(a.frames, a.indices)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 3


def test_default_is_eight_frames_and_auto_prefers_decord(mp4):
    v = load_video(mp4)
    assert v.backend == "decord"
    assert v.num_frames == V.DEFAULT_NUM_FRAMES == 8
    assert v.indices == [1, 3, 6, 8, 11, 13, 16, 18]
    assert_frames_match(v.frames, v.indices)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_ntsc_frame_rate_round_trips(tmp_path, backend):
    path = tmp_path / "ntsc.mp4"
    write_video(path, make_frames(6, 32, 32), fps=30000 / 1001)
    v = load_video(str(path), num_frames=6, backend=backend)
    assert v.fps == pytest.approx(30000 / 1001, rel=1e-6)
    assert v.total_frames == 6 and v.indices == list(range(6))


def test_requesting_more_frames_than_exist_returns_all_without_repeats(mp4, caplog):
    with caplog.at_level(logging.WARNING, logger="specvlm.video"):
        v = load_video(mp4, num_frames=50, backend="pyav")
    assert v.indices == list(range(T))
    assert "only 20" in caplog.text


def test_mpeg4_fallback_when_libx264_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    path = tmp_path / "mpeg4.mp4"
    write_video(path, make_frames(), fps=FPS)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
    for backend in ("decord", "pyav"):
        v = load_video(path, num_frames=4, backend=backend)
        assert v.indices == [2, 7, 12, 17]
        assert_frames_match(v.frames, v.indices)


def test_write_video_validates(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 33, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_video(tmp_path / "s.mp4", np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "r.mp4", np.zeros((2, 32, 32, 3), np.uint8), fps=0)


# --------------------------------------------------------------------------- PyAV specifics


def test_pyav_counts_frames_when_container_has_no_count(mp4, monkeypatch):
    real_probe = pyav_reader._pyav_probe
    monkeypatch.setattr(pyav_reader, "_pyav_probe", lambda av_, path: (0, real_probe(av_, path)[1]))
    v = load_video(mp4, num_frames=4, backend="pyav")
    assert v.total_frames == T
    assert v.indices == [2, 7, 12, 17]
    assert_frames_match(v.frames, v.indices)


def test_pyav_resamples_when_declared_count_is_too_high(mp4, monkeypatch, caplog):
    monkeypatch.setattr(pyav_reader, "_pyav_probe", lambda av_, path: (30, FPS))
    with caplog.at_level(logging.WARNING, logger="specvlm.video"):
        v = load_video(mp4, num_frames=4, backend="pyav")
    assert "declares 30 frames but only 20 decode" in caplog.text
    assert v.total_frames == T
    assert v.indices == [2, 7, 12, 17]
    assert_frames_match(v.frames, v.indices)


def test_pyav_without_frame_rate_is_an_error(mp4, monkeypatch):
    monkeypatch.setattr(pyav_reader, "_pyav_probe", lambda av_, path: (T, None))
    with pytest.raises(VideoDecodeError, match="no frame rate"):
        load_video(mp4, backend="pyav")


# --------------------------------------------------------------------------- auto fallback


def test_auto_falls_back_to_pyav_when_decord_missing(mp4, monkeypatch):
    def no_decord():
        raise ImportError("No module named 'decord'")

    monkeypatch.setattr(decord_reader, "_load_decord", no_decord)
    v = load_video(mp4, num_frames=5)
    assert v.backend == "pyav"
    assert v.indices == [2, 6, 10, 14, 18]
    assert_frames_match(v.frames, v.indices)
    with pytest.raises(ImportError, match="decord"):
        load_video(mp4, backend="decord")


def test_auto_falls_back_to_pyav_when_decord_fails_on_file(mp4, monkeypatch, caplog):
    def broken_reader(*args, **kwargs):
        raise RuntimeError("[12:00:00] /src/video_reader.cc:83: ERROR opening: simulated")

    fake = types.SimpleNamespace(VideoReader=broken_reader, cpu=lambda i: None)
    monkeypatch.setattr(decord_reader, "_load_decord", lambda: fake)
    with caplog.at_level(logging.INFO, logger="specvlm.video"):
        v = load_video(mp4, num_frames=3)
    assert v.backend == "pyav"
    assert v.indices == [3, 10, 16]
    assert_frames_match(v.frames, v.indices)
    assert "falling back to PyAV" in caplog.text and "simulated" in caplog.text
    with pytest.raises(VideoDecodeError, match="cannot be decoded by decord: RuntimeError: ERROR opening: simulated"):
        load_video(mp4, backend="decord")


def test_bad_arguments(mp4):
    with pytest.raises(ValueError, match=r"unknown backend 'opencv'.*'auto', 'decord', 'pyav'"):
        load_video(mp4, backend="opencv")
    with pytest.raises(ValueError, match="exactly one of num_frames or fps"):
        load_video(mp4, num_frames=4, fps=1.0)
    with pytest.raises(ValueError, match="num_frames must be an integer >= 1, got 0"):
        load_video(mp4, num_frames=0)


# --------------------------------------------------------------------------- failures


def _assert_decode_error(excinfo, path, *reason_parts):
    err = excinfo.value
    assert isinstance(err, ValueError)
    assert err.path == str(path)
    assert str(path) in str(err)
    assert err.reason and err.reason in str(err)
    for part in reason_parts:
        assert part in err.reason, err.reason


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_missing_file(tmp_path, backend):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoDecodeError) as ei:
        load_video(path, backend=backend)
    _assert_decode_error(ei, path, "file does not exist")


def test_directory(tmp_path):
    with pytest.raises(VideoDecodeError) as ei:
        load_video(tmp_path)
    _assert_decode_error(ei, tmp_path, "directory")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoDecodeError) as ei:
        load_video(path)
    _assert_decode_error(ei, path, "empty")


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_random_bytes(tmp_path, backend):
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError) as ei:
        load_video(path, backend=backend)
    expected = {"auto": "cannot be decoded by decord or PyAV", "decord": "by decord", "pyav": "by PyAV"}[backend]
    _assert_decode_error(ei, path, expected)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_truncated_mp4(tmp_path, mp4, backend):
    data = mp4.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])  # cuts off the moov atom at the end
    with pytest.raises(VideoDecodeError) as ei:
        load_video(path, backend=backend)
    _assert_decode_error(ei, path, "PyAV")


def test_corrupt_stream_is_an_error_not_a_shorter_video(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "noise.mp4"
    write_video(src, rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), fps=FPS)
    data = bytearray(src.read_bytes())
    moov = data.find(b"moov") - 4  # libx264 output here: ftyp, mdat, moov (at the end)
    assert moov > 1000
    start = 48 + int((moov - 48) * 0.7)
    data[start:moov] = rng.integers(0, 256, moov - start, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(VideoDecodeError) as ei:
        load_video(path, num_frames=4)
    _assert_decode_error(ei, path, "decoding failed after")
    # Frames before the damage are still reachable: PyAV stops after the last wanted frame.
    assert load_video(path, num_frames=1, backend="pyav").indices == [10]


def test_zero_frame_video(tmp_path):
    path = tmp_path / "zero.avi"  # AVI keeps a video stream with no frames; mp4 drops the track
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    for backend in ("auto", "pyav"):
        with pytest.raises(VideoDecodeError) as ei:
            load_video(path, backend=backend)
        _assert_decode_error(ei, path, "no decodable frames")


def test_no_video_stream(tmp_path):
    path = tmp_path / "audio.wav"
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        c.mux(s.encode(frame))
        c.mux(s.encode())
    with pytest.raises(VideoDecodeError) as ei:
        load_video(path, backend="pyav")
    _assert_decode_error(ei, path, "no video stream")


def test_decode_error_pickles():
    err = pickle.loads(pickle.dumps(VideoDecodeError("/x.mp4", "file does not exist")))
    assert (err.path, err.reason) == ("/x.mp4", "file does not exist")
    assert str(err) == "cannot decode video '/x.mp4': file does not exist"


# --------------------------------------------------------------------------- start/end bounds, frame folders


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_start_end_bounds_sample_within_the_window(mp4, backend):
    # 20 frames at 8 fps: 0.5 .. 1.5 s are source frames round(4.0) = 4 .. round(12.0) = 12
    v = load_video(mp4, num_frames=3, start=0.5, end=1.5, backend=backend)
    assert v.indices == [4 + i for i in sample_indices(9, FPS, num_frames=3)] == [5, 8, 11]
    assert v.total_frames == T and v.backend == backend  # indices and count still describe the whole source
    assert all(0.5 <= t <= 1.5 for t in v.timestamps)
    assert_frames_match(v.frames, v.indices)
    assert load_video(mp4, fps=4.0, start=0.5, end=1.5, backend=backend).indices == [4, 6, 8, 10, 12]
    assert load_video(mp4, num_frames=2, start=2.0, backend=backend).indices == [17, 19]  # to the end
    assert load_video(mp4, num_frames=5, end=0.5, backend=backend).indices == [0, 1, 2, 3, 4]  # from the start
    with pytest.raises(VideoDecodeError, match=r"start/end 3-4 s lie outside the video \(20 frames at 8 fps"):
        load_video(mp4, num_frames=2, start=3.0, end=4.0, backend=backend)


def test_start_end_bounds_with_the_auto_fallback(mp4, monkeypatch):
    def no_decord():
        raise ImportError("No module named 'decord'")

    monkeypatch.setattr(decord_reader, "_load_decord", no_decord)
    v = load_video(mp4, num_frames=3, start=0.5, end=1.5)
    assert v.backend == "pyav" and v.indices == [5, 8, 11]
    with pytest.raises(VideoDecodeError, match="lie outside the video"):
        load_video(mp4, num_frames=2, start=3.0, end=4.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start": -1.0}, r"start must be a finite number of seconds >= 0, got -1.0"),
        ({"end": float("nan")}, r"end must be a finite number of seconds >= 0"),
        ({"start": "1"}, r"start must be a finite number of seconds >= 0, got '1'"),
        ({"start": True}, r"start must be a finite number"),
        ({"start": 2.0, "end": 1.0}, r"start must be before end, got start=2, end=1"),
        ({"start": 1.0, "end": 1.0}, r"start must be before end"),
        ({"frame_fps": 0}, r"frame_fps must be a positive finite number"),
    ],
)
def test_bounds_and_frame_fps_validation(mp4, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_video(mp4, num_frames=2, **kwargs)


def _frame_folder(path, n: int, digits: int = 5, ext: str = ".jpg"):
    path.mkdir(parents=True)
    frames = make_frames(n, 16, 16)
    for i, frame in enumerate(frames, 1):
        Image.fromarray(frame).save(path / f"{i:0{digits}d}{ext}", quality=95)
    return frames


def test_frame_folder_is_a_video_at_frame_fps(tmp_path):
    folder = tmp_path / "frames"
    frames = _frame_folder(folder, 12, digits=1)  # 1.jpg .. 12.jpg: numeric order, not text order
    (folder / "notes.txt").write_text("not a frame")
    v = load_video(folder, num_frames=12, frame_fps=3.0)
    assert v.backend == "frames" and v.path == str(folder) and v.fps == 3.0 and v.total_frames == 12
    assert v.indices == list(range(12))
    assert_frames_match(v.frames, v.indices)
    assert v.metadata().fps == 3.0 and v.metadata().frames_indices == v.indices
    assert load_video(folder, num_frames=4, frame_fps=3.0).indices == sample_indices(12, 3.0, num_frames=4)
    assert load_video(folder, fps=1.0, frame_fps=3.0).indices == [0, 3, 6, 9]
    # 1.0 .. 3.0 s at 3 fps: frames 3 .. 9
    bounded = load_video(folder, num_frames=4, frame_fps=3.0, start=1.0, end=3.0)
    assert bounded.indices == [3, 5, 7, 9] and bounded.total_frames == 12
    assert_frames_match(bounded.frames, bounded.indices)
    with pytest.raises(VideoDecodeError, match="lie outside the video"):
        load_video(folder, num_frames=2, frame_fps=3.0, start=10.0, end=20.0)
    with pytest.raises(VideoDecodeError) as ei:  # without frame_fps a folder stays an error, as before
        load_video(folder)
    _assert_decode_error(ei, folder, "is a directory", "frame_fps")


def test_frame_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDecodeError, match=r"no frame images \(\.jpg, \.jpeg, \.png\)"):
        load_video(tmp_path / "empty", frame_fps=3.0)
    folder = tmp_path / "broken"
    _frame_folder(folder, 4)
    (folder / "00003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError, match=r"00003\.jpg.*cannot read frame image") as ei:
        load_video(folder, num_frames=4, frame_fps=3.0)
    assert ei.value.path == str(folder / "00003.jpg")
    folder = tmp_path / "sizes"
    _frame_folder(folder, 3, ext=".png")
    Image.new("RGB", (8, 8)).save(folder / "00004.png")
    with pytest.raises(VideoDecodeError, match="frame images differ in size"):
        load_video(folder, num_frames=4, frame_fps=3.0)


# --------------------------------------------------------------------------- sampling


def test_sample_indices_num_frames():
    assert sample_indices(10, 30.0, num_frames=4) == [1, 3, 6, 8]
    assert sample_indices(10, 30.0, num_frames=1) == [5]
    assert sample_indices(10, 30.0, num_frames=10) == list(range(10))
    assert sample_indices(100, 30.0, num_frames=4) == [12, 37, 62, 87]
    assert sample_indices(3, 30.0, num_frames=8) == [0, 1, 2]  # all frames, never repeated
    assert sample_indices(100, 30.0, num_frames=16, max_frames=4) == [12, 37, 62, 87]


def test_sample_indices_fps():
    assert sample_indices(20, 8.0, fps=2.0) == [0, 4, 8, 12, 16]
    assert sample_indices(21, 8.0, fps=2.0) == [0, 4, 8, 12, 16, 20]
    assert sample_indices(10, 30.0, fps=10.0) == [0, 3, 6, 9]
    assert sample_indices(31, 29.97, fps=1.0) == [0, 29]  # step 29.97 -> floor
    assert sample_indices(29, 29.97, fps=1.0) == [0]
    assert sample_indices(10, 30.0, fps=1.0) == [0]  # shorter than one step: still one frame
    assert sample_indices(5, 8.0, fps=100.0) == [0, 1, 2, 3, 4]  # above source fps: every frame
    assert sample_indices(10, 8.0, fps=3.0) == [0, 2, 5, 8]  # fractional step 8/3
    # cap: 100 frames at source rate exceeds max_frames -> uniform over the whole clip
    assert sample_indices(100, 8.0, fps=8.0, max_frames=5) == [10, 30, 50, 70, 90]
    assert sample_indices(100, 8.0, fps=1.0, max_frames=50) == list(range(0, 100, 8))  # under the cap


def test_sample_indices_always_sorted_unique_in_range():
    for total, n in itertools.product(range(1, 40), range(1, 45)):
        idx = sample_indices(total, 24.0, num_frames=n)
        assert idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < total
        assert len(idx) == min(n, total)
    for total, fps in itertools.product(range(1, 60), (0.5, 1.0, 2.5, 7.0, 24.0, 60.0)):
        idx = sample_indices(total, 24.0, fps=fps, max_frames=16)
        assert idx[0] <= total // 2 and idx == sorted(set(idx)) and idx[-1] < total and 1 <= len(idx) <= 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(total_frames=0, num_frames=4), "total_frames must be an integer >= 1, got 0"),
        (dict(total_frames=10, num_frames=0), "num_frames must be an integer >= 1, got 0"),
        (dict(total_frames=10, num_frames=2.5), "num_frames must be an integer >= 1, got 2.5"),
        (dict(total_frames=10, num_frames=True), "num_frames must be an integer"),
        (dict(total_frames=10, fps=0.0), "fps must be a positive finite number, got 0.0"),
        (dict(total_frames=10, fps=-1.0), "fps must be a positive finite number, got -1.0"),
        (dict(total_frames=10, fps=float("nan")), "fps must be a positive finite number"),
        (dict(total_frames=10, fps=1.0, max_frames=0), "max_frames must be an integer >= 1, got 0"),
        (dict(total_frames=10), "exactly one of num_frames or fps"),
        (dict(total_frames=10, num_frames=2, fps=1.0), "exactly one of num_frames or fps"),
        (dict(total_frames=10, num_frames=2, source_fps=0.0), "source_fps must be a positive finite number"),
    ],
)
def test_sample_indices_validation(kwargs, message):
    kwargs.setdefault("source_fps", 8.0)
    total = kwargs.pop("total_frames")
    source_fps = kwargs.pop("source_fps")
    with pytest.raises(ValueError) as ei:
        sample_indices(total, source_fps, **kwargs)
    assert message in str(ei.value)


# --------------------------------------------------------------------------- metadata


def _real_video_metadata():
    try:
        from transformers.video_utils import VideoMetadata
    except Exception as exc:  # noqa: BLE001 - environment problem, reported as a skip
        pytest.skip(f"transformers.video_utils does not import here: {type(exc).__name__}: {exc}")
    return VideoMetadata


def test_metadata_real_transformers_type(mp4):
    VideoMetadata = _real_video_metadata()
    v = load_video(mp4, num_frames=4)
    md = v.metadata()
    assert isinstance(md, VideoMetadata)
    assert md.total_num_frames == T and md.fps == pytest.approx(FPS)
    assert (md.width, md.height) == (W, H)
    assert md.duration == pytest.approx(T / FPS)
    assert md.video_backend == "decord"
    assert md.frames_indices == [2, 7, 12, 17]
    assert md.sampled_fps == pytest.approx(4 / T * FPS)


def test_metadata_fields(mp4, monkeypatch):
    """Field mapping, checked against a stand-in so it runs even where transformers is broken."""

    optional = ("fps", "width", "height", "duration", "video_backend", "frames_indices")
    FakeVideoMetadata = make_dataclass(
        "FakeVideoMetadata", [("total_num_frames", int)] + [(name, object, field(default=None)) for name in optional]
    )

    fake_module = types.ModuleType("transformers.video_utils")
    fake_module.VideoMetadata = FakeVideoMetadata
    monkeypatch.setitem(sys.modules, "transformers.video_utils", fake_module)
    v = load_video(mp4, fps=1.0, backend="pyav")
    md = v.metadata()
    assert md == FakeVideoMetadata(
        total_num_frames=T, fps=FPS, width=W, height=H, duration=T / FPS,
        video_backend="pyav", frames_indices=[0, 8, 16],
    )
    assert type(md.fps) is float and type(md.total_num_frames) is int


def test_metadata_import_failure_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers.video_utils", None)
    v = from_frames(make_frames(2, 8, 8))
    with pytest.raises(ImportError, match="transformers.video_utils"):
        v.metadata()


# --------------------------------------------------------------------------- from_frames


def test_from_frames_numpy_and_subsample():
    frames = make_frames(10, 8, 8)
    v = from_frames(frames, fps=5.0)
    assert v.backend == "array" and v.path is None
    assert v.indices == list(range(10)) and v.total_frames == 10 and v.fps == 5.0
    assert v.duration == pytest.approx(2.0)
    np.testing.assert_array_equal(v.frames, frames)
    sub = from_frames(frames, fps=5.0, num_frames=4)
    assert sub.indices == [1, 3, 6, 8] and sub.total_frames == 10
    np.testing.assert_array_equal(sub.frames, frames[[1, 3, 6, 8]])


def test_from_frames_lists_and_torch():
    torch = pytest.importorskip("torch")
    frames = make_frames(3, 8, 6)
    pil = from_frames([Image.fromarray(f) for f in frames])
    np.testing.assert_array_equal(pil.frames, frames)
    grey = from_frames([Image.new("L", (6, 8), 100)])  # PIL images are converted to RGB
    assert grey.frames.shape == (1, 8, 6, 3) and (grey.frames == 100).all()
    np.testing.assert_array_equal(from_frames(list(frames)).frames, frames)
    np.testing.assert_array_equal(from_frames(torch.from_numpy(frames)).frames, frames)


def test_from_frames_validation():
    for empty in (np.zeros((0, 8, 8, 3), np.uint8), []):
        with pytest.raises(VideoDecodeError) as ei:
            from_frames(empty)
        assert ei.value.path == "<frames array>" and ei.value.reason == "zero frames"
        assert "<frames array>" in str(ei.value) and "zero frames" in str(ei.value)
    with pytest.raises(ValueError, match=r"dtype float32; expected uint8"):
        from_frames(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8\); expected 4-D \(T, H, W, 3\)"):
        from_frames(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8, 4\)"):
        from_frames(np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"different shapes"):
        from_frames([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 6, 3), np.uint8)])
    with pytest.raises(ValueError, match=r"fps must be a positive finite number"):
        from_frames(make_frames(2, 8, 8), fps=0)
    with pytest.raises(ValueError, match=r"frames must be"):
        from_frames("not frames")


# ------------------------------------------------------------------------ frames through an engine


@pytest.fixture(scope="module")
def engine(checkpoints):
    """A llava_onevision target: ``engine.load`` samples frames as the engine will read them."""
    return SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"])


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
@pytest.mark.parametrize("height", [3, 1])
def test_frames_are_read_channels_last_whatever_their_height(checkpoints, family, height):
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"])
    frames = np.random.default_rng(0).integers(0, 256, size=(4, height, 64, 3), dtype=np.uint8)
    inputs = engine.build_inputs(frames, "Describe the video.")
    channels_first = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W): stated explicitly
    expected = engine.processor.video_processor(
        videos=[channels_first], input_data_format="channels_first", do_sample_frames=False, return_tensors="pt"
    )
    assert torch.equal(inputs["pixel_values_videos"], expected["pixel_values_videos"])
    if family == "qwen2_5_vl":
        assert torch.equal(inputs["video_grid_thw"], expected["video_grid_thw"])
        _, grid_h, grid_w = inputs["video_grid_thw"][0].tolist()
        assert grid_h < grid_w  # a wide, flat video stays wide and flat
    result = engine.generate(inputs=inputs, max_new_tokens=2, method="ar")
    assert result.stats.video_tokens > 0


def test_max_frames_caps_fps_sampling(engine, video_file, frames):
    assert engine.load(video_file, fps=8).num_frames == 16
    clip = engine.load(video_file, fps=8, max_frames=3)
    assert clip.num_frames == 3 and clip.indices == engine.load(video_file, num_frames=3).indices
    assert engine.load(frames, max_frames=3).num_frames == 3
    assert engine.load(frames, max_frames=30).num_frames == len(frames)
    with pytest.raises(ValueError, match="max_frames must be an integer >= 1, got 0"):
        engine.load(video_file, fps=8, max_frames=0)
