"""Hostile inputs: each gives a clear error naming the bad value and what is allowed, before any prefill
(and before any weights load wherever that can be known), and on the command line exit code 2 with one
``specvlm: error:`` line (argparse's own usage + one error line for a malformed flag value), never a
traceback. Also: frames read channels-last whatever their height, ``--max-frames``, help on every
option, and ``--json [FILE]`` meaning the same in every command."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
import transformers

from eval import bench
from specvlm import SpecVLM
from specvlm import engine as engine_module
from specvlm import loading as loading_module
from specvlm.cli import _parser
from specvlm.cli import main as cli_main
from specvlm.stats import GenerationResult, GenerationStats
from specvlm.zoo import demo

PROMPT = "Describe the video."
#: the smallest bench settings of tests/test_bench.py
BENCH_ARGS = ["--max-new-tokens", "6", "--min-video-tokens", "100", "--repeats", "1", "--no-hf-assisted", "--workloads", "caption"]


@pytest.fixture(scope="module")
def pair(checkpoints):
    return checkpoints["llava_onevision"]


@pytest.fixture(scope="module")
def engine(pair):
    return SpecVLM.from_pretrained(pair["target"], draft=pair["draft"])


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if any model weights (or a processor) start to load."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", refuse)


@pytest.fixture
def no_prefill(monkeypatch):
    """Fail the test if the target's prefill starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("the prefill ran before the bad input was reported")

    monkeypatch.setattr(engine_module, "prefill_target", refuse)


def _generate_argv(target, video, *extra):
    return ["generate", "--target", str(target), "--video", str(video), "--prompt", PROMPT, "--max-new-tokens", "2", *extra]


