"""The verifier scores captured through the hook (SDPA, text rows only) equal eager attention."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from specvlm import SpecVLM
from specvlm.decoding.target import prefill_target

FAMILIES = ("llava_onevision", "qwen2_5_vl")


@pytest.mark.parametrize("family", FAMILIES)
def test_captured_scores_equal_eager_attention(checkpoints, frames, family, eager_scores):
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"])
    inputs = engine.build_inputs(frames, "Which colour is the square?")
    adapter = engine.target_adapter
    prefill = prefill_target(adapter, inputs, capture_scores=True)
    layout = prefill.layout

    expected, out, _ = eager_scores(checkpoints[family]["target"], inputs, layout)

    assert prefill.scores.shape == (layout.num_tokens,)
    torch.testing.assert_close(prefill.scores, expected, rtol=1e-4, atol=1e-6)
    # the scores are informative, not flat: the capture saw real attention
    assert expected.std() > 0
    # and the prefill's next-token logits equal the eager model's
    torch.testing.assert_close(prefill.logits, out.logits[0, -1], rtol=1e-4, atol=1e-4)


def test_capture_only_touches_the_scored_forward(checkpoints, frames):
    """Without a context the hook is stock SDPA: the engine's target generates like a stock model."""
    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"])
    assert engine.target.config.get_text_config()._attn_implementation == "context_attention"
    inputs = engine.build_inputs(frames, "Describe the video.")
    stock = AutoModelForImageTextToText.from_pretrained(checkpoints["llava_onevision"]["target"]).eval()
    kwargs = dict(max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert engine.target.generate(**inputs, **kwargs).tolist() == stock.generate(**inputs, **kwargs).tolist()


@pytest.mark.parametrize("with_lse", [False, True])
def test_capture_temporaries_stay_within_the_block_bound(monkeypatch, with_lse):
    """A long text after the video (many query rows) is captured a block of rows at a time: no query x
    captured-key temporary exceeds the bound, and the scores equal the dense softmax's."""
    from specvlm.attention import capture as capture_module
    from specvlm.attention.capture import ScoreCapture
    from specvlm.attention.context import causal_context

    torch.manual_seed(0)
    heads, kv_heads, q_len, kv_len, dim = 4, 2, 96, 160, 8
    query, key = torch.randn(1, heads, q_len, dim), torch.randn(1, kv_heads, kv_len, dim)
    video = torch.arange(10, 60)  # 50 captured keys, all before the text
    bound = heads * 8 * video.numel()  # 8 query rows of every head at once
    monkeypatch.setattr(capture_module, "_CAPTURE_BLOCK_ELEMENTS", bound)
    formed = []
    real = capture_module.scaled_logits

    def recording(q, k, scaling):
        out = real(q, k, scaling)
        if k.shape[2] == video.numel():  # the query x captured-key logits (not the LSE's query x key blocks)
            formed.append(out.numel())
        return out

    monkeypatch.setattr(capture_module, "scaled_logits", recording)
    ctx = causal_context(q_len, kv_len, "cpu")
    scale = dim**-0.5
    full_key = key.repeat_interleave(heads // kv_heads, dim=1)
    dense = (query @ full_key.transpose(-1, -2)) * scale + ctx._bias(q_len, kv_len, slice(None), None, "cpu")
    probs = dense.float().softmax(-1)  # (1, H, q, kv)
    lse = torch.logsumexp(dense.float(), dim=-1) if with_lse else None
    cap = ScoreCapture(key_positions=video)
    cap.add(query, key, ctx, scale, lse=lse)
    assert formed and max(formed) <= bound and len(formed) == q_len // 8
    expected = probs[..., video].sum(dim=(0, 1, 2)) / (heads * q_len)
    assert torch.allclose(cap.mean(), expected, atol=1e-6)
