"""Benchmark readers: a tiny fake dataset in each published layout -> the right samples.

``build_layouts`` is also used by ``test_eval_cli.py``, ``test_eval_parallel.py`` and ``test_answers_lmms.py`` (real mp4 files, 8 frames of 64x64).
No models are loaded here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specvlm_eval.config import REFERENCE_CAPTION_PROMPT, BenchmarkConfig, ConfigError
from specvlm_eval.datasets import MC_INSTRUCTION, benchmark_root, load_benchmark, read_records
from specvlm.zoo.demo import synthetic_frames
from specvlm.zoo.synthetic import CAPTION_PROMPT, write_dataset
from specvlm.video import write_video

LAYOUTS = ("synthetic", "videodetailcaption", "mvbench", "mlvu", "longvideobench", "videomme")


def _video(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, synthetic_frames(num_frames=8, height=64, width=64, seed=seed), fps=4.0)


def _json(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8")


def build_layouts(root: Path) -> dict[str, Path]:
    """One directory per benchmark, 2 good samples each; longvideobench adds a sample whose video is
    missing and videomme one whose video is corrupt (so 14 samples in benchmark mode, 2 of them broken)."""
    dirs = {name: root / name for name in LAYOUTS}
    write_dataset(dirs["synthetic"], 2, seed=0, num_frames=8, height=64, width=64)

    d = dirs["videodetailcaption"]
    (d / "test.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"video_name": "v_0", "question": "Describe this video in detail.", "answer": "A square moves right."},
        {"video_name": "v_1", "question": "What happens in the video?", "answer": "A square slides."},
    ]))  # fmt: skip
    _video(d / "Test_Videos" / "v_0.mp4", 1)
    _video(d / "Test_Videos" / "v_1.mp4", 2)

    d = dirs["mvbench"]
    _json(d / "json" / "action_sequence.json", [
        {"video": "c0.mp4", "question": "What did the person do first?", "candidates": ["Sat down.", "Opened the door."],
         "answer": "Opened the door.", "start": 0.0, "end": 1.0},
    ])  # fmt: skip
    _json(d / "json" / "my_task.json", [
        {"video": "k0.mp4", "question": "Which way does it move?", "candidates": ["left", "right", "up"], "answer": "right"},
    ])  # fmt: skip
    _video(d / "video" / "star" / "Charades_v1_480" / "c0.mp4", 3)
    _video(d / "video" / "my_task" / "k0.mp4", 4)

    d = dirs["mlvu"]
    _json(d / "json" / "1_plotQA.json", [
        {"video": "p0.mp4", "duration": 2, "question": "What colour is the square?", "candidates": ["red", "blue", "green", "pink"],
         "answer": "blue", "question_type": "plotQA"},
    ])  # fmt: skip
    _json(d / "json" / "4_count.json", [
        {"video": "n0.mp4", "duration": 2, "question": "How many squares?", "candidates": ["1", "2", "3", "4"],
         "answer": "1", "question_type": "count"},
    ])  # fmt: skip
    _video(d / "video" / "1_plotQA" / "p0.mp4", 5)
    _video(d / "video" / "4_count" / "n0.mp4", 6)

    d = dirs["longvideobench"]
    _json(d / "lvb_val.json", [
        {"id": "lvb_0", "video_path": "l0.mp4", "question": "What moves?", "candidates": ["a car", "a square", "a dog"],
         "correct_choice": 1, "question_category": "S2E"},
        {"id": "lvb_1", "video_path": "l1.mp4", "question": "Where is it?", "option0": "top", "option1": "middle",
         "option2": "bottom", "option3": "N/A", "option4": None, "correct_choice": 2},
        {"id": "lvb_missing", "video_path": "gone.mp4", "question": "Any?", "candidates": ["yes", "no"], "correct_choice": 0},
    ])  # fmt: skip
    _video(d / "videos" / "l0.mp4", 7)
    _video(d / "videos" / "l1.mp4", 8)

    d = dirs["videomme"]
    _json(d / "videomme" / "test.json", [
        {"videoID": "vm0", "question_id": "001-1", "duration": "short", "task_type": "Counting Problem",
         "question": "How many objects?", "options": ["A. one", "B. two", "C. three", "D. four"], "answer": "A"},
        {"videoID": "vm1", "question_id": "002-1", "duration": "short", "task_type": "Object Recognition",
         "question": "What shape is it?", "options": ["A. circle", "B. square", "C. star", "D. line"], "answer": "B"},
        {"videoID": "vm_bad", "question_id": "003-1", "duration": "short", "task_type": "Counting Problem",
         "question": "How many?", "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "C"},
    ])  # fmt: skip
    _video(d / "data" / "vm0.mp4", 9)
    _video(d / "data" / "vm1.mp4", 10)
    (d / "data" / "vm_bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # not a decodable video
    return dirs


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    return build_layouts(tmp_path_factory.mktemp("layouts"))


def _load(name: str, root: Path, **kw):
    cfg = BenchmarkConfig(name=name, root=str(root), **kw)
    return load_benchmark(cfg, benchmark_root(cfg, root.parent / "out"))


def test_videodetailcaption_open_ended(layouts):
    samples = _load("videodetailcaption", layouts["videodetailcaption"])
    assert [s.sample_id for s in samples] == ["v_0", "v_1"]
    assert samples[0].prompt == "Describe this video in detail." and samples[0].answer is None and not samples[0].options
    assert samples[0].reference == "A square moves right."
    assert samples[1].video == str((layouts["videodetailcaption"] / "Test_Videos" / "v_1.mp4").resolve())


def test_mvbench_task_folders_and_letters(layouts):
    samples = _load("mvbench", layouts["mvbench"])
    by_id = {s.sample_id: s for s in samples}
    assert set(by_id) == {"action_sequence/0", "my_task/0"}
    seq = by_id["action_sequence/0"]
    assert seq.video.endswith("video/star/Charades_v1_480/c0.mp4") and Path(seq.video).is_file()
    assert seq.answer == "B" and seq.options == ("Sat down.", "Opened the door.") and seq.task == "action_sequence"
    assert seq.prompt.splitlines() == ["What did the person do first?", "A. Sat down.", "B. Opened the door.", MC_INSTRUCTION]
    assert by_id["my_task/0"].video.endswith("video/my_task/k0.mp4") and by_id["my_task/0"].answer == "B"
    only = _load("mvbench", layouts["mvbench"], tasks=["my_task"])
    assert [s.sample_id for s in only] == ["my_task/0"]


def test_mlvu_longvideobench_videomme(layouts):
    mlvu = _load("mlvu", layouts["mlvu"])
    assert [(s.task, s.answer) for s in mlvu] == [("plotQA", "B"), ("count", "A")]
    assert all(Path(s.video).is_file() for s in mlvu)

    lvb = _load("longvideobench", layouts["longvideobench"])
    assert [s.sample_id for s in lvb] == ["lvb_0", "lvb_1", "lvb_missing"]
    assert lvb[0].answer == "B" and lvb[1].options == ("top", "middle", "bottom") and lvb[1].answer == "C"
    assert not Path(lvb[2].video).exists() and lvb[2].video.endswith("videos/gone.mp4")  # becomes an error row at run time

    vmme = _load("videomme", layouts["videomme"])
    assert [s.sample_id for s in vmme] == ["001-1", "002-1", "003-1"]
    assert vmme[1].options == ("circle", "square", "star", "line") and vmme[1].answer == "B"
    assert "B. square" in vmme[1].prompt and vmme[1].video.endswith("data/vm1.mp4")


def test_synthetic_both_modes_and_limit(layouts):
    samples = _load("synthetic", layouts["synthetic"], prompt_modes=["benchmark", "caption"])
    bench = [s for s in samples if s.prompt_mode == "benchmark"]
    caption = [s for s in samples if s.prompt_mode == "caption"]
    assert len(bench) == 2 and len(caption) == 2  # one question per video (rotating kinds), one caption per video
    assert all(s.answer in "ABCD" and len(s.options) == 4 and s.prompt.endswith(". answer with the option .") for s in bench)
    assert bench[0].sample_id.endswith("-q0") and bench[1].sample_id.endswith("-q1")
    assert all(s.prompt == CAPTION_PROMPT and s.reference for s in caption)
    limited = _load("synthetic", layouts["synthetic"], prompt_modes=["benchmark", "caption"], limit=1)
    assert [s.key for s in limited] == [bench[0].key, caption[0].key]


def test_caption_mode_uses_reference_prompt_once_per_video(layouts):
    samples = _load("mvbench", layouts["mvbench"], prompt_modes="caption")
    assert [s.prompt for s in samples] == [REFERENCE_CAPTION_PROMPT] * 2
    assert all(s.answer is None for s in samples)


def test_synthetic_generated_when_missing(tmp_path):
    cfg = BenchmarkConfig(name="synthetic", root=str(tmp_path / "gen"),
                          synthetic={"num_samples": 2, "seed": 3, "num_frames": 8, "height": 32, "width": 32})
    first = load_benchmark(cfg, benchmark_root(cfg, tmp_path / "out"))
    assert (tmp_path / "gen" / "annotations.jsonl").is_file() and len(first) == 2
    again = load_benchmark(cfg, benchmark_root(cfg, tmp_path / "out"))
    assert [s.prompt for s in again] == [s.prompt for s in first]
    assert not list(tmp_path.glob("gen.tmp-*"))


def test_bad_layouts_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        _load("mvbench", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no annotation file .* matches json/\*\.json"):
        _load("mvbench", tmp_path / "empty")
    # a malformed row or an unmatched gold answer no longer stops the listing (tests/evaluation/test_eval_layouts.py)
    _json(tmp_path / "bad" / "json" / "t.json", [{"video": "x.mp4", "question": "q?", "answer": "a"}])
    [bad] = _load("mvbench", tmp_path / "bad")
    assert bad.sample_id == "t/0" and "missing field 'candidates'" in bad.error and bad.prompt is None
    _json(tmp_path / "bad2" / "json" / "t.json", [{"video": "x.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "z"}])
    [ungraded] = _load("mvbench", tmp_path / "bad2")
    assert ungraded.error is None and ungraded.answer is None and "is not among the options" in ungraded.answer_issue
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported annotation format '.txt'"):
        read_records(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="root is required"):
        BenchmarkConfig(name="videomme")


def test_annotations_saved_with_a_byte_order_mark_and_crlf(tmp_path):
    """Editors write UTF-8 with a byte-order mark and CRLF line ends: every row reads as written (the
    first row used to turn into an error row); a UTF-16 file is refused by name."""
    rows = [{"video_name": "v_0", "question": "Describe it.", "answer": "A square."},
            {"video_name": "v_1", "question": "What happens?", "answer": "It slides."}]  # fmt: skip
    bom = b"\xef\xbb\xbf"
    d = tmp_path / "videodetailcaption"
    (d / "Test_Videos").mkdir(parents=True)
    (d / "test.jsonl").write_bytes(bom + b"".join(json.dumps(r).encode() + b"\r\n" for r in rows))
    assert read_records(d / "test.jsonl") == rows
    whole = tmp_path / "rows.json"
    whole.write_bytes(bom + json.dumps(rows, indent=2).replace("\n", "\r\n").encode())
    assert read_records(whole) == rows
    for i in range(2):
        write_video(d / "Test_Videos" / f"v_{i}.mp4", synthetic_frames(8, 64, 64, seed=i), fps=8.0)
    samples = _load("videodetailcaption", d)
    assert [s.error for s in samples] == [None, None] and [s.reference for s in samples] == ["A square.", "It slides."]
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes(json.dumps(rows[0]).encode("utf-16"))
    with pytest.raises(ValueError, match="UTF-16"):
        read_records(utf16)