def _error_line(err: str) -> str:
    """The CLI's one-line error (stderr may also hold progress bars)."""
    lines = [line for line in err.splitlines() if line.startswith("specvlm: error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _argparse_error(argv, capsys) -> str:
    """argparse's error line for a malformed flag value (exit code 2)."""
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------ 1. unreadable model.safetensors


def _corrupt_copy(src, dst, kind: str):
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    data = weights.read_bytes()
    if kind == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        weights.write_bytes(np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    else:  # a few bytes: not even a header length
        weights.write_bytes(b"\x01\x02")
    return dst, weights


@pytest.mark.parametrize("kind", ["truncated", "garbage", "tiny"])
@pytest.mark.parametrize("role", ["target", "draft"])
def test_unreadable_safetensors_is_named_before_loading(pair, tmp_path, kind, role, monkeypatch, capsys):
    bad, weights = _corrupt_copy(pair[role], tmp_path / role, kind)
    target, draft = (bad, pair["draft"]) if role == "target" else (pair["target"], bad)
    with monkeypatch.context() as m:  # the file is checked before any weights load
        m.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
        with pytest.raises(ValueError) as info:
            SpecVLM.from_pretrained(str(target), draft=str(draft))
    message = str(info.value)
    assert str(weights) in message and "not a readable safetensors file" in message and role in message, message
    assert cli_main(_generate_argv(target, "clip.mp4", "--draft", str(draft))) == 2
    error = _error_line(capsys.readouterr().err)
    assert str(weights) in error and "not a readable safetensors file" in error


def test_unreadable_safetensors_found_while_loading_names_the_checkpoint(pair, tmp_path):
    """A hub checkpoint is only read once downloaded: the loader's own error names the checkpoint."""
    bad, _ = _corrupt_copy(pair["draft"], tmp_path / "draft", "garbage")
    with pytest.raises(ValueError, match="draft checkpoint .*draft.* not a readable safetensors file"):
        loading_module.load_model(str(bad), None, None, "draft")


# ----------------------------------------------------------------------- 2. a GPU that is not there


# ids: conftest skips tests with a keyword "cuda" (those need a GPU; these need none)
@pytest.mark.parametrize("device_map", ["cuda", "cuda:0", 0, torch.device("cuda", 0), {"": "cuda:0"}],
                         ids=["name", "name:index", "index", "torch.device", "dict"])  # fmt: skip
def test_cuda_device_map_without_a_gpu(pair, device_map, monkeypatch, no_loading):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(pair["target"], device_map=device_map)
    message = str(info.value)
    assert f"device_map={device_map!r}" in message and "no CUDA device is available" in message, message
    assert "'cpu'" in message and "'auto'" in message, message


def test_cuda_device_map_beyond_the_gpus_there_are(pair, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device_map='cuda:3' names CUDA device 3, but this machine has 1"):
        SpecVLM.from_pretrained(pair["target"], device_map="cuda:3")


@pytest.mark.parametrize("device_map", ["gpu", "cuda:x", -1, 1.5])
def test_malformed_device_map(pair, device_map):
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(pair["target"], device_map=device_map)
    message = str(info.value)
    assert f"device_map={device_map!r}" in message and "'auto'" in message and "'cuda:N'" in message, message


@pytest.mark.parametrize("value", ["cuda", "cuda:0", "0"], ids=["name", "name:index", "index"])
def test_cli_cuda_device_map_without_a_gpu(pair, video_file, value, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    assert cli_main(_generate_argv(pair["target"], video_file, "--device-map", value)) == 2
    error = _error_line(capsys.readouterr().err)
    shown = repr(int(value)) if value.isdigit() else repr(value)
    assert f"device_map={shown}" in error and "no CUDA device is available" in error, error


# ----------------------------------------------------------------------------------------- 3. trees


@pytest.mark.parametrize("tree", [[1, 2], [[0], 1], [["a"]], 5])
def test_a_tree_that_is_not_a_list_of_paths(pair, tree):
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(pair["target"], draft=pair["draft"], tree=tree)
    message = str(info.value)
    assert message.startswith("tree=") and "a list of paths" in message and "[[0], [1], [0, 0]]" in message, message


def test_a_json_tree_given_as_text_to_the_api(engine):
    with pytest.raises(ValueError) as info:
        engine.generate(video=np.zeros((2, 8, 8, 3), np.uint8), prompt=PROMPT, tree="[1,2]")
    message = str(info.value)
    assert "unknown tree '[1,2]'" in message and "'chain'" in message and "a list of paths" in message, message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [("[1,2]", ("tree=[1, 2] is not a list of paths", "[[0], [1], [0, 0]]")),
     ("[[0],", ("is not valid JSON paths", "[[0],[1],[0,0]]")),
     ("[]", ("a tree needs at least one path", "[[0], [1], [0, 0]]")),
     ("[[0,1]]", ("path [0, 1] needs its parent [0]",)),
     ("star", ("unknown tree 'star'", "'specvlm-25'", "[[0], [1], [0, 0]]"))],
)  # fmt: skip
def test_cli_bad_tree_names_the_flag_before_loading(pair, video_file, text, fragments, capsys, no_loading):
    error = _argparse_error(_generate_argv(pair["target"], video_file, "--tree", text), capsys)
    assert "argument --tree:" in error, error
    for fragment in fragments:
        assert fragment in error, error


def _wide_tree(siblings: int, depth: int = 1):
    """``siblings`` children under one node at ``depth`` (a chain of best children above it)."""
    return [[0] * d for d in range(1, depth)] + [[0] * (depth - 1) + [r] for r in range(siblings)]


@pytest.mark.parametrize("depth", [1, 3])
def test_more_siblings_than_the_vocabulary(engine, pair, frames, depth, no_prefill):
    vocab = engine.shared_vocab
    too_wide = _wide_tree(vocab + 1, depth)
    with pytest.raises(ValueError) as info:
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, tree=too_wide)
    message = str(info.value)
    assert f"{vocab + 1} siblings" in message and f"vocabulary's {vocab} tokens" in message, message
    with pytest.raises(ValueError, match=f"{vocab + 1} siblings .* vocabulary's {vocab} tokens"):
        SpecVLM.from_pretrained(pair["target"], draft=pair["draft"], tree=too_wide)
    # as many siblings as the vocabulary has tokens pass the checks (and reach the prefill)
    with pytest.raises(AssertionError, match="the prefill ran"):
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, tree=_wide_tree(vocab, depth))


def test_cli_more_siblings_than_the_vocabulary(pair, video_file, capsys):
    wide = json.dumps(_wide_tree(400))  # the tiny checkpoints have 261 tokens
    assert cli_main(_generate_argv(pair["target"], video_file, "--draft", str(pair["draft"]), "--tree", wide)) == 2
    error = _error_line(capsys.readouterr().err)
    assert "400 siblings" in error and "vocabulary's 261 tokens" in error, error


# --------------------------------------------------------------------------- 4. settings of wrong type


@pytest.mark.parametrize(
    ("name", "bad", "needle"),
    [("seed", "a", "seed='a' must be an int"), ("stage1_mass", "0.4", "stage1_mass='0.4' must be a number")],
)
def test_string_settings_are_refused_at_load_and_per_call(pair, engine, frames, name, bad, needle, no_prefill):
    with pytest.raises(ValueError, match=needle):
        SpecVLM.from_pretrained(pair["target"], **{name: bad})
    before = engine.config
    with pytest.raises(ValueError, match=needle):
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, **{name: bad})
    assert engine.config == before


def test_cli_string_settings(pair, video_file, capsys, no_loading):
    error = _argparse_error(_generate_argv(pair["target"], video_file, "--seed", "a"), capsys)
    assert "argument --seed: seed='a' must be an int" in error
    error = _argparse_error(_generate_argv(pair["target"], video_file, "--stage1-mass", "much"), capsys)
    assert "argument --stage1-mass: stage1_mass='much' must be a number" in error


# ------------------------------------------------------------------------------ 5. bench arguments


@pytest.mark.parametrize("extra", [[], ["--target", "t", "--draft", "d"]])
def test_bench_bad_drop_rate_is_refused_before_any_model_loads(extra, capsys, no_loading, monkeypatch):
    monkeypatch.setattr(bench, "bench_pair", lambda *a, **k: pytest.fail("bench ran"))
    assert cli_main(["bench", "--drop-rate", "1.5", *extra]) == 2
    error = _error_line(capsys.readouterr().err)
    assert "drop_rate" in error and "1.5" in error and "[0, 1)" in error, error


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [(["--repeats", "0"], "argument --repeats: 0 must be an integer >= 1"),
     (["--max-new-tokens", "-3"], "argument --max-new-tokens: -3 must be an integer >= 1"),
     (["--min-video-tokens", "many"], "argument --min-video-tokens: 'many' is not an integer")],
)  # fmt: skip
def test_bench_bad_counts_are_refused_by_the_parser(flags, fragment, capsys, no_loading):
    assert fragment in _argparse_error(["bench", *flags], capsys)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [(["--keep", "0"], "--keep 0.0 must be in (0, 1]"), (["--tau", "0.5"], "--tau 0.5 must be a number >= 1"),
     (["--target-shape", "qwen9"], "--target-shape 'qwen9' is not a known shape")],
)  # fmt: skip
def test_bench_cuda_settings_are_checked_first(flags, fragment, capsys, monkeypatch):
    monkeypatch.setattr(bench, "bench_shapes", lambda *a, **k: pytest.fail("bench ran"))
    assert cli_main(["bench", "--device", "cuda", *flags]) == 2
    assert fragment in _error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------- 6. frames of height 3


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
@pytest.mark.parametrize("height", [3, 1])
def test_frames_are_read_channels_last_whatever_their_height(checkpoints, family, height):
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"])
    frames = np.random.default_rng(0).integers(0, 256, size=(4, height, 64, 3), dtype=np.uint8)
    inputs = engine.build_inputs(frames, PROMPT)
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


