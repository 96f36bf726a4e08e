"""Evaluation as data parallel x tensor parallel: ``torchrun --nproc_per_node N -m eval CONFIG --tp T`` runs N / T
groups of T ranks, each group answering its share of the samples with one target sharded over its ranks, each row
written once (by the group's first rank); the rows equal a one-process run's. Bad ``--tp`` values are one-line
errors before anything loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from specvlm_eval import distributed
from specvlm_eval.cli import _parser, flag_overrides, main
from specvlm_eval.config import ConfigError, EvalConfig
from test_eval_datasets import build_layouts

REPO = Path(__file__).resolve().parents[2]
FIELDS = ("key", "status", "token_ids", "text", "new_tokens", "kept_video_tokens", "kept_visual_tokens", "video", "answer",
          "prediction")  # the kept tokens under either name a row may give them
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _torchrun(nproc: int | None, argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc -m eval ARGV`` (``nproc`` None: ``python -m eval ARGV``, one process), with
    the library's own defaults (this test process runs with ``never_slower=False``, tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    launch = ["torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m"] if nproc else []
    cmd = [sys.executable, "-m", *launch, "eval", *argv, "--no-progress", "--no-plots", "--log-level", "INFO"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _view(rows: list[dict], fields=FIELDS) -> list[dict]:
    return [{f: r.get(f) for f in fields} for r in rows]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, checkpoints):
    """2 synthetic videos x 2 prompt modes, ar + a chain and a 25-node tree; the never-slower guard is off, so that
    what each answer drafts (and keeps) does not depend on the machine's timings."""
    root = tmp_path_factory.mktemp("eval-tp")
    layouts = build_layouts(root / "layouts")
    pair = checkpoints["llava_onevision"]
    data = {
        "name": "tp",
        "model": {"target": str(pair["target"]), "draft": str(pair["draft"]), "torch_dtype": "float32"},
        "generation": {"max_new_tokens": 6, "ignore_eos": True, "warmup": 0},
        "benchmarks": [{"name": "synthetic", "root": str(layouts["synthetic"]), "prompt_modes": ["benchmark", "caption"]}],
        "methods": ["ar", {"name": "specvlm", "drop_rate": 0.75, "never_slower": False},
                    {"name": "specvlm", "tree": "specvlm-25", "never_slower": False}],
    }  # fmt: skip
    cfg = root / "exp.yaml"
    cfg.write_text(yaml.safe_dump(data))
    single = root / "single"
    _torchrun(None, [str(cfg), "--output", str(single)], root)
    return {"root": root, "config": cfg, "rows": _rows(single)}


@pytest.mark.slow
def test_one_tp_group_of_two_ranks_equals_one_process_and_resumes(experiment):
    """``torchrun --nproc_per_node 2 --tp 2``: one group, the target sharded over ranks 0 and 1, rank 0 writing
    every row; started on the first sample of each group and resumed over the rest, its rows equal one process's."""
    root, cfg = experiment["root"], str(experiment["config"])
    out = root / "tp2"
    first = _torchrun(2, [cfg, "--output", str(out), "--tp", "2", "--limit", "1"], root)
    for r in (0, 1):
        assert f"rank {r}: the target is sharded over ranks [0, 1] (group 0 of 1)" in first.stderr
    assert len(_rows(out)) == 2 * 3
    again = _torchrun(2, [cfg, "--output", str(out), "--tp", "2"], root)  # resumes: only the missing rows run
    assert "rank 0/2 (group 0 of 1): 6 rows to run, 6 already done" in again.stderr
    rows = _rows(out)
    assert _view(rows) == _view(experiment["rows"])
    assert {r["rank"] for r in rows} == {0} and not (out / "shards").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["world_size"], summary["tp_size"]) == (2, 2)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["tp_size"] == 2


