"""Qwen2-VL, Qwen3-VL, Qwen3-VL-MoE, InternVL, LLaVA-OneVision-1.5 and GLM-4.1V / 4.5V (MoE) / 4.6V: tiny checkpoints
that load as their family, their visual layouts and positions, DeepStack features, scores and the MoE targets paired
with dense drafts; and every family's adapter following its model. (Their output against the stock model for every
method, draft kind and tree: the ``families`` suite of tests/decoding/test_lossless.py.)

Reference tokens come from a separately loaded stock model (the session's ``stock_reference``), never from our loop.
EOS is disabled so every run spans several verify steps.
"""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoProcessor

from specvlm.attention import AttentionContext
from specvlm.decoding.drafters import prefill_draft
from specvlm.decoding.target import prefill_target
from specvlm.models import adapter_for, family_of
from specvlm.models import cache as kv
from specvlm.zoo.tiny import TinySpec
from tiny_pairs import CORE_FAMILIES, Lazy, check_chain, eos_free_engine

MAX_NEW = 20
FAMILIES = ("qwen2_vl", "qwen3_vl", "qwen3_vl_moe", "internvl", "llava_onevision1_5", "glm4v", "glm4v_moe", "glm46v")
SLOW_MOE = pytest.mark.slow  # the tiny MoE decoder is about twice as slow as the dense one on CPU


@pytest.fixture(scope="module")
def family_checkpoints(pairs):
    """{family: {"target": path, "draft": path}}, saved on first use."""
    return Lazy(pairs)


@pytest.fixture(scope="module")
def engines(family_checkpoints):
    """{(family, "separate" | "self"): engine} with EOS disabled, built on first use."""

    def build(key):
        family, draft = key
        paths = family_checkpoints[family]
        return eos_free_engine(paths["target"], draft=paths["draft"] if draft == "separate" else None)

    return Lazy(build)


@pytest.fixture(scope="module")
def references(family_checkpoints, engines, stock_reference, frames):
    """{family: (inputs, stock greedy new tokens)}, built on first use."""

    def build(family):
        inputs = engines[family, "self"].build_inputs(frames, "Describe the video.")
        return inputs, stock_reference(family_checkpoints[family]["target"], inputs, MAX_NEW)

    return Lazy(build)


def _assert_tubelet_positions(engine, adapter, inputs, layout, runs) -> None:
    """The adapter's positions are the stock ``get_rope_index``'s; each temporal patch (its run starting at
    ``runs[k, 0]``) has one temporal id and restarts height / width at its own offset."""
    t, h, w = layout.grid
    positions = adapter.positions(inputs)  # (3, L)
    stock, _ = engine.target.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"]
    )
    assert torch.equal(positions, stock[:, 0])
    video = positions[:, layout.positions].view(3, t, h, w)
    for k in range(t):
        first = int(positions[0, runs[k, 0]])
        assert bool((video[0, k] == first).all())
        assert torch.equal(video[1, k, :, 0], first + torch.arange(h))
        assert torch.equal(video[2, k, 0, :], first + torch.arange(w))


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoints_load_as_their_family(family_checkpoints, engines, family):
    """The tiny checkpoints load through the stock Auto classes as their own model type, the draft pairs with
    the target, and the saved processor sets ``cap_pixels_per_frame`` explicitly (no per-call warning)."""
    engine = engines[family, "separate"]
    assert engine.target.config.model_type == engine.draft.config.model_type == family
    expected = {"qwen3_vl_moe": "qwen3_vl", "glm4v_moe": "glm4v", "glm46v": "glm4v"}.get(family, family)
    assert family_of(engine.target.config) == expected
    assert engine.target_adapter.family == engine.draft_adapter.family == expected
    processor = AutoProcessor.from_pretrained(family_checkpoints[family]["target"])
    if family not in ("internvl", "glm4v", "glm4v_moe", "glm46v"):  # their video processors have no per-frame cap
        assert processor.video_processor.cap_pixels_per_frame is False


