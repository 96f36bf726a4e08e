"""The memory estimate (specvlm.memory, ``specvlm memory``): its arithmetic against the stock classes, its
scaling, its refusals, and the numbers docs/models.md prints for the reference pair."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from specvlm import cli, memory
from specvlm.attention.capture import _CAPTURE_BLOCK_ELEMENTS, _LSE_BLOCK_ELEMENTS
from specvlm.config import DecodingConfig
from specvlm.zoo.tiny import TinySpec, build_tiny

DOCS = Path(__file__).resolve().parent.parent / "docs" / "models.md"
PAIR = ("llava-hf/llava-onevision-qwen2-72b-ov-hf", "llava-hf/llava-onevision-qwen2-7b-ov-hf")


def _stock_on_meta(entry: dict) -> torch.nn.Module:
    """The stock model of a :data:`specvlm.memory.KNOWN_CONFIGS` entry, built on the meta device (no memory)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    if entry["model_type"] == "llava_onevision":
        config = LlavaOnevisionConfig(
            text_config=Qwen2Config(**entry["text_config"]),
            vision_config=SiglipVisionConfig(**entry["vision_config"]),
            vision_feature_layer=entry["vision_feature_layer"],
            multimodal_projector_bias=entry["multimodal_projector_bias"],
            tie_word_embeddings=entry["text_config"]["tie_word_embeddings"],
        )
        model_class = LlavaOnevisionForConditionalGeneration
    else:
        config = Qwen2_5_VLConfig(text_config=entry["text_config"], vision_config=entry["vision_config"])
        model_class = Qwen2_5_VLForConditionalGeneration
    with torch.device("meta"):
        return model_class(config)


@pytest.mark.parametrize("name", list(memory.KNOWN_CONFIGS))
def test_known_checkpoints_count_what_the_stock_class_builds(name):
    model = _stock_on_meta(memory.KNOWN_CONFIGS[name])
    assert sum(memory.parameter_counts(memory.load_shape(name)).values()) == sum(p.numel() for p in model.parameters())


def test_tied_embeddings_count_once():
    entry = memory.KNOWN_CONFIGS[PAIR[1]]
    tied = {**entry, "text_config": {**entry["text_config"], "tie_word_embeddings": True}}
    model = _stock_on_meta(tied)
    counts = memory.parameter_counts(memory.shape_of(tied))
    assert counts["lm_head"] == 0 and sum(counts.values()) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", memory.FAMILIES)
def test_tiny_models_count_what_the_stock_class_builds(family):
    model, _ = build_tiny(TinySpec(family=family, num_layers=3))
    shape = memory.shape_of(model.config)
    assert sum(memory.parameter_counts(shape).values()) == sum(p.numel() for p in model.parameters())
    estimate = memory.estimate(model.config, model.config, frames=4, dtype="float32")
    assert estimate.target.weights == 4 * sum(p.numel() for p in model.parameters())


def test_a_local_checkpoint_directory_is_read_offline(checkpoints):
    from transformers import AutoConfig

    for family, pair in checkpoints.items():
        path = str(pair["target"])
        shape = memory.load_shape(path)
        assert shape.family == family and shape.name == path
        assert shape == memory.shape_of(AutoConfig.from_pretrained(path), name=path)


def test_video_tokens_are_what_the_stock_processor_lays_out():
    model, processor = build_tiny(TinySpec(family="llava_onevision"))
    video = processor.tokenizer.convert_ids_to_tokens(model.config.video_token_id)
    shape = memory.shape_of(model.config)
    for frames in (1, 3, 4):
        pixels = np.zeros((frames, 64, 64, 3), dtype=np.uint8)
        ids = processor(text=video, videos=[pixels], return_tensors="pt")["input_ids"]
        assert int((ids == model.config.video_token_id).sum()) == memory.video_tokens(shape, frames).total


def test_qwen_frames_go_in_temporal_patches():
    shape = memory.load_shape("Qwen/Qwen2.5-VL-7B-Instruct")
    odd, even = memory.video_tokens(shape, 63), memory.video_tokens(shape, 64)
    assert odd.total == even.total == 32 * 768  # 63 frames are padded to 32 patches of 2, at most 768 tokens each
    assert memory.video_tokens(shape, 64, frame_tokens=100).total == 3200