@pytest.mark.slow
def test_two_groups_of_one_rank_equal_one_process(experiment):
    """``--tp 1`` (the default) under 2 processes: two groups of one rank, the data-parallel run of before."""
    root = experiment["root"]
    out = root / "dp2"
    proc = _torchrun(2, [str(experiment["config"]), "--output", str(out), "--tp", "1"], root)
    rows = _rows(out)
    assert _view(rows) == _view(experiment["rows"])
    assert {r["rank"] for r in rows} == {0, 1}
    assert "sharded over" not in proc.stderr


@pytest.mark.slow
def test_two_groups_of_two_ranks_on_the_tiny_config(tmp_path):
    """4 processes, ``--tp 2``: groups [0, 1] and [2, 3] each shard the target and answer half of the samples; the
    rows equal one process's. Then one group's rows are lost and the rerun redoes only them, though the other group
    has nothing left to run (it still loads its shards: building the mesh takes every process)."""
    tiny = ["tiny", "--limit", "1"]
    _torchrun(None, [*tiny, "--output", str(tmp_path / "one")], tmp_path)
    out = tmp_path / "tp2x2"
    proc = _torchrun(4, [*tiny, "--output", str(out), "--tp", "2"], tmp_path)
    for r in (0, 1):
        assert f"rank {r}: the target is sharded over ranks [0, 1] (group 0 of 2)" in proc.stderr
    for r in (2, 3):
        assert f"rank {r}: the target is sharded over ranks [2, 3] (group 1 of 2)" in proc.stderr
    # the tiny config keeps the never-slower guard, which times each answer, so what a method kept may differ
    # between runs; the tokens may not
    fields = tuple(f for f in FIELDS if not f.startswith("kept_"))
    single, rows = _rows(tmp_path / "one"), _rows(out)
    assert _view(rows, fields) == _view(single, fields)
    writers = {r["key"].split("|")[0]: r["rank"] for r in rows}  # sample 0 to group 0, sample 1 to group 1
    assert writers == {"synthetic/benchmark/000000-q0": 0, "synthetic/caption/000000": 2}

    kept = [r for r in rows if r["rank"] == 0]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    again = _torchrun(4, [*tiny, "--output", str(out), "--tp", "2"], tmp_path)
    assert "rank 2/4 (group 1 of 2): 7 rows to run, 0 already done" in again.stderr
    assert "rank 0/4 (group 0 of 2): 0 rows to run, 7 already done" in again.stderr
    assert _view(_rows(out), fields) == _view(single, fields)


# ---------------------------------------------------------------------------- groups, and --tp refused before loading


