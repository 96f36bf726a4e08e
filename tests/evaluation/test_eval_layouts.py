"""Loaders read what users download: extension fallbacks, LongVideoBench's splits, MLVU's unmatched answers,
MVBench's frame folders, data0613 clips, the lmms-eval layout and start/end bounds, malformed rows, paths
outside the root, a missing pyarrow. No models are loaded here (the end-to-end runs are in test_eval_rows.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from specvlm_eval import datasets
from specvlm_eval.config import BenchmarkConfig
from specvlm_eval.datasets import AnnotationError, load_benchmark, load_clip, read_records
from specvlm.video import VideoDecodeError, load_video, sample_indices, write_video
from specvlm.zoo.demo import synthetic_frames


def video(path: Path, seed: int = 0, num_frames: int = 8, fps: float = 4.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, synthetic_frames(num_frames=num_frames, height=64, width=64, seed=seed), fps=fps)
    return path


def frame_folder(path: Path, num_frames: int = 12, seed: int = 0, digits: int = 5) -> np.ndarray:
    """JPEG frames named like MVBench's tvqa folders (00001.jpg, ...); returns what PIL reads back."""
    path.mkdir(parents=True, exist_ok=True)
    frames = synthetic_frames(num_frames=num_frames, height=64, width=64, seed=seed)
    for k, frame in enumerate(frames, 1):
        Image.fromarray(frame).save(path / f"{k:0{digits}d}.jpg", quality=95)
    return np.stack([np.asarray(Image.open(path / f"{k:0{digits}d}.jpg").convert("RGB")) for k in range(1, num_frames + 1)])