def test_qwen2_vl_temporal_positions_are_not_fps_scaled(engines, references):
    """Qwen2-VL: one run of video tokens, its temporal mRoPE id advances by one per temporal patch
    (Qwen2.5-VL would scale it by tokens_per_second / fps), and decoding continues from max + 1."""
    inputs, _ = references["qwen2_vl"]
    adapter = engines["qwen2_vl", "separate"].target_adapter
    layout = adapter.layout(inputs)
    t, h, w = layout.grid
    positions = adapter.positions(inputs)  # (3, L)
    start = int(layout.positions[0])
    assert torch.equal(layout.positions, torch.arange(start, start + t * h * w))  # contiguous
    video = positions[:, layout.positions].view(3, t, h, w)
    assert torch.equal(video[0, :, 0, 0], start + torch.arange(t))
    assert torch.equal(video[1, 0, :, 0], start + torch.arange(h))
    assert torch.equal(video[2, 0, 0, :], start + torch.arange(w))


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen3_vl_moe"])
def test_qwen3_vl_layout_is_interleaved_with_timestamps(engines, references, family):
    """Each temporal patch is ``<t seconds>`` text + ``<|vision_start|>`` + its h x w tokens + ``<|vision_end|>``:
    the prunable tokens are exactly the video placeholders in (t, h, w) order, not contiguous, each tubelet
    its own (1, h, w) mRoPE grid; the draft keeps every timestamp and vision start / end token."""
    inputs, _ = references[family]
    engine = engines[family, "separate"]
    adapter = engine.target_adapter
    tokenizer = engine.processor.tokenizer
    ids = inputs["input_ids"][0]
    layout = adapter.layout(inputs)
    t, h, w = layout.grid
    assert t == int(inputs["video_grid_thw"][0, 0]) and t > 1
    assert torch.equal(layout.positions, (ids == adapter.video_token_id).nonzero().squeeze(-1))
    assert layout.structural.numel() == 0
    runs = layout.positions.view(t, h * w)
    assert torch.equal(runs[:, -1] - runs[:, 0], torch.full((t,), h * w - 1))  # each tubelet is one run
    gaps = runs[1:, 0] - runs[:-1, -1]
    assert bool((gaps > 2).all())  # vision end + timestamp text + vision start between runs
    vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert torch.equal(ids[runs[:, 0] - 1], torch.full((t,), vision_start))
    text = tokenizer.decode(ids[: int(runs[1, 0])])
    assert text.count(" seconds>") == 2
    # positions: time lives only in the timestamps; every tubelet restarts h / w at its own offset
    _assert_tubelet_positions(engine, adapter, inputs, layout, runs)
    # the draft's prompt: all text (timestamps, vision start / end) plus the kept video tokens
    keep = engine.draft_keep(inputs, drop_rate=0.9)
    text_positions = (ids != adapter.video_token_id).nonzero().squeeze(-1)
    assert bool(torch.isin(text_positions, keep).all())
    assert int(torch.isin(keep, layout.positions).sum()) == layout.num_tokens // 10


def _stock_pruned_prefill(model, inputs, keep, positions, *, deepstack: bool, cache_kwarg: str = "cache"):
    """Logits (V,) at the last kept token and the cache of the stock text model prefilled with the prompt
    tokens ``keep`` at their original positions, DeepStack computed by the stock vision tower for the kept
    video tokens (or left out)."""
    ids = inputs["input_ids"]
    video = ids[0] == model.config.video_token_id  # (L,)
    out = model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    embeds = model.get_input_embeddings()(ids)
    embeds = embeds.masked_scatter(video[None, :, None], torch.cat(out.pooler_output).to(embeds.dtype))
    kept_video = video[keep]  # which kept tokens are video tokens
    rows = torch.isin(video.nonzero().squeeze(-1), keep)  # which video tokens are kept
    extra = {}
    if deepstack:
        extra = {
            "visual_pos_masks": kept_video[None],
            "deepstack_visual_embeds": [torch.cat(per_layer)[rows] for per_layer in out.deepstack_features],
        }
    cache = kv.new_cache(model.config.get_text_config(decoder=True))
    hidden = model.model.language_model(
        inputs_embeds=embeds[:, keep], position_ids=positions[:, None, keep], use_cache=True, **{cache_kwarg: cache}, **extra
    ).last_hidden_state
    return model.lm_head(hidden[0, -1]), cache