# ------------------------------------------------------------------- 7. --max-frames, help on every option


def test_max_frames_caps_fps_sampling(engine, video_file, frames):
    assert engine.load(video_file, fps=8).num_frames == 16
    clip = engine.load(video_file, fps=8, max_frames=3)
    assert clip.num_frames == 3 and clip.indices == engine.load(video_file, num_frames=3).indices
    assert engine.load(frames, max_frames=3).num_frames == 3
    assert engine.load(frames, max_frames=30).num_frames == len(frames)
    with pytest.raises(ValueError, match="max_frames must be an integer >= 1, got 0"):
        engine.load(video_file, fps=8, max_frames=0)


def test_cli_max_frames(pair, video_file, capsys):
    def video_tokens(*flags):
        assert cli_main(_generate_argv(pair["target"], video_file, "--method", "ar", "--json", *flags)) == 0
        return json.loads(capsys.readouterr().out)["stats"]["video_tokens"]

    capped = video_tokens("--fps", "8", "--max-frames", "3")
    assert capped == video_tokens("--num-frames", "3") < video_tokens("--fps", "8")
    assert "argument --max-frames: 0 must be an integer >= 1" in _argparse_error(
        _generate_argv(pair["target"], video_file, "--fps", "8", "--max-frames", "0"), capsys
    )


def _parsers(parser: argparse.ArgumentParser, prefix="specvlm"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prefix} {name}")


def test_every_option_of_every_command_has_help():
    seen = []
    for name, parser in _parsers(_parser()):
        for action in parser._actions:
            if action.option_strings or isinstance(action, argparse._SubParsersAction):
                label = f"{name} {'/'.join(action.option_strings) or action.dest}"
                seen.append(label)
                assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), label
    assert "specvlm generate --max-frames" in seen and "specvlm bench --json" in seen and "specvlm demo --json" in seen


# ---------------------------------------------------------------------------- 8. --json [FILE] everywhere