def test_kv_cache_grows_linearly_with_frames_and_the_draft_holds_the_kept_share():
    runs = {f: memory.estimate(*PAIR, frames=f, drop_rate=0.9) for f in (32, 64, 96, 128)}
    target_kv = [runs[f].target.kv_cache for f in (32, 64, 96, 128)]
    steps = np.diff(target_kv)
    assert (steps == steps[0]).all() and steps[0] > 0  # KV(frames) = a + b x frames, exactly
    shape = memory.load_shape(PAIR[0])
    assert steps[0] == 32 * 196 * shape.kv_bytes_per_token(2)  # 32 more frames: 32 x 196 more tokens
    assert shape.kv_bytes_per_token(2) == 2 * 80 * 8 * 128 * 2
    for f, run in runs.items():
        n = f * 196
        assert run.video_tokens == n + 1  # the newline token
        assert run.kept_video_tokens == n // 10 + 1  # floor(N x (1 - 0.9)) grid tokens, plus the newline
        tail = run.text_tokens + run.max_new_tokens + run.tree_nodes + 1
        assert run.target.kv_tokens == n + 1 + tail and run.draft.kv_tokens == run.kept_video_tokens + tail
    assert runs[128].target.weights == runs[32].target.weights  # weights do not depend on the video
    assert runs[128].total > runs[64].total > runs[32].total


def test_dtype_and_drop_rate_change_what_they_should():
    bf16 = memory.estimate(*PAIR, frames=64, drop_rate=0.9)
    fp32 = memory.estimate(*PAIR, frames=64, dtype="float32")
    assert fp32.target.weights == 2 * bf16.target.weights and fp32.target.kv_cache == 2 * bf16.target.kv_cache
    keep_half = memory.estimate(*PAIR, frames=64, drop_rate=0.5)
    assert keep_half.draft.kv_cache > bf16.draft.kv_cache and keep_half.target.kv_cache == bf16.target.kv_cache
    assert bf16.sd_extra == (64 * 196 - 64 * 196 // 10) * memory.load_shape(PAIR[1]).kv_bytes_per_token(2)


def test_self_draft_has_no_weights_of_its_own():
    run = memory.estimate("Qwen/Qwen2.5-VL-7B-Instruct", None, frames=64)
    assert run.draft.role == "self-draft" and run.draft.weights == run.draft.prefill == 0 and run.sd_extra == 0
    assert run.draft.kv_cache > 0


def test_capture_stays_within_the_block_bound():
    shape = memory.load_shape(PAIR[0])
    for frames in (8, 64, 128, 512):
        for text in (1, 200, 5000):
            n = frames * 196
            keys = shape.num_kv_heads * n * shape.head_dim * 2
            temporaries = memory.capture_bytes(shape, n, text, n + text, 2) - keys
            assert 0 < temporaries <= 4 * (memory.CAPTURE_LIVE_BLOCKS * _CAPTURE_BLOCK_ELEMENTS + _LSE_BLOCK_ELEMENTS)
    assert memory.capture_bytes(shape, 0, 200, 200, 2) == 0


def test_gpus():
    run = memory.estimate(*PAIR, frames=128)
    assert run.usable_per_gpu == int(80 * 2**30 * 0.9)
    assert run.gpus == -(-run.total // run.usable_per_gpu) == 3
    assert run.per_gpu_tp(1) == run.total
    assert run.tp_options()[:5] == [1, 2, 4, 8] and run.tp_gpus == 4  # 64 query heads, 8 key/value heads
    assert run.per_gpu_tp(4) <= run.usable_per_gpu < run.per_gpu_tp(2)
    big = memory.estimate(*PAIR, frames=128, gpu_memory_gib=1000)
    assert big.gpus == big.tp_gpus == 1
    small = memory.estimate(*PAIR, frames=128, gpu_memory_gib=16)
    assert small.tp_gpus is None and "does not fit" in "\n".join(small.lines())


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"frames": 0}, "frames must be an integer >= 1"),
        ({"frames": -3}, "frames"),
        ({"frames": True}, "frames"),
        ({"frames": 1.5}, "frames"),
        ({"frames": 8, "dtype": "int8"}, "dtype 'int8'"),
        ({"frames": 8, "gpu_memory_gib": 0}, "gpu_memory_gib"),
        ({"frames": 8, "gpu_memory_gib": float("nan")}, "gpu_memory_gib"),
        ({"frames": 8, "headroom": 1}, "headroom"),
        ({"frames": 8, "drop_rate": 1}, "drop_rate"),
        ({"frames": 8, "tree_nodes": 0}, "tree_nodes"),
        ({"frames": 8, "text_tokens": -1}, "text_tokens"),
        ({"frames": 8, "frame_tokens": 0}, "frame_tokens"),
    ],
)
def test_bad_values_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        memory.estimate(*PAIR, **kwargs)