def test_groups_deal_samples_and_one_rank_per_group_writes():
    ranks = [distributed.Rank(rank=r, world_size=8, local_rank=r % 4, tp_size=4) for r in range(8)]
    assert [(x.group, x.groups, x.writes) for x in ranks] == [(r // 4, 2, r % 4 == 0) for r in range(8)]
    assert [i for i in range(6) if ranks[5].owns(i)] == [1, 3, 5]
    assert [i for i in range(6) if ranks[0].owns(i)] == [0, 2, 4]
    alone = distributed.Rank(rank=1, world_size=2)
    assert (alone.group, alone.groups, alone.writes, alone.owns(1), alone.owns(0)) == (1, 2, True, True, False)


@pytest.mark.parametrize(
    ("tp", "world", "needles"),
    [
        (2, 1, ("--tp 2", "one process", "torchrun --nproc_per_node 2 -m specvlm_eval CONFIG --tp 2")),
        (3, 4, ("--tp 3", "WORLD_SIZE=4", "1, 2, 4", "torchrun --nproc_per_node 3")),
        (4, 2, ("--tp 4", "WORLD_SIZE=2", "1, 2")),
        (0, 2, ("model.tp_size=0", ">= 1")),
        (-1, 2, ("model.tp_size=-1", ">= 1")),
        (1.5, 2, ("model.tp_size=1.5", ">= 1")),
        (True, 2, ("model.tp_size=True", ">= 1")),
    ],
)
def test_a_tp_that_cannot_split_the_processes_is_one_line(tp, world, needles):
    with pytest.raises(ValueError) as err:
        distributed.check_tp(tp, world)
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


def test_tp_from_the_environment(monkeypatch, caplog):
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # accelerate asked for several processes, started one
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(ValueError, match=r"accelerate launch started one process.*torchrun --nproc_per_node 2"):
        distributed.current(2)
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with caplog.at_level("WARNING", logger="specvlm_eval.distributed"):
        assert distributed.current(4) == distributed.Rank(rank=6, world_size=8, local_rank=6, tp_size=4)
    assert caplog.text == ""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 2 nodes of 4: groups of 8 span both, aligned; groups of 3 straddle
    with caplog.at_level("WARNING", logger="specvlm_eval.distributed"):
        distributed.current(8)
        assert caplog.text == ""
        monkeypatch.setenv("WORLD_SIZE", "12")
        distributed.current(3)
    assert "straddle" in caplog.text


def test_tp_size_in_the_config_and_out_of_the_fingerprint():
    base = {"name": "x", "model": {"target": "t"}, "benchmarks": ["synthetic"], "methods": ["ar"]}
    assert EvalConfig.from_dict(base).model.tp_size == 1  # configs written before tp_size keep working
    sharded = EvalConfig.from_dict({**base, "model": {"target": "t", "tp_size": 4}})
    assert sharded.model.tp_size == 4 and sharded.fingerprint() == EvalConfig.from_dict(base).fingerprint()
    for bad, needle in ((0, "model.tp_size=0"), ("2", "model.tp_size='2'"), (2.0, "model.tp_size=2.0")):
        with pytest.raises(ConfigError, match=needle):
            EvalConfig.from_dict({**base, "model": {"target": "t", "tp_size": bad}})
    with pytest.raises(ConfigError, match="model.device_map must be null"):
        EvalConfig.from_dict({**base, "model": {"target": "t", "tp_size": 2, "device_map": "auto"}})


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--tp", "0"], ("--tp", ">= 1")),
        (["--tp", "-2"], ("--tp", ">= 1")),
        (["--tp", "1.5"], ("--tp", "'1.5'", "not an integer")),
        (["--tp", "2"], ("--tp 2", "one process", "torchrun --nproc_per_node 2")),
        (["--set", "model.tp_size=2", "--set", "model.device_map=auto"], ("model.tp_size=2", "device_map")),
        (["--tp", "2", "--set", "model.device_map=auto"], ("model.tp_size=2", "device_map")),
    ],
)
def test_bad_tp_on_the_command_line_is_one_line_before_loading(argv, needles, tmp_path, monkeypatch, capsys):
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "run"
    try:
        status = main(["tiny", "--output", str(out), *argv])
    except SystemExit as exit:  # argparse's refusal of the flag itself
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and all(n in err for n in needles), err
    assert not out.exists()  # refused before the output directory (and any model)


def test_a_world_of_tp_groups_is_accepted_by_the_api(monkeypatch, checkpoints):
    from specvlm.loading import check_tensor_parallel

    target = checkpoints["llava_onevision"]["target"]
    monkeypatch.setenv("WORLD_SIZE", "4")
    check_tensor_parallel(2, target, None)  # 2 groups of 2
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match=r"tp_size=2 needs 2 processes.*multiple of 2.*this is 3 processes"):
        check_tensor_parallel(2, target, None)


def test_tp_nulls_the_configs_device_map(tmp_path):
    from specvlm_eval.cli import config_path
    from specvlm_eval.config import load_config

    cfg = tmp_path / "big.yaml"
    cfg.write_text(config_path("llava_ov_72b_7b").read_text())  # device_map: auto, as every real-model config
    for argv, expected in ((["--tp", "4"], (4, None)), (["--tp", "1"], (1, "auto")), ([], (1, "auto"))):
        model = load_config(cfg, flag_overrides(_parser().parse_args([str(cfg), *argv]))).model
        assert (model.tp_size, model.device_map) == expected
