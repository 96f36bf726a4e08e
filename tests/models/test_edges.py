"""Every family at the edges of its inputs: plain (``ar``) and speculative (``specvlm``, a separate pruned draft)
greedy decoding give exactly the stock target's greedy ``generate()`` (float32, CPU) for one frame, an odd number
of frames (3: the families with temporal patch size 2 group frames in pairs), one image, a one-character prompt,
a video with no text at all, and the longest prompt the target's context allows (one token more is refused before
any work). Where the stock processor itself cannot take an input (fewer frames than one temporal patch for
Qwen3-VL, GLM-4V and Qwen3.5), the adapter says so in frames and ``num_frames``, and exactly there.

Gemma 4 regression: the stock model embeds every image / video / audio placeholder id as the pad token, the ones
it generates included; a tiny Gemma 4 that generates ``<|video|>`` after a one-frame video left stock
``generate()`` at the next token before the adapter did the same.

Reference tokens come from a separately loaded stock model (stock ``generate``), never from our loop. EOS is
disabled; every checkpoint has a 320-position context so the longest prompt stays small.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from specvlm.zoo.tiny import TinySpec, save_tiny
from tiny_pairs import check_chain, eos_free_engine

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_NEW = 12
CONTEXT = 320  # max_position_embeddings of every checkpoint here
LAYERS = {  # (target, draft) decoder layers; the draft is a differently seeded checkpoint of the same family
    "llava_onevision": (2, 1),
    "qwen2_5_vl": (2, 1),
    "qwen2_vl": (2, 1),
    "qwen3_vl": (3, 2),
    "internvl": (2, 1),
    "llava_onevision1_5": (2, 1),
    "glm4v": (2, 1),
    "glm46v": (2, 1),
    "qwen3_5": (4, 2),
    "gemma4": (2, 2),
}
FAMILIES = tuple(LAYERS)
#: families whose stock video processor refuses a video shorter than one temporal patch (2 frames)
PAIRS_REQUIRED = ("qwen3_vl", "glm4v", "glm46v", "qwen3_5")
EDGES = ("one_frame", "odd_frames", "one_image", "one_char_prompt", "no_text")
METHODS = ("ar", "specvlm")


@pytest.fixture(scope="module")
def edge_checkpoints(tmp_path_factory):
    """{family: {"target": path, "draft": path}} with a ``CONTEXT``-position context."""
    root = tmp_path_factory.mktemp("edge_checkpoints")
    out = {}
    for family, (target_layers, draft_layers) in LAYERS.items():
        out[family] = {
            role: save_tiny(TinySpec(family=family, seed=seed, num_layers=layers, max_positions=CONTEXT), root / family / role)
            for role, seed, layers in (("target", 0, target_layers), ("draft", 1, draft_layers))
        }
    return out


@pytest.fixture(scope="module")
def edge_engines(edge_checkpoints):
    """{family: engine with the separate draft, EOS disabled}; built on first use."""
    cache = {}

    def get(family):
        if family not in cache:
            paths = edge_checkpoints[family]
            cache[family] = eos_free_engine(paths["target"], draft=paths["draft"])
        return cache[family]

    return get


@pytest.fixture(scope="module")
def stock_models(edge_checkpoints):
    """{family: the stock target, loaded separately}; built on first use."""
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = AutoModelForImageTextToText.from_pretrained(edge_checkpoints[family]["target"]).eval()
        return cache[family]

    return get


def _edge_inputs(engine, edge: str, frames):
    if edge == "one_frame":
        return engine.build_inputs(frames[:1], "Describe the video.")
    if edge == "odd_frames":
        return engine.build_inputs(frames[:3], "Describe the video.")
    if edge == "one_image":
        return engine.build_inputs(images=frames[0], prompt="Describe the image.")
    if edge == "one_char_prompt":
        return engine.build_inputs(frames[:2], "?")
    if edge == "no_text":  # a user turn holding only the video
        return engine.build_inputs(frames[:2], messages=[{"role": "user", "content": [{"type": "video"}]}])
    raise AssertionError(edge)


@torch.no_grad()
def _stock(model, inputs, max_new_tokens: int = MAX_NEW) -> list[int]:
    ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None)
    return ids[0, inputs["input_ids"].shape[1] :].tolist()


def _decode(engine, inputs, expected, method):
    if method == "ar":
        result = engine.generate(inputs=inputs, max_new_tokens=len(expected), method="ar")
        assert result.token_ids == expected
        return result
    return check_chain(engine, inputs, expected, method, drop_rate=0.5)


def _cases(families):
    return [
        (family, edge, method)
        for family in families
        for edge in EDGES
        for method in METHODS
        if not (edge == "one_frame" and family in PAIRS_REQUIRED)  # refused: test_too_few_frames_*
    ]


@pytest.mark.parametrize("family,edge,method", _cases(FAMILIES))
def test_edges_match_stock_greedy(edge_engines, stock_models, frames, family, edge, method):
    engine = edge_engines(family)
    inputs = _edge_inputs(engine, edge, frames)
    expected = _stock(stock_models(family), inputs)
    _decode(engine, inputs, expected, method)


def test_gemma4_generated_placeholder_is_embedded_as_pad(edge_engines, stock_models, frames):
    """The stock Gemma 4 generates ``<|video|>`` here (a random tiny model) and embeds it as the pad token at the
    next step; plain and speculative decoding follow it through the rest of the answer."""
    engine = edge_engines("gemma4")
    inputs = engine.build_inputs(frames[:1], "Describe the video.")
    expected = _stock(stock_models("gemma4"), inputs)
    adapter = engine.target_adapter
    placeholder = adapter.video_token_id
    assert placeholder in expected[:-1]  # the case this test is about: a generated placeholder is fed back
    for method in METHODS:
        _decode(engine, inputs, expected, method)
    ids = torch.tensor([[placeholder, adapter.image_token_id, 65]])
    pad = torch.tensor([[adapter.pad_id, adapter.pad_id, 65]])
    assert torch.equal(adapter.embed_tokens(ids), adapter.embed_tokens(pad))
    assert not torch.equal(adapter.embed_tokens(ids), adapter._input_embeddings(ids))


def _longest_inputs(engine, frames, num_frames: int, max_new_tokens: int):
    """Inputs whose prompt is as long as the context allows for ``max_new_tokens``: decoding feeds positions up to
    exactly the last one (``max_position_embeddings - 1``). The tiny byte-level tokenizer makes each added
    letter one text token, one position further on every axis."""
    adapter = engine.target_adapter

    def build(letters: int):
        inputs = engine.build_inputs(frames[:num_frames], "a" * letters)
        return inputs, int(adapter.positions(inputs).max()) + 1  # the first generated token's position

    _, start = build(1)
    letters = 1 + (CONTEXT + 1 - max_new_tokens) - start
    inputs, next_pos = build(letters)
    assert next_pos + max_new_tokens - 2 == CONTEXT - 1 == adapter.max_positions - 1
    return inputs


@pytest.mark.parametrize("family", FAMILIES)
def test_longest_prompt_the_context_allows(edge_engines, stock_models, frames, family):
    engine = edge_engines(family)
    num_frames = 2 if family in PAIRS_REQUIRED or family == "qwen2_5_vl" else 1
    inputs = _longest_inputs(engine, frames, num_frames, MAX_NEW)
    expected = _stock(stock_models(family), inputs)
    for method in METHODS:
        _decode(engine, inputs, expected, method)
    with pytest.raises(ValueError, match=rf"context overflow.*max_new_tokens={MAX_NEW + 1}.*max_position_embeddings={CONTEXT}"):
        engine.generate(inputs=inputs, max_new_tokens=MAX_NEW + 1, method="ar")


def _processor_takes(processor, frames) -> bool:
    """Whether the stock processor takes a video of these frames (the stock error is a ValueError)."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    try:
        processor(
            text=[text], videos=[frames], return_tensors="pt", do_sample_frames=False,
            videos_kwargs={"input_data_format": "channels_last"},
        )  # fmt: skip
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("family", FAMILIES)
def test_too_few_frames_are_refused_exactly_where_the_stock_processor_refuses(edge_engines, edge_checkpoints, frames, family):
    """The adapter's frame minimum equals the stock processor's: 1 frame is refused (in frames and
    ``num_frames``, naming the value and the minimum) exactly by the families whose processor cannot take it, and
    their minimum (2) is taken."""
    processor = AutoProcessor.from_pretrained(edge_checkpoints[family]["target"])
    adapter = edge_engines(family).target_adapter
    refused = family in PAIRS_REQUIRED
    assert _processor_takes(processor, frames[:1]) is not refused
    assert adapter.min_video_frames == (2 if refused else 1)
    if refused:
        message = rf"{adapter.family} needs at least 2 frames per video \(temporal patch size 2.*got num_frames=1"
        with pytest.raises(ValueError, match=message):
            adapter.check_video_frames(1)
        assert _processor_takes(processor, frames[:2])
    else:
        adapter.check_video_frames(1)
    adapter.check_video_frames(adapter.min_video_frames)


def test_gemma4_images_and_an_image_with_a_video(edge_engines, stock_models, frames):
    """Gemma 4 takes images as (1, H, W) runs of its own grid (here a non-square one), alone or beside the video."""
    family = "gemma4"
    engine = edge_engines(family)
    wide = frames[0][:40]  # (40, 64, 3)
    for kwargs in ({"images": [wide]}, {"images": [wide, frames[1]]}, {"images": [wide], "video": frames[:2]}):
        inputs = engine.build_inputs(prompt="What is shown?", **kwargs)
        layout = engine.target_adapter.layout(inputs)
        assert [run.kind for run in layout.runs] == ["image"] * len(kwargs["images"]) + ["video"] * ("video" in kwargs)
        assert layout.runs[0].grid[0] == 1 and layout.runs[0].grid[1] != layout.runs[0].grid[2]
        expected = _stock(stock_models(family), inputs)
        for method in METHODS:
            _decode(engine, inputs, expected, method)