def test_unknown_models_are_refused_naming_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="org/unknown.*download its config.json"):
        memory.load_shape("org/unknown")
    with pytest.raises(ValueError, match="without a config.json"):
        memory.load_shape(tmp_path)
    with pytest.raises(ValueError, match="model_type 'qwen3_vl'"):
        memory.shape_of({"model_type": "qwen3_vl"})
    entry = memory.KNOWN_CONFIGS[PAIR[1]]
    with pytest.raises(ValueError, match="text_config.hidden_size"):
        memory.shape_of({**entry, "text_config": {k: v for k, v in entry["text_config"].items() if k != "hidden_size"}})
    with pytest.raises(ValueError, match="family qwen2_5_vl is not the target's llava_onevision"):
        memory.estimate(PAIR[0], "Qwen/Qwen2.5-VL-7B-Instruct", frames=8)
    entry = memory.KNOWN_CONFIGS[PAIR[1]]
    other = {**entry, "vision_config": {**entry["vision_config"], "image_size": 336}}
    with pytest.raises(ValueError, match="video layout"):
        memory.estimate(PAIR[0], other, frames=8)


# ---------------------------------------------------------------------------------------------- command line


def test_cli_prints_the_estimate_of_a_config(capsys):
    assert cli.main(["memory", "llava_ov_72b_7b", "--frames", "64"]) == 0
    out = capsys.readouterr().out
    assert PAIR[0] in out and PAIR[1] in out and "64 frames" in out and "GPUs needed" in out
    assert cli.main(["memory", "--target", PAIR[0], "--draft", PAIR[1], "--frames", "64", "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["total"] == memory.estimate(*PAIR, frames=64).total  # no config: the library's defaults
    defaults = DecodingConfig()
    assert data["tree_nodes"] == memory.verified_nodes(defaults) and data["drop_rate"] == defaults.drop_rate
    assert data["gpus_device_map"] == 3 and data["target"]["name"] == PAIR[0] and data["draft"]["role"] == "draft"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["llava_ov_72b_7b", "--frames", "0"], "--frames: 0 must be an integer >= 1"),
        (["llava_ov_72b_7b", "--frames", "-2"], "--frames"),
        (["llava_ov_72b_7b"], "--frames"),
        (["llava_ov_72b_7b", "--frames", "64", "--dtype", "int8"], "int8"),
        (["llava_ov_72b_7b", "--frames", "64", "--gpu-memory", "0"], "--gpu-memory"),
        (["no_such_pair", "--frames", "64"], "'no_such_pair'"),
        (["--frames", "64"], "give a CONFIG"),
        (["--target", "org/unknown", "--frames", "64"], "org/unknown"),
        (["qwen3_vl_8b_2b", "--frames", "64"], "Qwen/Qwen3-VL-8B-Instruct"),
        (["llava_ov_72b_7b", "--frames", "64", "--drop-rate", "1"], "drop_rate"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(capsys, argv, needle):
    try:
        code = cli.main(["memory", *argv])
    except SystemExit as exit_:  # argparse's refusals
        code = exit_.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert needle in lines[0] and "error" in lines[0]


def _documented_runs() -> dict[str, str]:
    """{command: printed output} of the ``$ specvlm memory ...`` blocks of docs/models.md."""
    text = DOCS.read_text(encoding="utf-8")
    return dict(re.findall(r"```text\n\$ (specvlm memory [^\n]+)\n(.*?)```", text, flags=re.S))


def test_the_documented_numbers_are_what_the_command_prints(capsys):
    runs = _documented_runs()
    assert {"specvlm memory llava_ov_72b_7b --frames 64", "specvlm memory llava_ov_72b_7b --frames 128"} <= set(runs)
    for command, documented in runs.items():
        assert cli.main(command.split()[1:]) == 0
        assert capsys.readouterr().out == documented, command
    # the worked KV example of the arithmetic
    text = DOCS.read_text(encoding="utf-8")
    run = memory.estimate(*PAIR, frames=64, tree_nodes=25)
    assert f"x {run.target.kv_tokens:,} tokens = {run.target.kv_cache / 2**30:.2f} GiB" in text
