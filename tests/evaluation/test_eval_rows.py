"""Rows that stand alone, one writer per directory, and a bad --output, end to end on tiny models (CPU).

A (run time): malformed annotation rows and video paths outside the root become error rows, an MLVU gold
answer that matches no option runs ungraded, a frame folder runs within its bounds. B: every row records its
prompt, options, gold answer and the settings that produced it (the checkpoint's generation config included);
a resume compares them, also without config.yaml. C: a lock held for the run refuses a second run and
--summarize; --summarize rewrites no results; stale locks are taken over; unreadable lines are skipped with
the file and line. D: an unusable --output is a one-line error (exit 2) before any model loads.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from specvlm_eval import results, runner
from specvlm_eval.cli import main
from test_eval_layouts import frame_folder, mc, video, write_json

REPO = Path(__file__).resolve().parents[2]
NEEDLE = ["Catching the drone", "Riding a bike", "Swimming"]


def build_data(root: Path) -> dict[str, Path]:
    """mvbench: a frame folder with bounds, a row with a null field, one with a path outside the root; mlvu: a
    good row and one whose gold answer matches none of its options."""
    mv, ml = root / "mvbench", root / "mlvu"
    write_json(mv / "json" / "episodic_reasoning.json", [mc("clip_a", start=1.0, end=3.0)])
    frame_folder(mv / "video" / "tvqa" / "frames_fps3_hq" / "clip_a", num_frames=12)
    write_json(mv / "json" / "my_task.json", [
        {"video": "k0.mp4", "question": "Q?", "candidates": None, "answer": "a"},
        mc("../../../elsewhere.mp4"),
    ])  # fmt: skip
    write_json(ml / "json" / "2_needle.json", [
        {"video": "n0.mp4", "question": "What?", "candidates": NEEDLE, "answer": "Swimming", "question_type": "needle"},
        {"video": "n0.mp4", "question": "What else?", "candidates": NEEDLE,
         "answer": "Catching a flying drone quadcopter", "question_type": "needle"},
    ])  # fmt: skip
    video(ml / "video" / "2_needle" / "n0.mp4", seed=2)
    return {"mvbench": mv, "mlvu": ml}


def write_config(path: Path, target: str, draft: str, data: dict[str, Path], **generation) -> Path:
    config = {
        "name": "rows",
        "model": {"target": str(target), "draft": str(draft), "torch_dtype": "float32"},
        "generation": {"max_new_tokens": 3, "ignore_eos": True, "warmup": 0, **generation},
        "benchmarks": [{"name": "mvbench", "root": str(data["mvbench"]), "num_frames": 2},
                       {"name": "mlvu", "root": str(data["mlvu"]), "num_frames": 2}],
        "methods": ["ar", {"name": "specvlm", "drop_rate": 0.5}],
        "plots": False,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def rows_of(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, checkpoints):
    """(config path, output directory) of one finished run; tests copy the directory before changing it."""
    root = tmp_path_factory.mktemp("rows")
    family = checkpoints["llava_onevision"]
    cfg = write_config(root / "exp.yaml", family["target"], family["draft"], build_data(root / "data"))
    out = root / "run"
    assert main([str(cfg), "--output", str(out), "--no-progress"]) == 0
    return cfg, out


def copy_run(finished, tmp_path: Path) -> tuple[Path, Path]:
    cfg, out = finished
    dst = tmp_path / "run"
    shutil.copytree(out, dst)
    return cfg, dst


def no_models(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(runner.models, "load_engine", fail)


# --------------------------------------------------------------------------- A at run time, B: what a row records


def test_rows_record_prompt_gold_and_settings_and_bad_rows_become_error_rows(finished):
    cfg, out = finished
    rows = rows_of(out)
    assert len(rows) == 5 * 2  # 3 mvbench + 2 mlvu samples x 2 methods
    assert not (out / results.LOCK).exists()  # released at the end

    frames = rows["mvbench/benchmark/episodic_reasoning/0|ar"]
    assert frames["status"] == "ok" and frames["frames"] == 2 and frames["bounds"] == [1.0, 3.0]
    null = rows["mvbench/benchmark/my_task/0|ar"]
    assert null["status"] == "error" and null["error_type"] == "AnnotationError" and "'candidates' is null" in null["error"]
    outside = rows["mvbench/benchmark/my_task/1|ar"]
    assert outside["status"] == "error" and "resolves outside the benchmark root" in outside["error"]

    graded = rows["mlvu/benchmark/2_needle/0|ar"]
    ungraded = rows["mlvu/benchmark/2_needle/1|specvlm[pruning=verifier_guided,drop_rate=0.5,tree=chain]"]
    assert graded["answer"] == "C" and graded["answer_text"] == "Swimming" and graded["correct"] in (True, False)
    assert graded["options"] == NEEDLE and graded["prompt"].splitlines()[:2] == ["What?", "A. Catching the drone"]
    assert ungraded["status"] == "ok" and ungraded["answer"] is None and ungraded["correct"] is None
    assert ungraded["answer_text"] == "Catching a flying drone quadcopter"
    assert "not among the options" in ungraded["answer_issue"]

    for row in rows.values():
        assert row["model"]["target"].endswith("target") and row["model"]["torch_dtype"] == "float32"
        assert row["video_sampling"] == {"num_frames": 2, "fps": None, "max_frames": None, "apply_bounds": True}
        g = row["generation"]
        assert g["do_sample"] is False and g["max_new_tokens"] == 3 and g["eos_token_id"] is None  # ignore_eos
        assert g["repetition_penalty"] == 1.0 and {"temperature", "top_k", "top_p", "no_repeat_ngram_size"} <= set(g)
    summary = json.loads((out / "summary.json").read_text())
    needle = summary["groups"]["mlvu/benchmark"]["methods"]["ar"]
    assert needle["accuracy_n"] == 1 and needle["ungraded"] == 1 and needle["ok"] == 2
    assert any("1 sample(s) have a gold answer that matches none" in n for n in summary["notes"])
    assert summary["errors"]["rows"] == 4


def test_resume_without_config_yaml_cannot_mix_settings(finished, tmp_path, capsys):
    cfg, out = copy_run(finished, tmp_path)
    (out / "config.yaml").unlink()
    args = [str(cfg), "--output", str(out), "--no-progress"]
    assert main(args + ["--set", "generation.max_new_tokens=4"]) == 2
    assert "generation.max_new_tokens: recorded 3, now 4" in capsys.readouterr().err
    assert main(args + ["--set", "benchmarks.1.num_frames=5"]) == 2
    assert "video_sampling.num_frames: recorded 2, now 5" in capsys.readouterr().err
    assert not (out / "config.yaml").exists()  # a refused run leaves nothing behind
    before = rows_of(out)
    assert main(args) == 0 and rows_of(out) == before  # the same settings resume (nothing new to run)
    assert (out / "config.yaml").is_file()


def test_resume_compares_the_checkpoint_generation_config(tmp_path, checkpoints, capsys):
    target = tmp_path / "target"
    shutil.copytree(checkpoints["llava_onevision"]["target"], target)
    gen_path = target / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    gen_path.write_text(json.dumps({**gen, "repetition_penalty": 1.05}))
    cfg = write_config(tmp_path / "exp.yaml", target, checkpoints["llava_onevision"]["draft"], build_data(tmp_path / "data"))
    args = [str(cfg), "--output", str(tmp_path / "run"), "--no-progress", "--benchmarks", "mlvu"]
    assert main(args + ["--limit", "1"]) == 0
    assert all(r["generation"]["repetition_penalty"] == 1.05 for r in rows_of(tmp_path / "run").values())
    gen_path.write_text(json.dumps(gen))  # the checkpoint changed under the same path
    assert main(args) == 2
    assert "generation.repetition_penalty: recorded 1.05, now 1.0" in capsys.readouterr().err


# --------------------------------------------------------------------------- C: one writer per directory


def test_a_second_run_is_refused_while_the_first_holds_the_directory(finished, tmp_path, monkeypatch, capsys):
    cfg, out = copy_run(finished, tmp_path)
    (out / "results.jsonl").write_text((out / "results.jsonl").read_text().split("\n", 3)[3])  # rows still to run
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    no_models(monkeypatch)
    with results.RunLock(out, "run"):  # the first run, still writing
        assert main([str(cfg), "--output", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"in use by specvlm-eval run (pid {os.getpid()} on host {socket.gethostname()}" in err
        assert str(out / results.LOCK) in err and len(err.strip().splitlines()) == 1
        assert main(["--summarize", str(out)]) == 2  # --summarize too
        assert "in use by specvlm-eval run" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != results.LOCK}
    assert after == before  # neither touched results.jsonl, config.yaml or the summary


def test_a_lock_held_by_another_process_is_refused_and_released_when_it_exits(finished, tmp_path, monkeypatch, capsys):
    _, out = copy_run(finished, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import importlib.util as u, sys; spec = u.spec_from_file_location('r', sys.argv[2]); "
         "r = u.module_from_spec(spec); spec.loader.exec_module(r); lock = r.RunLock(sys.argv[1]).acquire(); "
         "print('locked', flush=True); sys.stdin.read()", str(out), str(REPO / "eval" / "results.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip  (eval/results.py alone: no torch import, so the child starts in a fraction of a second)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["--summarize", str(out), "--no-plots"]) == 2
        assert f"(pid {holder.pid} on host {socket.gethostname()}" in capsys.readouterr().err
    finally:
        holder.communicate("")  # it exits without releasing: the kernel drops its flock
    assert (out / results.LOCK).exists()
    assert main(["--summarize", str(out), "--no-plots"]) == 0  # a dead holder's lock is taken over
    assert not (out / results.LOCK).exists()


def test_summarize_rewrites_no_results(finished, tmp_path):
    _, out = copy_run(finished, tmp_path)
    path = out / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(reversed(lines)))  # not the order a merge writes
    before, inode = path.read_bytes(), path.stat().st_ino
    with results.RowWriter(path) as writer:  # a writer appending while the summary is rebuilt keeps its rows
        assert main(["--summarize", str(out), "--no-plots"]) == 0
        writer.write({"key": "mlvu/benchmark/late|ar", "status": "error", "benchmark": "mlvu", "prompt_mode": "benchmark",
                      "sample_id": "late", "method": "ar"})  # fmt: skip
    assert path.stat().st_ino == inode and path.read_bytes().startswith(before)
    assert "mlvu/benchmark/late|ar" in path.read_text()
    assert json.loads((out / "summary.json").read_text())["rows"] == len(lines)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_dead_process_is_taken_over(finished, tmp_path, caplog):
    cfg, out = copy_run(finished, tmp_path)
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "purpose": "run", "started": "yesterday"}
    (out / results.LOCK).write_text(json.dumps(stale))
    assert main([str(cfg), "--output", str(out), "--no-progress"]) == 0
    assert f"taking over the lock of specvlm-eval run (pid {stale['pid']}" in caplog.text
    assert not (out / results.LOCK).exists()


def test_without_flock_the_lock_file_decides(tmp_path, monkeypatch):
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    path = tmp_path / results.LOCK
    path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    lock = results.RunLock(tmp_path).acquire()  # the stale lock is taken over
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(results.DirectoryLocked, match=f"pid {os.getpid()} on host"):
        results.RunLock(tmp_path, "summarize").acquire()  # ours is alive
    lock.release()
    assert not path.exists()
    path.write_text(json.dumps({"pid": 1, "host": "another-host", "purpose": "run", "started": "now"}))
    with pytest.raises(results.DirectoryLocked, match="on another host: remove the lock file if that run is over"):
        results.RunLock(tmp_path).acquire()


def test_unreadable_lines_are_skipped_naming_file_and_line(finished, tmp_path, caplog):
    cfg, out = copy_run(finished, tmp_path)
    path = out / "results.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2] + [b'{"key": "x\xff\xfe"}\n', b"garbage {\n"] + lines[2:]))
    assert main([str(cfg), "--output", str(out), "--no-progress"]) == 0  # resumes: nothing to rerun
    assert f"{path}:3: skipping a line that is not UTF-8 text" in caplog.text
    assert f"{path}:4: skipping a line that is torn or not valid JSON" in caplog.text
    assert rows_of(out) == {r["key"]: r for r in map(json.loads, lines)}
    assert (out / "results.jsonl.dropped").read_bytes() == b'{"key": "x\xff\xfe"}\ngarbage {\n'


# --------------------------------------------------------------------------- D: --output


def _refused_output(args: list[str], capsys, message: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_output_that_is_a_file_or_under_a_file_is_a_one_line_error(finished, tmp_path, monkeypatch, capsys):
    cfg, _ = finished
    no_models(monkeypatch)
    (tmp_path / "file.txt").write_text("x")
    base = [str(cfg), "--no-progress", "--output"]
    _refused_output(base + [str(tmp_path / "file.txt")], capsys, "is an existing file, not a directory")
    _refused_output(base + [str(tmp_path / "file.txt" / "run")], capsys, "file.txt' is a file, not a directory")
    _refused_output(base + [str(tmp_path / "file.txt" / "a" / "b")], capsys, "file.txt' is a file, not a directory")
    assert (tmp_path / "file.txt").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_is_a_one_line_error(finished, tmp_path, monkeypatch, capsys):
    cfg, _ = finished
    no_models(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _refused_output([str(cfg), "--no-progress", "--output", str(ro)], capsys, "is not writable")
        _refused_output([str(cfg), "--no-progress", "--output", str(ro / "run")], capsys,
                        "cannot be created: Permission denied")  # fmt: skip
    finally:
        ro.chmod(0o755)


def test_unwritable_output_is_a_one_line_error_also_as_root(finished, tmp_path, monkeypatch, capsys):
    """The same refusals with the permission failures simulated (root bypasses real ones)."""
    cfg, _ = finished
    no_models(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_touch = Path.touch

    def touch(self, *a, **k):  # the output check writes a probe file: a read-only directory refuses it
        if self.parent == ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_touch(self, *a, **k)

    monkeypatch.setattr(Path, "touch", touch)
    _refused_output([str(cfg), "--no-progress", "--output", str(ro)], capsys, "is not writable")
    monkeypatch.setattr(Path, "touch", real_touch)

    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    _refused_output([str(cfg), "--no-progress", "--output", str(tmp_path / "new")], capsys,
                    "cannot be created: Permission denied")  # fmt: skip


def test_a_divergence_from_ar_is_classified_in_the_row_and_the_summary(tmp_path, checkpoints, monkeypatch):
    """A method row whose tokens differ from ar's gets a verdict from the target's own scores: here a
    token the target did not choose (a bug in the making) is a mismatch, counted in the summary."""
    family = checkpoints["llava_onevision"]
    data = tmp_path / "data"
    ml = data / "mlvu"
    write_json(ml / "json" / "2_needle.json", [
        {"video": "n0.mp4", "question": "What?", "candidates": NEEDLE, "answer": "Swimming", "question_type": "needle"},
    ])  # fmt: skip
    video(ml / "video" / "2_needle" / "n0.mp4", seed=2)
    cfg = write_config(tmp_path / "exp.yaml", family["target"], family["draft"], {"mvbench": ml, "mlvu": ml})
    config = yaml.safe_load(cfg.read_text())
    config["benchmarks"] = [b for b in config["benchmarks"] if b["name"] == "mlvu"]
    cfg.write_text(yaml.safe_dump(config))
    real = runner.run_method

    def corrupted(engine, spec, inputs, max_new_tokens, devices):
        out = real(engine, spec, inputs, max_new_tokens, devices)
        if spec.name == "specvlm":
            ids = list(out["token_ids"])
            ids[1] = (ids[1] + 1) % engine.shared_vocab
            out["token_ids"] = ids
        return out

    monkeypatch.setattr(runner, "run_method", corrupted)
    out = tmp_path / "run"
    assert main([str(cfg), "--output", str(out), "--no-progress"]) == 0
    rows = rows_of(out)
    (ar,) = [r for r in rows.values() if r["method"] == "ar"]
    (spec,) = [r for r in rows.values() if r["method"] != "ar"]
    assert "divergence" not in ar
    verdict = spec["divergence"]
    assert (verdict["verdict"], verdict["position"], verdict["expected"]) == ("mismatch", 1, ar["token_ids"][1])
    assert verdict["margin"] > verdict["tolerance"]
    summary = json.loads((out / "summary.json").read_text())
    method = next(m for g in summary["groups"].values() for k, m in g["methods"].items() if k != "ar")
    assert (method["mismatches"], method["near_ties"], method["lossless_rate"]) == (1, 0, 0.0)
    assert method["divergences"][0]["verdict"] == "mismatch"
    assert "0 near-tie(s) of the target's scores, 1 mismatch(es)" in (out / "summary.md").read_text()


def test_a_launcher_that_started_one_of_several_processes_is_named(monkeypatch, caplog):
    """accelerate's single-process launcher (no GPUs, no --multi_cpu) sets MASTER_ADDR when asked for several
    processes but no WORLD_SIZE: the run warns, naming torchrun; torchrun's own environment does not warn."""
    from specvlm_eval import distributed

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with caplog.at_level("WARNING", logger="specvlm_eval.distributed"):
        assert distributed.current().world_size == 1
    assert "torchrun --nproc_per_node N" in caplog.text
    caplog.clear()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with caplog.at_level("WARNING", logger="specvlm_eval.distributed"):
        assert distributed.current() == distributed.Rank(rank=1, world_size=2, local_rank=1)
    assert caplog.text == ""
