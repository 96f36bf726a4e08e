"""The verifier scores captured through the hook (SDPA, text rows only) equal eager attention."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from specvlm import SpecVLM
from specvlm.decoding.target import prefill_target

FAMILIES = ("llava_onevision", "qwen2_5_vl")


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_scores_equal_eager_attention(checkpoints, frames, family):
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"])
    inputs = engine.build_inputs(frames, "Which colour is the square?")
    adapter = engine.target_adapter
    prefill = prefill_target(adapter, inputs, capture_scores=True)
    layout = prefill.layout

    eager = AutoModelForImageTextToText.from_pretrained(checkpoints[family]["target"], attn_implementation="eager").eval()
    with torch.no_grad():
        out = eager(**inputs, output_attentions=True)
    split = layout.last_position + 1
    rows = torch.stack([a[0, :, split:, :] for a in out.attentions])  # (layers, heads, text queries, L)
    expected = rows[..., layout.positions].mean(dim=(0, 1, 2))  # (N,)

    assert prefill.scores.shape == (layout.num_tokens,)
    torch.testing.assert_close(prefill.scores, expected, rtol=1e-4, atol=1e-6)
    # the scores are informative, not flat: the capture saw real attention
    assert expected.std() > 0
    # and the prefill's next-token logits equal the eager model's
    torch.testing.assert_close(prefill.logits, out.logits[0, -1], rtol=1e-4, atol=1e-4)


def test_capture_only_touches_the_scored_forward(checkpoints, frames):
    """Without a context the hook is stock SDPA: the engine's target generates like a stock model."""
    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"])
    assert engine.target.config.get_text_config()._attn_implementation == "specvlm_attention"
    inputs = engine.build_inputs(frames, "Describe the video.")
    stock = AutoModelForImageTextToText.from_pretrained(checkpoints["llava_onevision"]["target"]).eval()
    kwargs = dict(max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert engine.target.generate(**inputs, **kwargs).tolist() == stock.generate(**inputs, **kwargs).tolist()
