"""Gemma 4: sliding-window + full attention, bidirectional vision blocks, per-layer embeddings, KV-shared layers,
final logit soft-capping.

Runs where every draft token is rejected (a random E-style draft) and where every one is accepted (the target's own
weights as the draft) equal the stock target's greedy ``generate()`` (float32, CPU), and so does an E-model as the
target. The tiny target is [sliding, full, sliding, full] with a sliding window (24) smaller than a frame's 64 soft
tokens and bidirectional vision blocks; the draft is an E-model (per-layer input embeddings, its last two layers
KV-shared). The captured scores are the full-attention layers' eager attention; trees and self-drafting are refused
with the reason. (Every method and drop rate against the stock model: the ``gemma4`` suite of
tests/decoding/test_lossless.py.) Reference tokens come from a separately loaded stock model (the session's
``stock_reference``), never from our loop. EOS is disabled so every run spans several verify steps.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText
from transformers.cache_utils import DummyLayer, DynamicSlidingWindowLayer

from specvlm import SpecVLM
from specvlm.decoding.target import prefill_target
from specvlm.models import cache as kv
from specvlm.models import family_of
from specvlm.models.gemma4 import Gemma4Side
from specvlm.zoo.tiny import GEMMA4_E_STYLE, gemma4_layer_types
from tiny_pairs import VIDEO_PROMPT, check_chain, eos_free_engine

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_NEW = 16
FRAMES = 3  # 3 frames x 64 soft tokens: a 256-token prompt
SLIDING, FULL = "sliding_attention", "full_attention"


@pytest.fixture(scope="module")
def gemma_checkpoints(pairs):
    """{"target": path (large-model style), "draft": path (E-model style)}: both 4 layers."""
    return pairs("gemma4", (4, 4), draft_extra=GEMMA4_E_STYLE)


@pytest.fixture(scope="module")
def gemma_engines(gemma_checkpoints):
    """{draft kind: engine} with EOS disabled: "random" (the E-style draft: almost every token rejected), "same"
    (the target's own checkpoint as a separate draft: every token accepted with all video tokens kept), "none"."""
    out = {}
    for kind, draft in (("random", gemma_checkpoints["draft"]), ("same", gemma_checkpoints["target"]), ("none", None)):
        out[kind] = eos_free_engine(gemma_checkpoints["target"], draft=draft)
    return out


@pytest.fixture(scope="module")
def gemma_reference(gemma_checkpoints, gemma_engines, stock_reference, frames):
    """(inputs, stock greedy new tokens of the target)."""
    inputs = gemma_engines["none"].build_inputs(frames[:FRAMES], VIDEO_PROMPT)
    return inputs, stock_reference(gemma_checkpoints["target"], inputs, MAX_NEW)


def _check(engine, reference, method, drop_rate):
    inputs, expected = reference
    assert len(expected) == MAX_NEW
    return check_chain(engine, inputs, expected, method, drop_rate)


def test_full_rejections_and_full_acceptances_are_exact(gemma_engines, gemma_reference):
    """Every step of the random draft is a full rejection (the sliding layers crop a recorded verify forward back
    to the window ending at the pending token), every step of the target-as-draft a full acceptance."""
    gamma = gemma_engines["random"].config.num_draft_tokens
    rejected = _check(gemma_engines["random"], gemma_reference, "sd", 0.0)
    assert rejected.stats.accepted_lengths == [1] * (MAX_NEW - 1)
    accepted = _check(gemma_engines["same"], gemma_reference, "sd", 0.0)
    lengths = accepted.stats.accepted_lengths
    assert lengths[:-1] == [gamma + 1] * (len(lengths) - 1)  # the last step is cut at max_new_tokens


def test_e_model_target_is_exact(gemma_checkpoints, gemma_reference, stock_reference):
    """An E-model as the target (per-layer input embeddings with the pad id at media positions, KV-shared layers
    reading the sliding / full keys of the same forward, soft-capping): plain and speculative decoding with the
    large-style checkpoint as its draft equal the stock E-model's greedy ``generate()``."""
    inputs, _ = gemma_reference
    expected = stock_reference(gemma_checkpoints["draft"], inputs, MAX_NEW)
    engine = SpecVLM.from_pretrained(gemma_checkpoints["draft"], draft=gemma_checkpoints["target"])
    engine.target.generation_config.eos_token_id = None
    for method, drop_rate in (("ar", 0.0), ("specvlm", 0.9)):
        result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, drop_rate=drop_rate)
        assert result.token_ids == expected, method


def test_tiny_checkpoints_have_the_gemma4_features(gemma_engines):
    """The tiny target is [sliding, full, sliding, full] (window smaller than a frame) with bidirectional vision
    blocks and soft-capping; the E-style draft has per-layer embeddings and two KV-shared layers (``DummyLayer``
    in its cache); both load through the stock Auto classes onto the one Gemma 4 adapter."""
    assert gemma4_layer_types(4) == [SLIDING, FULL, SLIDING, FULL]
    assert gemma4_layer_types(2) == [SLIDING, FULL]
    engine = gemma_engines["random"]
    target, draft = engine.target.config.get_text_config(), engine.draft.config.get_text_config()
    assert target.layer_types == draft.layer_types == [SLIDING, FULL, SLIDING, FULL]
    assert target.use_bidirectional_attention == "vision" and draft.use_bidirectional_attention is None
    assert target.final_logit_softcapping is not None
    assert not target.hidden_size_per_layer_input and draft.hidden_size_per_layer_input
    assert target.sliding_window < 64
    kinds = [kv.layer_kind(layer) for layer in kv.new_cache(draft).layers]
    assert kinds == ["sliding", "full", "shared", "shared"]
    assert isinstance(kv.new_cache(draft).layers[2], DummyLayer)
    assert isinstance(kv.new_cache(target).layers[0], DynamicSlidingWindowLayer)
    assert family_of(engine.target.config) == engine.target_adapter.family == engine.draft_adapter.family == "gemma4"


