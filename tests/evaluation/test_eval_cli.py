"""The eval CLI end to end on tiny models (float32, CPU): every layout and method, resume, crashes, 2 ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from specvlm_eval.cli import PACKAGED_CONFIGS, config_path, main
from specvlm_eval.config import ConfigError, EvalConfig, load_yaml
from test_eval_datasets import build_layouts

REPO = Path(__file__).resolve().parents[2]
MC_BENCHMARKS = ("synthetic", "mvbench", "mlvu", "longvideobench", "videomme")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    return build_layouts(tmp_path_factory.mktemp("layouts"))


def _write_config(path: Path, checkpoints, family: str, benchmarks: list, methods: list, **generation) -> Path:
    data = {
        "name": "test",
        "model": {"target": str(checkpoints[family]["target"]), "draft": str(checkpoints[family]["draft"]),
                  "torch_dtype": "float32"},
        "generation": {"max_new_tokens": 4, "ignore_eos": True, "warmup": 1, "warmup_max_new_tokens": 2, **generation},
        "benchmarks": benchmarks,
        "methods": methods,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    return path


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_every_layout_every_method(tmp_path, checkpoints, layouts, capsys):
    benchmarks = [{"name": name, "root": str(layouts[name])} for name in layouts]
    # 4-token answers: the drafts start with the first token (by default a lazy draft would skip them)
    methods = ["ar", {"name": "sd", "lazy_draft_after": 0}, {"name": "specvlm", "drop_rate": 0.9, "lazy_draft_after": 0},
               "hf-assisted"]  # fmt: skip
    cfg = _write_config(tmp_path / "exp.yaml", checkpoints, "llava_onevision", benchmarks, methods)
    out = tmp_path / "run"
    assert main([str(cfg), "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "specvlm[pruning=verifier_guided,drop_rate=0.9,tree=chain,lazy_draft_after=0]" in printed and "8 error rows" in printed

    rows = _rows(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 14 * 4  # 14 samples (2 broken) x 4 methods
    errors = [r for r in rows if r["status"] == "error"]
    assert {r["sample_id"] for r in errors} == {"lvb_missing", "003-1"} and len(errors) == 8
    assert all(r["error_type"] == "VideoDecodeError" for r in errors)
    assert any("does not exist" in r["error"] for r in errors if r["sample_id"] == "lvb_missing")
    assert any("vm_bad.mp4" in r["error"] for r in errors if r["sample_id"] == "003-1")

    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["method_name"] for r in ok} == {"ar", "sd", "specvlm", "hf-assisted"}
    ar = {r["sample_id"]: r["token_ids"] for r in ok if r["method"] == "ar"}
    assert all(r["token_ids"] == ar[r["sample_id"]] and len(r["token_ids"]) == 4 for r in ok)  # lossless, same cap
    for r in ok:
        bounded = r["sample_id"] == "action_sequence/0"  # start 0 s, end 1 s at 4 fps: frames 0..4
        assert r["frames"] == (5 if bounded else 8) and r["e2e_s"] > 0 and r["peak_memory_bytes"] > 0
        if r["method_name"] == "specvlm":
            assert 0 < r["kept_visual_tokens"] < r["visual_tokens"] and 0 < r["draft_kv_fraction"] < 1
        if r["method_name"] == "hf-assisted":
            assert r["decode_s"] is None and r["timing_split_observable"] is False

    summary = _summary(out)
    assert summary["errors"]["rows"] == 8 and summary["errors"]["samples"] == 2
    assert set(summary["groups"]) == {f"{name}/benchmark" for name in layouts}
    for group, g in summary["groups"].items():
        for method, m in g["methods"].items():
            assert m["lossless_rate"] == 1.0, (group, method)
            assert m["e2e_speedup_total"] > 0
            if group.split("/")[0] in MC_BENCHMARKS:
                graded = [r for r in ok if f"{r['benchmark']}/{r['prompt_mode']}" == group and r["method"] == method]
                assert m["accuracy_n"] == len(graded) == 2
                assert m["accuracy"] == sum(r["prediction"] == r["answer"] for r in graded) / 2
            else:
                assert m["accuracy"] is None  # open-ended captions have no letter to grade
    assert summary["groups"]["videomme/benchmark"]["methods"]["ar"]["errors"] == 1
    assert any("not observable" in note for note in summary["notes"])
    for plot in ("speedup.png", "tau.png"):
        assert (out / plot).stat().st_size > 1000
    assert EvalConfig.from_dict(load_yaml(out / "config.yaml")).fingerprint() == EvalConfig.from_dict(
        yaml.safe_load(cfg.read_text()) | {"output": str(out)}).fingerprint()  # fmt: skip
    assert "| `hf-assisted` |" in (out / "summary.md").read_text()


def test_resume_after_limit_and_after_a_torn_row(tmp_path, checkpoints, capsys):
    """--limit 1 then a full run, then a crash mid-write: every row exactly once, finished rows untouched."""
    benchmarks = [{"name": "synthetic", "root": str(tmp_path / "synth"), "prompt_modes": ["benchmark", "caption"],
                   "synthetic": {"num_samples": 2, "num_frames": 8, "height": 64, "width": 64}}]  # fmt: skip
    methods = ["ar", {"name": "specvlm", "sweep": {"pruning": ["uniform"], "drop_rate": [0.5, 0.9]}}]
    cfg = _write_config(tmp_path / "exp.yaml", checkpoints, "qwen2_5_vl", benchmarks, methods)
    out = tmp_path / "run"
    args = [str(cfg), "--output", str(out), "--no-progress"]

    assert main(args + ["--limit", "1"]) == 0
    first = _rows(out)
    assert len(first) == 2 * 3 and (tmp_path / "synth" / "annotations.jsonl").is_file()  # generated on demand
    assert main(args) == 0
    full = _rows(out)
    assert len(full) == 4 * 3 and len({r["key"] for r in full}) == 12
    by_key = {r["key"]: r for r in full}
    assert all(by_key[r["key"]] == r for r in first)  # resumed: earlier rows were not rerun
    assert {r["prompt_mode"] for r in full} == {"benchmark", "caption"}
    assert all(r["status"] == "ok" for r in full)
    assert all(g["methods"][m]["lossless_rate"] == 1.0 for g in _summary(out)["groups"].values() for m in g["methods"])
    assert (out / "tau_vs_drop_rate.png").stat().st_size > 1000

    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    torn_key = json.loads(lines[-1])["key"]
    (out / "results.jsonl").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # crash mid-write
    capsys.readouterr()
    assert main(args) == 0
    assert "(12 rows; 1 new)" in capsys.readouterr().out.replace("\n", " ")
    again = _rows(out)
    assert sorted(r["key"] for r in again) == sorted(by_key)
    for r in again:
        if r["key"] == torn_key:
            assert r["time"] > by_key[torn_key]["time"] and r["token_ids"] == by_key[torn_key]["token_ids"]
        else:
            assert r == by_key[r["key"]]

    assert main(args + ["--set", "generation.max_new_tokens=5"]) == 2  # a different experiment: refused
    assert "generation.max_new_tokens: saved 4, now 5" in capsys.readouterr().err

    (out / "summary.json").unlink()
    assert main(["--summarize", str(out), "--no-plots"]) == 0  # rebuilds the summary from the rows alone
    assert _summary(out)["rows"] == 12


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, checkpoints, layouts):
    """torchrun with 2 CPU ranks: shards merged by rank 0 give the same rows, in the same order."""
    benchmarks = [{"name": "synthetic", "root": str(layouts["synthetic"]), "prompt_modes": ["benchmark", "caption"]}]
    cfg = _write_config(tmp_path / "exp.yaml", checkpoints, "llava_onevision", benchmarks,
                        ["ar", {"name": "specvlm", "drop_rate": 0.75}], warmup=0)  # fmt: skip
    single, multi = tmp_path / "single", tmp_path / "multi"
    assert main([str(cfg), "--output", str(single), "--no-progress", "--no-plots"]) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "eval", str(cfg), "--output", str(multi), "--no-progress", "--no-plots"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _rows(single), _rows(multi)
    assert len(a) == 4 * 2
    fields = ("key", "status", "token_ids", "text", "new_tokens", "kept_visual_tokens", "video", "answer", "prediction")
    assert [{f: r.get(f) for f in fields} for r in a] == [{f: r.get(f) for f in fields} for r in b]
    assert {r["rank"] for r in b} == {0, 1} and {r["rank"] for r in a} == {0}
    assert not (multi / "shards").exists()
    sa, sb = _summary(single), _summary(multi)
    for group in sa["groups"]:
        for method, m in sa["groups"][group]["methods"].items():
            mb = sb["groups"][group]["methods"][method]
            assert (m["lossless_rate"], m["accuracy"], m["ok"]) == (mb["lossless_rate"], mb["accuracy"], mb["ok"]) == (1.0, m["accuracy"], 2)
    assert sb["world_size"] == 2


# ---------------------------------------------------------------------------- the command line's edges


def test_packaged_configs_are_found_from_any_directory(tmp_path, monkeypatch):
    """A bare name is looked up in ./configs, then in the configs installed with the package (eval/configs,
    a link to configs/ in the source tree and a copy in the wheel)."""
    monkeypatch.chdir(tmp_path)
    for name in ("tiny", "synthetic"):
        path = config_path(name)
        assert path.is_file() and path.parent == PACKAGED_CONFIGS and path.read_bytes() == (REPO / "configs" / f"{name}.yaml").read_bytes()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text("name: mine\n")
    assert config_path("tiny") == tmp_path / "configs" / "tiny.yaml"  # ./configs first
    with pytest.raises(ConfigError, match="'nope' is neither a file nor one of the configs: .*synthetic, tiny"):
        config_path("nope")


def test_bad_flags_and_bytes_are_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["tiny", "--log-level", "LOUD"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "argument --log-level: invalid choice: 'LOUD'" in err
    assert main(["tiny", "--set", "name=" + os.fsdecode(b"run\xff")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("specvlm-eval: error: --set holds text that is not UTF-8")


def test_ctrl_c_keeps_every_finished_row(tmp_path, checkpoints, monkeypatch, capsys):
    """Ctrl-C in the middle of a run: one line, exit 130, the finished rows on disk; the same command
    then resumes after them. The printed table fits COLUMNS."""
    from specvlm_eval import runner

    benchmarks = [{"name": "synthetic", "root": str(tmp_path / "synth"), "prompt_modes": ["benchmark"],
                   "synthetic": {"num_samples": 2, "num_frames": 8, "height": 64, "width": 64}}]  # fmt: skip
    cfg = _write_config(tmp_path / "exp.yaml", checkpoints, "qwen2_5_vl", benchmarks, ["ar", {"name": "specvlm", "drop_rate": 0.5}],
                        warmup=0)  # fmt: skip
    out = tmp_path / "run"
    args = [str(cfg), "--output", str(out), "--no-progress", "--no-plots"]
    real, done = runner._run_one, []

    def interrupt_the_fourth(*a, **k):  # three runs complete, the fourth is interrupted
        if len(done) < 3:
            done.append(real(*a, **k))
            return done[-1]
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_run_one", interrupt_the_fourth)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"specvlm-eval: interrupted (Ctrl-C); every finished row is kept in {str(out)!r}")
    kept = _rows(out)
    assert [r["key"] for r in kept] == [r["key"] for r in done] and len(kept) == 3

    monkeypatch.setattr(runner, "_run_one", real)
    monkeypatch.setenv("COLUMNS", "70")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "(4 rows; 1 new)" in printed.replace("\n", " ")
    assert max(len(line) for line in printed.splitlines()) <= 70
    assert all(r in _rows(out) for r in kept)


def _summary_for_table() -> dict:
    m = {"ok": 2, "errors": 0, "tau": 3.21, "tau_minus_1": 2.21, "decode_speedup_total": 1.5, "decode_speedup_mean": 1.4,
         "e2e_speedup_total": 1.2, "ttft_s_mean": 0.1, "tpot_s": 0.01, "tokens_per_s": 100.0, "draft_kv_fraction_mean": 0.1,
         "peak_memory_bytes_max": 2**30, "lossless_rate": 1.0, "accuracy": 0.5}  # fmt: skip
    methods = {"ar": m, "specvlm[pruning=verifier_guided,drop_rate=0.9,tree=chain,lazy_draft_after=0]": m,
               "specvlm[pruning=uniform,drop_rate=0.5,tree=chain]": m}  # fmt: skip
    return {"name": "tiny", "groups": {"synthetic/benchmark": {"samples": 2, "methods": methods}}}


def test_the_summary_table_fits_the_terminal():
    """Columns give way in the stated order (eval.report.DROP_FIRST, the method column folding, DROP_THEN);
    method, ok/err, tau and decode x always stay; without a width every column is there."""
    import io

    from rich.console import Console

    from specvlm_eval import report

    summary = _summary_for_table()

    def render(width):
        [table] = report.rich_tables(summary, width=width)
        console = Console(width=width or 400, record=True, file=io.StringIO())
        console.print(table)
        text = console.export_text()
        return [c.header for c in table.columns], table, text

    headers, _, text = render(None)
    assert headers == ["method"] + [h for h, _, _ in report.COLUMNS] and max(map(len, text.splitlines())) > 190
    for width in (190, 160, 120, 100, 80, 60, 40):
        headers, table, text = render(width)
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width, width
        assert {"method", "ok/err", "tau", "decode x"} <= set(headers)
        left_out = [h for h, _, _ in report.COLUMNS if h not in headers]
        order = list(report.DROP_FIRST + report.DROP_THEN)
        assert set(left_out) == set(order[: len(left_out)]), (width, left_out)  # a prefix of the stated order
        assert (table.caption is None) == (not left_out)
        if left_out:
            assert ", ".join(order[: len(left_out)]) in table.caption
    headers, _, text = render(170)  # the first four columns give way, every method key stays whole
    assert headers == ["method", "ok/err", "tau", "decode x", "e2e x", "TTFT ms", "TPOT ms", "draft KV", "lossless", "accuracy"]
    assert "specvlm[pruning=verifier_guided,drop_rate=0.9,tree=chain,lazy_draft_after=0]" in text
    headers, _, _ = render(60)
    assert headers == ["method", "ok/err", "tau", "decode x"]


def _stub_lmms_eval(monkeypatch):
    """specvlm_eval.lmms imported over a stand-in for lmms-eval's two base modules (lmms-eval itself lives in an
    environment of its own); the real module comes back after the test."""
    import importlib
    import types

    import specvlm_eval as eval_package

    instance, model = types.ModuleType("lmms_eval.api.instance"), types.ModuleType("lmms_eval.api.model")
    instance.GenerationResult = instance.TokenCounts = object
    model.lmms = type("lmms", (), {"__init__": lambda self: None})
    for name, module in (("lmms_eval", types.ModuleType("lmms_eval")), ("lmms_eval.api", types.ModuleType("lmms_eval.api")),
                         ("lmms_eval.api.instance", instance), ("lmms_eval.api.model", model)):  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "specvlm_eval.lmms", raising=False)
    monkeypatch.delattr(eval_package, "lmms", raising=False)
    return importlib.import_module("specvlm_eval.lmms")


def test_a_plugin_refusal_reaches_lmms_evals_exit_status(monkeypatch):
    """lmms-eval's cli_evaluate catches every Exception and exits 0; inside it a refusal becomes
    SystemExit (exit status 1, one line). Called from anywhere else, the plugin raises PluginError."""
    plugin = _stub_lmms_eval(monkeypatch)
    namespace = {"__name__": "lmms_eval.__main__"}
    exec("def cli_evaluate(run):\n    try:\n        run()\n    except Exception:\n        return 'swallowed'\n", namespace)
    refusals = [lambda: plugin.SpecVLMModel(pretrained="zoo:target", batch_size=2),
                lambda: plugin.SpecVLMModel(pretrained="zoo:target", method="tree"),
                lambda: plugin.SpecVLMModel(pretrained=str(REPO / "no-such-checkpoint"))]  # fmt: skip
    for refuse in refusals:
        with pytest.raises(plugin.PluginError if refuse is not refusals[-1] else ValueError):
            refuse()
        with pytest.raises(SystemExit) as info:
            namespace["cli_evaluate"](refuse)
        assert str(info.value.code).startswith("specvlm (lmms-eval model): error: ") and "\n" not in str(info.value.code)
    with pytest.raises(SystemExit, match="log-likelihood tasks are not supported"):
        namespace["cli_evaluate"](lambda: plugin.SpecVLMModel.loglikelihood(None, []))