def write_json(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def load(name: str, root: Path, **kw):
    return load_benchmark(BenchmarkConfig(name=name, root=str(root), **kw), root)


def mc(video_name: str, answer: str = "b", **extra) -> dict:
    return {"video": video_name, "question": "Which?", "candidates": ["a", "b", "c"], "answer": answer, **extra}


# --------------------------------------------------------------------------- extensions and splits


def test_upper_case_mp4_and_mkv_fallbacks(tmp_path):
    d = tmp_path / "vdc"
    (d / "test.jsonl").parent.mkdir(parents=True)
    (d / "test.jsonl").write_text("".join(json.dumps({"video_name": n, "question": "Describe."}) + "\n"
                                          for n in ("v_up", "v_mkv", "v_none")))  # fmt: skip
    video(d / "Test_Videos" / "v_up.MP4")
    video(d / "Test_Videos" / "v_mkv.mkv")
    up, mkv, none = load("videodetailcaption", d)
    assert up.video.endswith("Test_Videos/v_up.MP4") and mkv.video.endswith("Test_Videos/v_mkv.mkv")
    assert none.video.endswith("Test_Videos/v_none") and not Path(none.video).exists()  # an error row at run time

    d = tmp_path / "vmme"
    write_json(d / "videomme" / "test.json", [
        {"videoID": "vmA", "question_id": "1", "question": "Q?", "options": ["A. x", "B. y"], "answer": "B"},
    ])  # fmt: skip
    video(d / "data" / "vmA.mkv")
    [s] = load("videomme", d)
    assert s.video.endswith("data/vmA.mkv") and s.answer == "B"

    d = tmp_path / "lvb"
    write_json(d / "lvb_val.json", [{"id": "l", "video_path": "clip.mp4", "question": "Q?", "candidates": ["x", "y"],
                                     "correct_choice": 0}])  # fmt: skip
    video(d / "videos" / "clip.MP4")
    [s] = load("longvideobench", d)
    assert s.video.endswith("videos/clip.MP4") and s.answer == "A"
    assert load_clip(s, num_frames=2).num_frames == 2  # it decodes


def test_longvideobench_hub_parquet_reads_the_validation_split(tmp_path, monkeypatch):
    d = tmp_path / "lvb"
    d.mkdir()
    for split in ("test", "validation"):
        (d / f"{split}-00000-of-00001.parquet").write_bytes(b"PAR1")
    read = []

    def fake_parquet(path):
        read.append(path.name)
        split = path.name.split("-")[0]
        return [{"id": f"{split}_0", "video_path": "v.mp4", "question": "Q?", "option0": "x", "option1": "y",
                 "option2": "N/A", "correct_choice": None if split == "test" else 1}]  # fmt: skip

    monkeypatch.setattr(datasets, "_read_parquet", fake_parquet)
    [s] = load("longvideobench", d)
    assert read == ["validation-00000-of-00001.parquet"] and s.sample_id == "validation_0" and s.answer == "B"

    d = tmp_path / "lvb_json"  # the generic JSON fallback leaves the answerless test file out too
    write_json(d / "lvb_test_wo_gt.json", [{"id": "t", "video_path": "v.mp4", "question": "Q?", "candidates": ["x"]}])
    write_json(d / "val_export.json", [{"id": "v", "video_path": "v.mp4", "question": "Q?", "candidates": ["x", "y"],
                                        "correct_choice": "1"}])  # fmt: skip
    [s] = load("longvideobench", d)
    assert s.sample_id == "v" and s.answer == "B"  # correct_choice is an index by definition, even as a string


def test_missing_pyarrow_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "videomme").mkdir()
    (tmp_path / "videomme" / "test-00000-of-00001.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match=r'needs pyarrow: pip install -e "\.\[eval\]"'):
        load("videomme", tmp_path)


# --------------------------------------------------------------------------- gold answers


def test_mlvu_answer_not_among_options_runs_ungraded_and_digits_are_never_indices(tmp_path):
    d = tmp_path / "mlvu"
    options = ["Catching the drone", "Riding a bike", "Swimming", "Cooking"]
    write_json(d / "json" / "2_needle.json", [
        {"video": "n0.mp4", "question": "What happens?", "candidates": options, "answer": "Swimming",
         "question_type": "needle"},
        {"video": "n1.mp4", "question": "What happens?", "candidates": options,
         "answer": "Catching a flying drone quadcopter", "question_type": "needle"},
    ])  # fmt: skip
    write_json(d / "json" / "4_count.json", [
        {"video": "c0.mp4", "question": "How many?", "candidates": ["1", "2", "4", "5"], "answer": "3",
         "question_type": "count"},
        {"video": "c1.mp4", "question": "How many?", "candidates": ["1", "2", "3"], "answer": "2", "question_type": "count"},
        {"video": "c2.mp4", "question": "How many?", "candidates": ["1", "2", "3"], "answer": 3, "question_type": "count"},
    ])  # fmt: skip
    ok, drone, three, two, three_int = load("mlvu", d)
    assert ok.answer == "C" and ok.answer_issue is None and ok.answer_text == "Swimming"
    assert drone.error is None and drone.answer is None and drone.answer_text == "Catching a flying drone quadcopter"
    assert "'Catching a flying drone quadcopter' is not among the options" in drone.answer_issue
    assert "A. Catching the drone" in drone.prompt  # still asked, with its options
    assert three.answer is None and "'3' is not among the options" in three.answer_issue  # not option index 3 ("D")
    assert two.answer == "B" and three_int.answer == "C"  # digits match option text


# --------------------------------------------------------------------------- MVBench layouts, frames and bounds


def test_mvbench_finds_data0613_clips_and_the_lmms_eval_layout(tmp_path):
    d = tmp_path / "mvbench"
    write_json(d / "json" / "action_sequence.json", [mc("EDXBD.mp4", start=1.0, end=2.0), mc("PUB.mp4", start=1.0, end=2.0),
                                                     mc("SEG.mp4", start=1.0, end=2.0)])  # fmt: skip
    write_json(d / "json" / "action_antonym.json", [mc("123.webm")])
    write_json(d / "json" / "fine_grained_pose.json", [mc("S001_rgb.avi")])
    write_json(d / "json" / "episodic_reasoning.json", [mc("castle_clip_14", start=0.5, end=2.5)])
    video(d / "video" / "data0613" / "star" / "Charades_v1_480" / "EDXBD.mp4")
    video(d / "video" / "star" / "Charades_v1_480" / "PUB.mp4")
    video(d / "star" / "Charades_segment" / "SEG.mp4")
    video(d / "ssv2_video_mp4" / "123.mp4")
    video(d / "nturgbd_convert" / "S001_rgb.mp4")
    video(d / "tvqa" / "video_fps3_hq_segment" / "castle_clip_14.mp4")
    by_id = {s.sample_id: s for s in load("mvbench", d)}
    assert by_id["action_sequence/0"].video.endswith("video/data0613/star/Charades_v1_480/EDXBD.mp4")
    assert by_id["action_sequence/0"].bounds == (1.0, 2.0)
    assert by_id["action_sequence/1"].bounds == (1.0, 2.0)
    seg = by_id["action_sequence/2"]
    assert seg.video.endswith("star/Charades_segment/SEG.mp4") and seg.bounds is None  # already cut to its bounds
    assert by_id["action_antonym/0"].video.endswith("ssv2_video_mp4/123.mp4")
    assert by_id["fine_grained_pose/0"].video.endswith("nturgbd_convert/S001_rgb.mp4")
    er = by_id["episodic_reasoning/0"]
    assert er.video.endswith("tvqa/video_fps3_hq_segment/castle_clip_14.mp4") and er.bounds is None
    assert all(Path(s.video).is_file() for s in by_id.values())
    unbounded = load("mvbench", d, apply_bounds=False)
    assert all(s.bounds is None for s in unbounded)


def test_episodic_reasoning_frame_folder_decodes_at_3_fps_within_bounds(tmp_path):
    d = tmp_path / "mvbench"
    write_json(d / "json" / "episodic_reasoning.json", [mc("clip_a", start=1.0, end=3.0), mc("clip_a")])
    images = frame_folder(d / "video" / "tvqa" / "frames_fps3_hq" / "clip_a", num_frames=12)
    bounded, whole = load("mvbench", d)
    assert Path(bounded.video).is_dir() and bounded.frame_fps == 3.0 and bounded.bounds == (1.0, 3.0)

    clip = load_clip(whole, num_frames=4)  # sampled exactly as a 12-frame video at 3 fps would be
    assert clip.backend == "frames" and clip.fps == 3.0 and clip.total_frames == 12
    assert clip.indices == sample_indices(12, 3.0, num_frames=4)
    assert np.array_equal(clip.frames, images[clip.indices])
    assert clip.metadata().fps == 3.0 and clip.metadata().frames_indices == clip.indices

    clip = load_clip(bounded, num_frames=4)  # frames round(1.0 * 3) = 3 .. round(3.0 * 3) = 9, as VideoChat2
    assert clip.indices == [3 + i for i in sample_indices(7, 3.0, num_frames=4)] == [3, 5, 7, 9]
    assert np.array_equal(clip.frames, images[clip.indices])
    assert all(1.0 <= t <= 3.0 for t in clip.timestamps)
    assert load_clip(bounded, fps=1.0).indices == [3, 6, 9]  # fps sampling within the bounds


def test_frame_folder_order_and_errors(tmp_path):
    d = tmp_path / "f"
    images = frame_folder(d / "unpadded", num_frames=11, digits=1)  # 1.jpg .. 11.jpg: numeric, not text, order
    s = datasets.Sample("b", "benchmark", "x", str(d / "unpadded"), "p", frame_fps=2.0)
    clip = load_clip(s, num_frames=11)
    assert clip.indices == list(range(11)) and np.array_equal(clip.frames, images) and clip.fps == 2.0
    (d / "empty").mkdir()
    with pytest.raises(VideoDecodeError, match="no frame images"):
        load_clip(datasets.Sample("b", "benchmark", "x", str(d / "empty"), "p"), num_frames=2)
    (d / "unpadded" / "5.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError, match="5.jpg.*cannot read frame image"):
        load_clip(s, num_frames=11)
    with pytest.raises(VideoDecodeError, match="lie outside the video"):
        load_clip(datasets.Sample("b", "benchmark", "x", str(d / "unpadded"), "p", bounds=(20.0, 30.0)), num_frames=2)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_start_end_bounds_on_a_video_file(tmp_path, monkeypatch, backend):
    path = video(tmp_path / "v.mp4", num_frames=16, fps=4.0)  # 4 s
    full = load_video(path, num_frames=16)
    if backend == "pyav":
        monkeypatch.setitem(sys.modules, "decord", None)  # decord unavailable: PyAV decodes
    s = datasets.Sample("b", "benchmark", "x", str(path), "p", bounds=(1.0, 2.5))
    clip = load_clip(s, num_frames=3)  # frames 4 .. 10 (round(1.0 * 4), round(2.5 * 4))
    assert clip.indices == [5, 7, 9] and clip.total_frames == 16 and clip.fps == pytest.approx(4.0)
    assert np.abs(clip.frames.astype(int) - full.frames[clip.indices].astype(int)).mean() < 3
    assert load_clip(s, fps=2.0).indices == [4, 6, 8, 10]
    unbounded = datasets.Sample("b", "benchmark", "x", str(path), "p")
    assert load_clip(unbounded, num_frames=3).indices == sample_indices(16, 4.0, num_frames=3)
    with pytest.raises(VideoDecodeError, match="does not exist"):
        load_clip(datasets.Sample("b", "benchmark", "x", str(tmp_path / "gone.mp4"), "p", bounds=(0.0, 1.0)), num_frames=2)


# --------------------------------------------------------------------------- malformed rows, paths


def test_malformed_rows_become_error_samples_null_and_missing_told_apart(tmp_path):
    d = tmp_path / "mvbench"
    write_json(d / "json" / "my_task.json", [
        mc("ok.mp4"),
        {"video": "a.mp4", "question": "Q?", "candidates": None, "answer": "a"},
        {"video": "a.mp4", "question": "Q?", "answer": "a"},
        {"video": "a.mp4", "question": "Q?", "candidates": "a, b", "answer": "a"},
        ["not", "an", "object"],
        mc("a.mp4", start="soon", end=2),
        mc("a.mp4", start=3.0, end=1.0),
    ])  # fmt: skip
    video(d / "video" / "my_task" / "ok.mp4")
    samples = load("mvbench", d)
    assert [s.sample_id for s in samples] == [f"my_task/{i}" for i in range(7)]
    good, null, missing, text, listed, word, backwards = samples
    assert good.error is None and good.answer == "B"
    assert "field 'candidates' is null" in null.error
    assert "missing field 'candidates'; row has ['answer', 'question', 'video']" in missing.error
    assert "must be a non-empty list of options" in text.error
    assert "expected a JSON object, got list" in listed.error
    assert "start/end must both be numbers" in word.error and "0 <= start < end" in backwards.error
    assert all(s.prompt is None and s.task == "my_task" for s in samples[1:])
    with pytest.raises(AnnotationError, match="is null"):
        load_clip(null, num_frames=2)
    assert [s.sample_id for s in load("mvbench", d, prompt_modes="caption")][:2] == ["my_task/ok", "my_task/1"]

    d = tmp_path / "vmme"  # a JSONL line that is not JSON is one error row too
    (d / "videomme").mkdir(parents=True)
    good_row = {"videoID": "v", "question_id": "q1", "question": "Q?", "options": ["A. x", "B. y"], "answer": "A"}
    (d / "videomme" / "test.jsonl").write_text(json.dumps(good_row) + "\n{not json\n" + b"\xff\xfe".decode("latin-1") + "\n")
    first, bad, worse = load("videomme", d)
    assert first.error is None and "line 2 is not valid JSON" in bad.error and "line 3" in worse.error
    assert read_records(d / "videomme" / "test.jsonl")[0] == good_row


def test_video_paths_outside_the_root_are_refused_unless_allowed(tmp_path):
    outside = video(tmp_path / "secret.mp4")
    d = tmp_path / "data" / "mvbench"
    write_json(d / "json" / "my_task.json", [mc("../../../secret.mp4"), mc(str(outside)), mc("./ok.mp4")])
    video(d / "video" / "my_task" / "ok.mp4")
    up, absolute, fine = load("mvbench", d)
    assert "'../../../secret.mp4' resolves outside the benchmark root" in up.error
    assert "allow_outside_root: true" in up.error and "resolves outside" in absolute.error
    assert fine.error is None and Path(fine.video).is_file()
    up, absolute, _ = load("mvbench", d, allow_outside_root=True)
    assert up.error is None and up.video == absolute.video == str(outside.resolve())
