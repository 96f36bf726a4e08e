"""The command line beyond its errors (those are in test_bad_input.py): ``--max-frames``, help on every option,
``--json [FILE]`` meaning the same in every command, and model names resolved alike by every command."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import pytest

from specvlm_eval import bench
from specvlm.cli import _parser
from specvlm.cli import main as cli_main
from cli_helpers import _argparse_error, _error_line, _generate_argv  # noqa: F401
from specvlm.stats import GenerationResult, GenerationStats
from specvlm.zoo import demo

PROMPT = "Describe the video."
#: the smallest bench settings of tests/evaluation/test_bench.py
BENCH_ARGS = ["--max-new-tokens", "6", "--min-video-tokens", "100", "--repeats", "1", "--no-hf-assisted", "--workloads", "caption"]






# -------------------------------------------------------------- --max-frames, help on every option


def test_cli_max_frames(pair, video_file, capsys):
    def video_tokens(*flags):
        assert cli_main(_generate_argv(pair["target"], video_file, "--method", "ar", "--json", *flags)) == 0
        return json.loads(capsys.readouterr().out)["stats"]["visual_tokens"]

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


# ------------------------------------------------------------------------ --json [FILE] everywhere


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


# ------------------------------------------------------------------------------------- model names


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
