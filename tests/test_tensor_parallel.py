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
from specvlm import loading
from specvlm.loading import check_tensor_parallel, tensor_parallel_plan
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


@pytest.fixture(scope="module")
def qwen3_vl_pairs(tmp_path_factory):
    """{family: {"target": path, "draft": path}}: tiny Qwen3-VL and Qwen3-VL-MoE pairs, 3-layer targets and 2-layer
    drafts (DeepStack adds visual features after the first layers, which reach the text only through a later one)."""
    root = tmp_path_factory.mktemp("tp-qwen3-vl")
    return {
        family: {
            "target": save_tiny(TinySpec(family=family, seed=0, num_layers=3), root / family / "target"),
            "draft": save_tiny(TinySpec(family=family, seed=1, num_layers=2), root / family / "draft"),
        }
        for family in ("qwen3_vl", "qwen3_vl_moe")
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
@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5"])
def test_sharded_target_matches_one_process_stock_generate(checkpoints, hybrid, qwen3_vl_pairs, family, tmp_path):
    paths = {"qwen3_5": hybrid, **qwen3_vl_pairs}.get(family) or checkpoints[family]
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
    check_tensor_parallel(2, qwen3_vl, None)  # its decoder layers take Qwen3's plan (DECODER_TP_PLANS)
    check_tensor_parallel(2, target, None)  # llava_onevision's plan shards every decoder layer
    check_tensor_parallel(None, target, None)
    monkeypatch.setattr(loading, "DECODER_TP_PLANS", {})  # a family whose stock plan leaves its layers whole
    refusal = r"qwen3_vl \(qwen3_vl\): transformers' tensor-parallel plan .* shards only embed_tokens.*DECODER_TP_PLANS"
    with pytest.raises(ValueError, match=refusal):
        check_tensor_parallel(2, qwen3_vl, None)
    monkeypatch.setenv("WORLD_SIZE", "3")  # the tiny text models have 4 heads, 2 of them key / value heads
    with pytest.raises(ValueError, match=r"tp_size=3 must divide .*num_attention_heads=4, num_key_value_heads=2"):
        check_tensor_parallel(3, target, None)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen3_vl", "qwen3_vl_moe"])
def test_the_plan_shards_every_decoder_layer_of_the_stock_model(family, tmp_path):
    """The rules given to ``DistributedConfig(tp_plan=...)`` name the stock model's own modules (transformers
    refuses a rule that names none), and with the stock rules they cover each decoder layer's projections: Qwen3's
    plan on Qwen3-VL (q / k / v colwise, o rowwise, gate / up colwise, down rowwise, the per-head norms whole)."""
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.distributed.parallel_utils import replace_layer_number_by_wildcard

    path = save_tiny(TinySpec(family=family, seed=0, num_layers=1), tmp_path / family)
    plan = tensor_parallel_plan(AutoConfig.from_pretrained(path))
    model = AutoModelForImageTextToText.from_pretrained(path)
    names = {replace_layer_number_by_wildcard(n) for n, _ in model.named_modules()}
    if family == "qwen3_vl":
        assert isinstance(plan, dict) and set(plan) <= names, set(plan) - names
        layer = "model.language_model.layers.*."
        styles = {"self_attn.q_proj": "colwise", "self_attn.k_proj": "colwise", "self_attn.v_proj": "colwise",
                  "self_attn.o_proj": "rowwise", "mlp.gate_proj": "colwise", "mlp.up_proj": "colwise",
                  "mlp.down_proj": "rowwise"}  # fmt: skip
        assert {k: v for k, v in plan.items() if not k.endswith("_norm")} == {layer + k: v for k, v in styles.items()}
        assert {k for k in plan if k.endswith("_norm")} == {f"{layer}self_attn.q_norm", f"{layer}self_attn.k_norm"}
        assert "replicated" in plan[f"{layer}self_attn.q_norm"]  # each rank's heads normed whole, never split
    else:
        assert plan == "auto"  # the stock plan already shards the decoder layers
        assert any(k.startswith("model.language_model.layers.*.self_attn") for k in model.tp_plan)