def test_generate_json_on_stdout_or_to_a_file(pair, video_file, tmp_path, capsys):
    argv = _generate_argv(pair["target"], video_file, "--draft", str(pair["draft"]), "--num-frames", "4")
    assert cli_main(argv + ["--json"]) == 0
    out = capsys.readouterr()
    payload = json.loads(out.out)  # nothing but the JSON on stdout
    assert set(payload) == {"text", "token_ids", "stats"} and "wrote" not in out.err
    dest = tmp_path / "result.json"
    assert cli_main(argv + ["--json", str(dest)]) == 0
    out = capsys.readouterr()
    assert json.loads(dest.read_text())["token_ids"] == payload["token_ids"]
    assert "method=specvlm" in out.out and "{" not in out.out.splitlines()[-1]  # the text, as without --json
    assert f"wrote the result as JSON to {dest}" in out.err


def test_json_flag_errors_come_before_any_work(pair, video_file, tmp_path, capsys, no_loading):
    argv = _generate_argv(pair["target"], video_file)
    assert cli_main(argv + ["--stream", "--json"]) == 2
    assert "--stream" in _error_line(capsys.readouterr().err)
    missing = tmp_path / "no" / "such" / "dir" / "out.json"
    for command in (argv, ["bench"], ["demo"]):
        assert cli_main(command + ["--json", str(missing)]) == 2
        error = _error_line(capsys.readouterr().err)
        assert "--json" in error and "does not exist" in error, error
    assert cli_main(argv + ["--json", str(tmp_path)]) == 2
    assert "is a directory" in _error_line(capsys.readouterr().err)


@pytest.fixture(scope="module")
def bench_run(pair):
    """One real ``specvlm bench --json`` (stdout) with the smallest settings: (stdout, stderr, its report)."""
    reports = []
    real = bench.bench_pair

    def keep(*args, **kwargs):
        reports.append(real(*args, **kwargs))
        return reports[-1]

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as m, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        m.setattr(bench, "bench_pair", keep)
        code = cli_main(["bench", "--target", str(pair["target"]), "--draft", str(pair["draft"]), *BENCH_ARGS, "--json"])
    assert code == 0, err.getvalue()
    return out.getvalue(), err.getvalue(), reports[0]


def test_bench_json_on_stdout(bench_run):
    out, err, report = bench_run
    figures = json.loads(out)  # nothing but the JSON on stdout
    assert json.dumps(figures, sort_keys=True) == json.dumps(report.to_dict(), sort_keys=True)
    assert set(figures["runs"]) == set(bench.RUNS) - set(bench.SELF_DRAFT_RUNS)  # the caption's runs
    assert "wrote" not in err


def test_bench_json_to_a_file(pair, bench_run, tmp_path, monkeypatch, capsys):
    _, _, report = bench_run
    monkeypatch.setattr(bench, "bench_pair", lambda *a, **k: report)  # the same figures, without timing again
    dest = tmp_path / "bench.json"
    argv = ["bench", "--target", str(pair["target"]), "--draft", str(pair["draft"]), *BENCH_ARGS, "--json", str(dest)]
    assert cli_main(argv) == 0
    out = capsys.readouterr()
    assert json.dumps(json.loads(dest.read_text()), sort_keys=True) == json.dumps(report.to_dict(), sort_keys=True)
    assert out.out == bench.format_report(report) + "\n"  # the text report, as without --json
    assert f"wrote the figures as JSON to {dest}" in out.err


def _demo_report() -> demo.DemoReport:
    results = {
        m: GenerationResult(token_ids=[5, 6], text="a caption", stats=GenerationStats(method=m, new_tokens=2, decode_s=s))
        for m, s in (("ar", 0.2), ("specvlm", 0.1))
    }
    return demo.DemoReport(model="trained", prompt="Describe.", results=results, identical=True,
                           decode_s={"ar": [0.3, 0.2], "specvlm": [0.1, 0.15]}, warmed_up=True)  # fmt: skip