def test_video_layout_is_one_run_of_frames(gemma_engines, gemma_reference):
    """Every frame is ``mm:ss <boi>`` + its 8 x 8 soft tokens + ``<eoi>``: one (3, 8, 8) video run; each frame's
    tokens form one bidirectional block, text is -1."""
    inputs, _ = gemma_reference
    adapter = gemma_engines["none"].target_adapter
    layout = adapter.layout(inputs)
    assert layout.grids == ((FRAMES, 8, 8),)
    ids = inputs["input_ids"][0]
    assert torch.equal(layout.positions, (ids == adapter.video_token_id).nonzero().squeeze(-1))
    blocks = adapter.blocks(inputs).cpu()
    assert torch.equal(blocks[layout.positions], torch.arange(FRAMES).repeat_interleave(64))
    text = torch.ones_like(blocks, dtype=torch.bool)
    text[layout.positions] = False
    assert bool((blocks[text] == -1).all())
    side = adapter.embed_prompt(inputs)[1]
    kept = layout.positions[::10]
    assert torch.equal(side.select(kept).blocks.cpu(), blocks[kept])  # blocks travel with their tokens


@torch.no_grad()
def test_prefills_equal_the_stock_forward(gemma_checkpoints, gemma_engines, gemma_reference):
    """The target's two-chunk prefill (bidirectional blocks and sliding windows in the hook) and the E-style
    draft's full prefill (per-layer embeddings as side features, KV sharing, soft-capping) give the stock
    forward's last logits; without the blocks the target's would not."""
    inputs, _ = gemma_reference
    for name, adapter in (("draft", gemma_engines["random"].draft_adapter), ("target", gemma_engines["random"].target_adapter)):
        stock = AutoModelForImageTextToText.from_pretrained(gemma_checkpoints[name]).eval()
        expected = stock(**inputs).logits[0, -1]
        ours = prefill_target(adapter, inputs, capture_scores=name == "target").logits
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    causal = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    assert not torch.allclose(stock(**causal).logits[0, -1], expected, atol=1e-3)  # the target's blocks matter here


@torch.no_grad()
def test_captured_scores_equal_eager_attention_of_the_full_attention_layers(gemma_checkpoints, gemma_engines, gemma_reference, eager_scores):
    """The verifier's scores come from the full-attention layers (a sliding layer's text queries see only the last
    window of the prompt): they equal the eager model's attention of the text queries to the video keys averaged
    over those layers and their heads."""
    inputs, _ = gemma_reference
    adapter = gemma_engines["none"].target_adapter
    prefill = prefill_target(adapter, inputs, capture_scores=True)
    layout = prefill.layout
    types = AutoConfig.from_pretrained(gemma_checkpoints["target"]).get_text_config().layer_types
    full = {i for i, t in enumerate(types) if t == FULL}
    expected, out, _ = eager_scores(gemma_checkpoints["target"], inputs, layout, layers=full)
    assert len(out.attentions) == len(types) > len(full)  # every layer's map; the sliding ones are left out
    torch.testing.assert_close(prefill.scores, expected, rtol=1e-4, atol=1e-6)
    assert expected.std() > 0
    torch.testing.assert_close(prefill.logits, out.logits[0, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tree", ["specvlm-25", "dynamic", [[0], [1], [0, 0]]])
def test_trees_are_refused(gemma_engines, gemma_reference, tree):
    inputs, _ = gemma_reference
    with pytest.raises(ValueError, match="sliding-window cache layers.*tree='chain'"):
        gemma_engines["random"].generate(inputs=inputs, max_new_tokens=4, method="sd", tree=tree)


def test_self_drafting_is_refused_but_plain_decoding_works(gemma_engines, gemma_reference):
    inputs, expected = gemma_reference
    engine = gemma_engines["none"]
    with pytest.raises(ValueError, match=r"self-drafting \(draft=None\) is not possible.*dropped the older prompt rows"):
        engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method="specvlm")
    assert engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method="ar").token_ids == expected


def test_side_features_select_per_layer_rows_and_blocks():
    side = Gemma4Side(
        mask=torch.ones(5, dtype=torch.bool),
        features=torch.arange(10.0).reshape(1, 5, 2),
        blocks=torch.tensor([-1, 0, 0, 1, -1]),
    )
    picked = side.select(torch.tensor([1, 3, 4]))
    assert isinstance(picked, Gemma4Side)
    assert torch.equal(picked.features, torch.tensor([[[2.0, 3.0], [6.0, 7.0], [8.0, 9.0]]]))
    assert torch.equal(picked.blocks, torch.tensor([0, 1, -1]))