@pytest.mark.parametrize("family", ["qwen3_vl", pytest.param("qwen3_vl_moe", marks=SLOW_MOE)])
@torch.no_grad()
def test_qwen3_vl_draft_gets_the_deepstack_features_of_its_kept_tokens(engines, references, family):
    """A separate draft prefilled with the kept tokens must receive exactly those tokens' DeepStack features:
    our prefill equals the stock text model fed the stock vision tower's DeepStack rows of the kept tokens,
    and the same prefill without them gives different logits and a different cache."""
    inputs, _ = references[family]
    engine = engines[family, "separate"]
    keep = engine.draft_keep(inputs, drop_rate=0.9)
    target = prefill_target(engine.target_adapter, inputs, capture_scores=False)
    draft = engine.draft_adapter
    assert len(engine.draft.config.vision_config.deepstack_visual_indexes) >= 1
    assert engine.draft.config.get_text_config().num_hidden_layers >= 2

    stock = dict(cache_kwarg=draft._cache_kwarg)  # the installed transformers' name for the cache argument
    ref_logits, ref_cache = _stock_pruned_prefill(engine.draft, inputs, keep, target.positions, deepstack=True, **stock)
    bare_logits, bare_cache = _stock_pruned_prefill(engine.draft, inputs, keep, target.positions, deepstack=False, **stock)
    assert (ref_logits - bare_logits).abs().max() > 1e-2  # DeepStack changes the draft's next-token logits

    seq = prefill_draft(draft, inputs, target, keep)  # the loop's own draft prefill
    assert kv.length(seq.cache) == keep.numel()
    for layer in range(len(ref_cache.layers)):
        torch.testing.assert_close(seq.cache.layers[layer].keys[..., : keep.numel(), :], ref_cache.layers[layer].keys)
        torch.testing.assert_close(seq.cache.layers[layer].values[..., : keep.numel(), :], ref_cache.layers[layer].values)
    # layer 0 runs before any DeepStack addition; the next layers see it
    assert not torch.allclose(seq.cache.layers[1].keys[..., : keep.numel(), :], bare_cache.layers[1].keys)

    # through the adapter: with the kept tokens' side features it matches the reference, without it does not
    embeds, side = draft.embed_prompt(inputs)
    pos = target.positions[:, keep]
    ctx = AttentionContext(backend="sdpa")
    with_side = draft.forward(embeds[:, keep], pos, kv.new_cache(draft.text_config), ctx, 1, side=side.select(keep))
    without = draft.forward(embeds[:, keep], pos, kv.new_cache(draft.text_config), ctx, 1)
    torch.testing.assert_close(with_side[0, -1], ref_logits)
    torch.testing.assert_close(without[0, -1], bare_logits)


@torch.no_grad()
def test_qwen3_vl_target_prefill_applies_deepstack(engines, references):
    """The target's two-chunk prefill (scores captured) gives the stock forward's last logits, which differ
    from the same prefill without DeepStack."""
    inputs, _ = references["qwen3_vl"]
    engine = engines["qwen3_vl", "separate"]
    stock = engine.target(**inputs).logits[0, -1]
    prefill = prefill_target(engine.target_adapter, inputs, capture_scores=True)
    torch.testing.assert_close(prefill.logits, stock)
    adapter = engine.target_adapter
    embeds, _ = adapter.embed_prompt(inputs)
    ctx = AttentionContext(backend="sdpa")
    bare = adapter.forward(embeds, prefill.positions, kv.new_cache(adapter.text_config), ctx, 1)[0, -1]
    assert (bare - stock).abs().max() > 1e-2


def test_qwen3_vl_moe_target_with_dense_draft(family_checkpoints, references):
    """A Qwen3-VL-MoE target pairs with a dense Qwen3-VL draft (one family, one layout, e.g. 30B-A3B with 2B)."""
    inputs, expected = references["qwen3_vl_moe"]
    engine = eos_free_engine(family_checkpoints["qwen3_vl_moe"]["target"], draft=family_checkpoints["qwen3_vl"]["draft"])
    check_chain(engine, inputs, expected, "specvlm", 0.9)


@pytest.mark.parametrize("family", CORE_FAMILIES + FAMILIES)
def test_adapter_follows_its_model_when_the_model_moves(family):
    """The adapter keeps a handle on the input embeddings; moving the model (here to float64) moves what
    the loop reads: its dtype and the embeddings it looks up."""
    from specvlm.zoo.tiny import build_tiny

    model, _ = build_tiny(TinySpec(family=family, num_layers=1))
    adapter = adapter_for(model)
    assert adapter.dtype == torch.float32
    model.to(torch.float64)
    ids = torch.tensor([[1, 2, 3]])
    assert adapter.dtype == torch.float64 and adapter.device == model.device
    assert torch.equal(adapter.embed_tokens(ids), model.get_input_embeddings()(ids))
    assert adapter.embed_tokens(ids).dtype == torch.float64


def _qwen3_vl_stamps(idx: list[int], fps: float) -> tuple[list[str], str]:
    """Qwen3-VL: each tubelet's ``<t seconds>``, the mean time of its two source frames."""
    return [f"<{(idx[k] + idx[k + 1]) / 2 / fps:.1f} seconds>" for k in range(0, len(idx), 2)], r"<[\d.]+ seconds>"