def test_demo_json_on_stdout_or_to_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: _demo_report())
    assert cli_main(["demo", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["identical"] and figures["methods"]["specvlm"]["decode_speedup_over_ar"] == pytest.approx(2.0)
    assert figures["methods"]["ar"]["token_ids"] == [5, 6] and figures["methods"]["ar"]["decode_s_runs"] == [0.3, 0.2]
    dest = tmp_path / "demo.json"
    assert cli_main(["demo", "--json", str(dest)]) == 0
    out = capsys.readouterr()
    assert json.loads(dest.read_text()) == figures
    assert out.out == "\n".join(_demo_report().lines()) + "\n" and f"to {dest}" in out.err


# ---------------------------------------------------------------------------- 9. one line, whatever goes wrong


def test_argparse_errors_are_one_line(pair, video_file, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(_generate_argv(pair["target"], video_file, "--max-frames", "0"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("specvlm generate: error: argument --max-frames: 0 must be an integer >= 1")
    with pytest.raises(SystemExit):
        cli_main(["demo", "--num-frames", "0"])
    assert capsys.readouterr().err == "specvlm demo: error: argument --num-frames: 0 must be an integer >= 1 (see specvlm demo -h)\n"


@pytest.mark.parametrize("flag", ["--prompt", "--system"])
def test_text_that_is_not_utf8_is_named(pair, video_file, flag, capsys, no_loading):
    """Bytes that are not UTF-8 reach Python as lone surrogates (os.fsdecode); the tokenizer used to end
    in a raw TypeError traceback."""
    bad = "describe " + os.fsdecode(b"\xff\xfe") + " it"
    argv = _generate_argv(pair["target"], video_file)
    argv = [bad if (a == PROMPT and flag == "--prompt") else a for a in argv] + (["--system", bad] if flag == "--system" else [])
    assert cli_main(argv) == 2
    error = _error_line(capsys.readouterr().err)
    assert f"{flag} holds text that is not UTF-8" in error and r"b'\xff' at byte offset 9" in error


def test_zoo_and_tiny_names_work_in_every_command(video_file, tmp_path, monkeypatch, capsys):
    """`specvlm generate` resolves model names as eval configs and the lmms-eval plugin do."""
    from specvlm import cli

    monkeypatch.setattr(cli, "TINY_CACHE", str(tmp_path / "tiny"))
    argv = ["generate", "--video", video_file, "--prompt", PROMPT, "--max-new-tokens", "2", "--num-frames", "4", "--json"]
    assert cli_main(argv + ["--target", "zoo:target", "--draft", "zoo:draft"]) == 0
    assert len(json.loads(capsys.readouterr().out)["token_ids"]) == 2
    assert cli_main(argv + ["--target", "tiny:qwen2_5_vl:0:1"]) == 0
    assert len(json.loads(capsys.readouterr().out)["token_ids"]) == 2
    assert (tmp_path / "tiny" / "qwen2_5_vl-seed0-layers1" / "config.json").is_file()
    assert cli_main(argv + ["--target", "zoo:nope"]) == 2
    error = _error_line(capsys.readouterr().err)
    assert "--target: model reference 'zoo:nope'" in error and "'draft', 'target'" in error
    assert cli_main(argv + ["--target", "tiny:no_such_family"]) == 2
    assert "tiny:<family>[:seed][:layers]" in _error_line(capsys.readouterr().err)


def test_a_checkpoint_path_that_is_not_utf8_is_named(pair, video_file, tmp_path, capsys, no_loading):
    """safetensors opens UTF-8 paths only: said before loading, instead of 'truncated or corrupt'."""
    odd = tmp_path / os.fsdecode(b"target-\xff")
    shutil.copytree(pair["target"], odd)
    assert cli_main(_generate_argv(odd, video_file)) == 2
    error = _error_line(capsys.readouterr().err)
    assert "--target" in error and "not valid UTF-8" in error and "rename the checkpoint directory" in error


def test_output_files_are_checked_writable_before_any_work(pair, video_file, tmp_path, capsys, no_loading):
    """Checked by opening the file (so it holds for root too); the message names the flag and the path."""
    under_a_file = tmp_path / "a_file"
    under_a_file.write_text("x")
    for dest, reason in ((under_a_file / "out.json", "is a file, not a directory"),
                         ("/proc/specvlm-out.json", "cannot be written"), ("", "is an empty path")):  # fmt: skip
        assert cli_main(_generate_argv(pair["target"], video_file, "--json", str(dest))) == 2
        error = _error_line(capsys.readouterr().err)
        assert f"--json {str(dest)!r}" in error and reason in error, error
    fresh = tmp_path / "fresh.json"
    with pytest.raises(AssertionError, match="a model was loaded"):  # the check passes and leaves nothing behind
        cli_main(_generate_argv(pair["target"], video_file, "--json", str(fresh)))
    assert not fresh.exists()


def test_ctrl_c_is_one_line_and_exit_130(pair, video_file, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SpecVLM, "generate", interrupted)
    assert cli_main(_generate_argv(pair["target"], video_file)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("specvlm:")] == [
        "specvlm: interrupted (Ctrl-C); generate stopped"
    ]
