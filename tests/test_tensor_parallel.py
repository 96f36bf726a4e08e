"""Tensor parallelism: the target sharded over processes with transformers' own plan (``tp_size``), under
``torchrun`` with gloo on CPU. Every rank runs the same loop; the verifier's scores are summed over the ranks'
heads, so every rank keeps the same tokens, and the answers equal the one-process stock ``generate()``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specvlm import SpecVLM
from specvlm.loading import check_tensor_parallel
from specvlm.zoo.demo import synthetic_frames
from specvlm.zoo.tiny import TinySpec, save_tiny
from tiny_pairs import stock_greedy

WORKER = Path(__file__).with_name("tp_worker.py")
SHARDS = 2


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    """A tiny Qwen3.5 (3 of 4 layers linear attention) target and draft."""
    root = tmp_path_factory.mktemp("tp-hybrid")
    return {
        "target": save_tiny(TinySpec(family="qwen3_5", seed=0), root / "target"),
        "draft": save_tiny(TinySpec(family="qwen3_5", seed=1, num_layers=1), root / "draft"),
    }


def _sharded_run(paths, tmp_path) -> dict:
    out = tmp_path / "tp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(SHARDS),
           str(WORKER), str(paths["target"]), str(paths["draft"]), str(out)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "qwen3_5"])
def test_sharded_target_matches_one_process_stock_generate(checkpoints, hybrid, family, tmp_path):
    paths = hybrid if family == "qwen3_5" else checkpoints[family]
    run = _sharded_run(paths, tmp_path)
    assert run["sharded_parameters"] > 0  # the decoder layers really are split over the ranks
    engine = SpecVLM.from_pretrained(paths["target"], draft=paths["draft"], never_slower=False, compile="off")
    inputs = engine.build_inputs(synthetic_frames(num_frames=8, height=64, width=64), "Describe the video.")
    expected = stock_greedy(paths["target"], inputs, 24)
    greedy = {name: r for name, r in run["results"].items() if not name.startswith("sampled")}
    assert greedy and all(r["ids"] == expected for r in greedy.values()), {n: r["ids"] for n, r in greedy.items()}
    assert run["keep"] == engine.draft_keep(inputs).tolist()  # the same tokens kept as one process keeps
    sampled = run["results"]["sampled specvlm chain"]
    assert len(sampled["ids"]) == 24 and sampled["kept"] == run["results"]["specvlm chain"]["kept"]
    trees = [name for name in greedy if "tree" in name]
    assert bool(trees) == engine.target_adapter.supports_trees  # a hybrid verifies chains only


def test_tp_size_is_checked_before_anything_loads(checkpoints, monkeypatch, tmp_path):
    target = checkpoints["llava_onevision"]["target"]
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match=r"tp_size=2 needs 2 processes.*torchrun --nproc_per_node 2"):
        SpecVLM.from_pretrained(target, tp_size=2)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"tp_size={bad!r}"):
            check_tensor_parallel(bad, target, None)
    with pytest.raises(ValueError, match="device_map"):
        check_tensor_parallel(2, target, "auto")
    monkeypatch.setenv("WORLD_SIZE", "2")
    qwen3_vl = save_tiny(TinySpec(family="qwen3_vl", seed=0), tmp_path / "qwen3_vl")
    with pytest.raises(ValueError, match=r"qwen3_vl: transformers' tensor-parallel plan .* shards only embed_tokens"):
        check_tensor_parallel(2, qwen3_vl, None)
    check_tensor_parallel(2, target, None)  # llava_onevision's plan shards every decoder layer
    check_tensor_parallel(None, target, None)