def _glm4v_stamps(idx: list[int], fps: float) -> tuple[list[str], str]:
    """GLM-4.1V: each temporal patch followed by the whole seconds of its first frame."""
    return [f"<|end_of_image|>{int(idx[k] / fps)}" for k in range(0, len(idx), 2)], r"<\|end_of_image\|>\d+"


@pytest.mark.parametrize("family, stamps_of", [("qwen3_vl", _qwen3_vl_stamps), ("glm4v", _glm4v_stamps)])
def test_timestamps_come_from_the_video_file(engines, video_file, family, stamps_of):
    """A decoded mp4 passes its real fps and sampled frame indices to the processor (``VideoMetadata``): the
    prompt's timestamps are those of the sampled frames (not the 24 fps fallback), in order, and the output
    equals the stock model's greedy output on those inputs."""
    engine = engines[family, "self"]
    clip = engine.load(video_file, num_frames=8)
    inputs = engine.build_inputs(video_file, "What moves?", num_frames=8)
    text = engine.processor.tokenizer.decode(inputs["input_ids"][0])
    stamps, pattern = stamps_of([int(i) for i in clip.indices], clip.fps)
    assert clip.fps != 24 and len(stamps) == 4
    assert re.findall(pattern, text) == stamps
    expected = engine.target.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=None)
    result = engine.generate(inputs=inputs, max_new_tokens=12, method="specvlm", drop_rate=0.9)
    assert result.token_ids == expected[0, inputs["input_ids"].shape[1] :].tolist()


def test_internvl_layout_is_one_run_per_frame(engines, references):
    """InternVL: every frame is an image, ``FrameK: <img>`` + h x w ``<IMG_CONTEXT>`` tokens + ``</img>``, one
    per line; the prunable tokens are exactly the image-token positions in (t, h, w) order (T runs, not
    contiguous), the frame labels, ``<img>`` / ``</img>`` and newlines stay text; positions are 1-D."""
    inputs, _ = references["internvl"]
    engine = engines["internvl", "separate"]
    adapter = engine.target_adapter
    tokenizer = engine.processor.tokenizer
    ids = inputs["input_ids"][0]
    assert "pixel_values_videos" not in inputs and not hasattr(engine.target.config, "video_token_id")
    assert adapter.video_token_id == engine.target.config.image_token_id == tokenizer.context_image_token_id
    layout = adapter.layout(inputs)
    t, h, w = layout.grid
    assert t == inputs["pixel_values"].shape[0] == 8 and h == w > 1
    assert torch.equal(layout.positions, (ids == adapter.video_token_id).nonzero().squeeze(-1))
    assert layout.structural.numel() == 0
    runs = layout.positions.view(t, h * w)
    assert torch.equal(runs[:, -1] - runs[:, 0], torch.full((t,), h * w - 1))  # each frame is one run
    assert torch.equal(ids[runs[:, 0] - 1], torch.full((t,), tokenizer.start_image_token_id))
    assert torch.equal(ids[runs[:, -1] + 1], torch.full((t,), tokenizer.end_image_token_id))
    between = tokenizer.decode(ids[int(runs[0, -1]) + 1 : int(runs[1, 0])])
    assert between == "</img>\nFrame2: <img>"
    assert torch.equal(adapter.positions(inputs), torch.arange(ids.numel())[None])
    # the features are the stock model's, one frame's h x w grid after another
    with torch.no_grad():
        stock = engine.target.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    torch.testing.assert_close(adapter.video_features(inputs), stock.flatten(0, 1))
    assert stock.shape[:2] == (t, h * w)
    # the draft's prompt: all text plus the kept video tokens
    keep = engine.draft_keep(inputs, drop_rate=0.9)
    text_positions = (ids != adapter.video_token_id).nonzero().squeeze(-1)
    assert bool(torch.isin(text_positions, keep).all())
    assert int(torch.isin(keep, layout.positions).sum()) == layout.num_tokens // 10


@torch.no_grad()
def test_internvl_captured_scores_equal_eager_attention(family_checkpoints, engines, references, eager_scores):
    """On InternVL's multi-run layout the verifier's scores captured through the hook equal eager attention of
    the text after the last frame to every ``<IMG_CONTEXT>`` key, and the prefill's logits the eager model's."""
    inputs, _ = references["internvl"]
    adapter = engines["internvl", "separate"].target_adapter
    prefill = prefill_target(adapter, inputs, capture_scores=True)
    layout = prefill.layout
    expected, out, _ = eager_scores(family_checkpoints["internvl"]["target"], inputs, layout)
    assert prefill.scores.shape == (layout.num_tokens,)
    torch.testing.assert_close(prefill.scores, expected, rtol=1e-4, atol=1e-6)
    assert expected.std() > 0
    # every frame's run is scored, not only the last one
    per_frame = expected.view(layout.grid[0], -1).sum(-1)
    assert bool((per_frame > 0).all())
    torch.testing.assert_close(prefill.logits, out.logits[0, -1], rtol=1e-4, atol=1e-4)


