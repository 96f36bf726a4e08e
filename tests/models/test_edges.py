"""Every family at the edges of its inputs: plain (``ar``) and speculative (``specvlm``, a separate pruned draft)
greedy decoding give exactly the stock target's greedy ``generate()`` (float32, CPU) for the longest prompt the
target's context allows (one token more is refused before any work). Where the stock processor itself cannot take
an input (fewer frames than one temporal patch for Qwen3-VL, GLM-4V and Qwen3.5), the adapter says so in frames and
``num_frames``, and exactly there. (One frame, an odd number of frames, one image, a one-character prompt and a video
with no text against the stock model: the ``edges`` suite of tests/decoding/test_lossless.py.)

Gemma 4 regression: the stock model embeds every image / video / audio placeholder id as the pad token, the ones
it generates included; a tiny Gemma 4 that generates ``<|video|>`` after a one-frame video left stock
``generate()`` at the next token before the adapter did the same.

Reference tokens come from a separately loaded stock model (the session's ``stock_reference``), never from our loop.
EOS is disabled; every checkpoint has a 320-position context so the longest prompt stays small.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor

from tiny_pairs import EDGE_CONTEXT, EDGE_FAMILIES, EDGE_LAYERS, PAIRS_REQUIRED, Lazy, check_chain, eos_free_engine

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_NEW = 12
CONTEXT = EDGE_CONTEXT  # max_position_embeddings of every checkpoint here
FAMILIES = EDGE_FAMILIES
METHODS = ("ar", "specvlm")


@pytest.fixture(scope="module")
def edge_checkpoints(pairs):
    """{family: {"target": path, "draft": path}} with a ``CONTEXT``-position context, saved on first use."""
    return Lazy(lambda family: pairs(family, EDGE_LAYERS.get(family), max_positions=CONTEXT))


@pytest.fixture(scope="module")
def edge_engines(edge_checkpoints):
    """{family: engine with the separate draft, EOS disabled}; built on first use."""
    engines = Lazy(lambda family: eos_free_engine(edge_checkpoints[family]["target"], draft=edge_checkpoints[family]["draft"]))
    return engines.__getitem__


@pytest.fixture(scope="module")
def stock(edge_checkpoints, stock_reference):
    """``stock(family, inputs)``: the stock target's greedy tokens (``MAX_NEW``, EOS disabled)."""
    return lambda family, inputs: stock_reference(edge_checkpoints[family]["target"], inputs, MAX_NEW)


def _decode(engine, inputs, expected, method):
    if method == "ar":
        result = engine.generate(inputs=inputs, max_new_tokens=len(expected), method="ar")
        assert result.token_ids == expected
        return result
    return check_chain(engine, inputs, expected, method, drop_rate=0.5)


def test_gemma4_generated_placeholder_is_embedded_as_pad(edge_engines, stock, frames):
    """The stock Gemma 4 generates ``<|video|>`` here (a random tiny model) and embeds it as the pad token at the
    next step; plain and speculative decoding follow it through the rest of the answer."""
    engine = edge_engines("gemma4")
    inputs = engine.build_inputs(frames[:1], "Describe the video.")
    expected = stock("gemma4", inputs)
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
def test_longest_prompt_the_context_allows(edge_engines, stock, frames, family):
    engine = edge_engines(family)
    num_frames = 2 if family in PAIRS_REQUIRED or family == "qwen2_5_vl" else 1
    inputs = _longest_inputs(engine, frames, num_frames, MAX_NEW)
    expected = stock(family, inputs)
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


def test_gemma4_images_and_an_image_with_a_video(edge_engines, stock, frames):
    """Gemma 4 takes images as (1, H, W) runs of its own grid (here a non-square one), alone or beside the video."""
    family = "gemma4"
    engine = edge_engines(family)
    wide = frames[0][:40]  # (40, 64, 3)
    for kwargs in ({"images": [wide]}, {"images": [wide, frames[1]]}, {"images": [wide], "video": frames[:2]}):
        inputs = engine.build_inputs(prompt="What is shown?", **kwargs)
        layout = engine.target_adapter.layout(inputs)
        assert [run.kind for run in layout.runs] == ["image"] * len(kwargs["images"]) + ["video"] * ("video" in kwargs)
        assert layout.runs[0].grid[0] == 1 and layout.runs[0].grid[1] != layout.runs[0].grid[2]
        expected = stock(family, inputs)
        for method in METHODS:
            _decode(engine, inputs, expected, method)
