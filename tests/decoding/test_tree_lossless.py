"""Every tree kind stays token-identical to the stock target's greedy ``generate()`` (float32, CPU)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from specvlm import SpecVLM
from specvlm.decoding.trees import SPECVLM_25

MAX_NEW = 40
FAMILIES = ("llava_onevision", "qwen2_5_vl")
USER_TREE = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]
TREES = ["chain", "specvlm-25", "dynamic", USER_TREE]


@pytest.fixture(scope="module")
def references(checkpoints, frames):
    out = {}
    for family in FAMILIES:
        engine = SpecVLM.from_pretrained(checkpoints[family]["target"])
        inputs = engine.build_inputs(frames, "Describe the video.")
        stock = AutoModelForImageTextToText.from_pretrained(checkpoints[family]["target"]).eval()
        with torch.no_grad():
            ids = stock.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=None)
        out[family] = (inputs, ids[0, inputs["input_ids"].shape[1] :].tolist())
    return out


@pytest.fixture(scope="module")
def engines(checkpoints):
    out = {}
    for family in FAMILIES:
        for draft in ("separate", "self"):
            path = checkpoints[family]["draft"] if draft == "separate" else None
            engine = SpecVLM.from_pretrained(  # a self-draft runs every layer (layer skipping: test_self_draft.py)
                checkpoints[family]["target"], draft=path, tree_top_k=4, tree_total_tokens=16, self_draft_layers="all"
            )
            engine.target.generation_config.eos_token_id = None
            out[family, draft] = engine
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tree", ["chain", "specvlm-25", "dynamic"])
def test_cascade_attention_backend_matches_stock_greedy(engines, references, family, tree):
    """The log-sum-exp cascade (prefix without a mask + masked tree block) in prefill scoring,
    drafting and verification commits exactly the stock greedy tokens."""
    inputs, expected = references[family]
    for draft in ("separate", "self"):
        engine = engines[family, draft]
        for method in ("ar", "sd", "specvlm"):
            result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, tree=tree, attn_backend="cascade")
            assert result.token_ids == expected, (draft, method)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("draft", ["separate", "self"])
@pytest.mark.parametrize("tree", TREES, ids=["chain", "specvlm-25", "dynamic", "user"])
@pytest.mark.parametrize("drop_rate", [0.0, 0.9])
def test_tree_matches_stock_greedy(engines, references, family, draft, tree, drop_rate):
    inputs, expected = references[family]
    result = engines[family, draft].generate(
        inputs=inputs, max_new_tokens=MAX_NEW, method="specvlm", drop_rate=drop_rate, tree=tree
    )
    assert result.token_ids == expected
    stats = result.stats
    assert sum(stats.accepted_lengths) == MAX_NEW - 1
    config = engines[family, draft].config.replace(tree=tree)
    shape = config.tree_shape()  # a static shape, or the dynamic tree's settings
    depth = config.tree_depth if tree == "dynamic" else shape.depth
    assert max(stats.accepted_lengths) <= depth + 1
    assert stats.draft_steps > 0 and stats.target_steps == len(stats.accepted_lengths)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["sd", "specvlm"])
def test_self_draft_25_node_tree_commits_depth_plus_one(engines, references, family, method):
    inputs, expected = references[family]
    result = engines[family, "self"].generate(
        inputs=inputs, max_new_tokens=MAX_NEW, method=method, drop_rate=0.0, tree="specvlm-25"
    )
    assert result.token_ids == expected
    depth = max(len(p) for p in SPECVLM_25)
    lengths = result.stats.accepted_lengths
    assert lengths[:-1] == [depth + 1] * (len(lengths) - 1)
    assert result.stats.depth_acceptance_rates == [1.0] * depth


@pytest.mark.parametrize("family", FAMILIES)
def test_dynamic_tree_follows_its_budget(engines, references, family):
    inputs, expected = references[family]
    engine = engines[family, "self"]
    for total, depth in ((4, 2), (12, 4)):
        result = engine.generate(
            inputs=inputs, max_new_tokens=MAX_NEW, drop_rate=0.0, tree="dynamic", tree_total_tokens=total, tree_depth=depth
        )
        assert result.token_ids == expected
        assert max(result.stats.accepted_lengths) <= depth + 1
        assert len(result.stats.depth_acceptance_rates) <= depth


def test_tree_set_at_load_and_overridden_per_call(checkpoints, references):
    inputs, expected = references["llava_onevision"]
    engine = SpecVLM.from_pretrained(
        checkpoints["llava_onevision"]["target"], tree="specvlm-25", drop_rate=0.0, self_draft_layers="all"
    )
    engine.target.generation_config.eos_token_id = None
    tree_run = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW)
    chain_run = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, tree="chain", num_draft_tokens=3)
    assert tree_run.token_ids == chain_run.token_ids == expected
    assert max(tree_run.stats.accepted_lengths) == 6 and max(chain_run.stats.accepted_lengths) == 4
    with pytest.raises(ValueError, match="previous sibling"):
        engine.generate(inputs=inputs, max_new_tokens=4, tree=[[0], [2]])
    with pytest.raises(ValueError, match="unknown tree"):
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], tree="bushy")


def test_cli_tree_and_sampling_options(checkpoints, video_file, capsys):
    import json

    from specvlm.cli import main

    base = ["generate", "--target", str(checkpoints["qwen2_5_vl"]["target"]), "--video", video_file,
            "--prompt", "What moves?", "--max-new-tokens", "12", "--json"]  # fmt: skip
    assert main(base + ["--method", "ar"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(base + ["--tree", "[[0],[1],[0,0]]", "--drop-rate", "0.5"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["token_ids"] == plain["token_ids"] and tree["stats"]["target_steps"] >= 1
    sampled_args = base + ["--tree", "specvlm-25", "--do-sample", "--top-p", "0.8", "--seed", "5"]
    assert main(sampled_args) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(sampled_args) == 0
    assert json.loads(capsys.readouterr().out)["token_ids"] == first["token_ids"]