def test_llava_onevision1_5_layout_is_one_run_with_1d_positions(family_checkpoints, engines, references):
    """LLaVA-OneVision-1.5: AutoProcessor gives the stock ``Exaone4_5_Processor``; Qwen2-VL-style inputs with a
    temporal patch of 1 (one grid row per frame), one contiguous run of (T, H / 2, W / 2) video tokens, 1-D
    positions (no mRoPE) and the stock vision tower's features in placeholder order."""
    inputs, _ = references["llava_onevision1_5"]
    engine = engines["llava_onevision1_5", "separate"]
    adapter = engine.target_adapter
    processor = AutoProcessor.from_pretrained(family_checkpoints["llava_onevision1_5"]["target"])
    assert type(processor).__name__ == "Exaone4_5_Processor"
    ids = inputs["input_ids"][0]
    layout = adapter.layout(inputs)
    t, h, w = layout.grid
    assert t == int(inputs["video_grid_thw"][0, 0]) == 8  # temporal patch 1: one grid row per frame
    start = int(layout.positions[0])
    assert torch.equal(layout.positions, torch.arange(start, start + t * h * w))  # contiguous
    assert torch.equal(adapter.positions(inputs), torch.arange(ids.numel())[None])
    with torch.no_grad():
        stock = engine.target.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    torch.testing.assert_close(adapter.video_features(inputs), torch.cat(stock.pooler_output))


def test_glm4v_video_tokens_are_marked_only_by_mm_token_type_ids(engines, references):
    """GLM-4V: the video's tokens carry the *image* token id (the ``<|video|>`` placeholder is gone after
    processing); only ``mm_token_type_ids == 2`` marks them. Each temporal patch is ``<|begin_of_image|>`` + its
    h x w tokens + ``<|end_of_image|>`` + its timestamp text; positions are the stock interleaved 3-D mRoPE
    (each patch its own (1, h, w) grid) over half of each head's dimensions."""
    inputs, _ = references["glm4v"]
    engine = engines["glm4v", "separate"]
    adapter = engine.target_adapter
    config = engine.target.config
    tokenizer = engine.processor.tokenizer
    ids = inputs["input_ids"][0]
    types = inputs["mm_token_type_ids"][0]
    assert adapter.video_token_id == config.image_token_id != config.video_token_id
    assert not bool((ids == config.video_token_id).any())
    assert config.get_text_config().rope_parameters["partial_rotary_factor"] == 0.5
    layout = adapter.layout(inputs)
    t, h, w = layout.grid
    assert t == int(inputs["video_grid_thw"][0, 0]) > 1
    assert torch.equal(layout.positions, (types == 2).nonzero().squeeze(-1))
    assert torch.equal(adapter.video_slots(inputs), layout.positions)
    runs = layout.positions.view(t, h * w)
    assert torch.equal(runs[:, -1] - runs[:, 0], torch.full((t,), h * w - 1))  # each temporal patch is one run
    begin, end = (tokenizer.convert_tokens_to_ids(s) for s in ("<|begin_of_image|>", "<|end_of_image|>"))
    assert torch.equal(ids[runs[:, 0] - 1], torch.full((t,), begin))
    assert torch.equal(ids[runs[:, -1] + 1], torch.full((t,), end))
    between = tokenizer.decode(ids[int(runs[0, -1]) + 1 : int(runs[1, 0])])
    assert re.fullmatch(r"<\|end_of_image\|>\d+<\|begin_of_image\|>", between), between
    # the same image-id tokens typed as an image (1) are not video: the layout reads the types, not the ids
    retyped = dict(inputs, mm_token_type_ids=torch.where(types == 2, 1, types))
    assert adapter.video_slots(retyped).numel() == 0
    without = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        adapter.layout(without)
    # positions: the stock get_rope_index; every patch restarts h / w at its own offset
    _assert_tubelet_positions(engine, adapter, inputs, layout, runs)
    # the draft's prompt: all text (markers, timestamps) plus the kept video tokens
    keep = engine.draft_keep(inputs, drop_rate=0.9)
    assert bool(torch.isin((types != 2).nonzero().squeeze(-1), keep).all())
    assert int(torch.isin(keep, layout.positions).sum()) == layout.num_tokens // 10


