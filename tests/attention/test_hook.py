"""The attention hook's pure pieces on hand-built tensors: causal and tree masks, the additive form, the score
capture's mean attention, the hook itself against stock SDPA and a manual softmax, and its registration in
transformers' attention registry."""

from __future__ import annotations

import types

import pytest
import torch
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

from specvlm import attention
from specvlm.attention import AttentionContext, ScoreCapture, additive, causal_mask, specvlm_attention, tree_mask

MIN32 = torch.finfo(torch.float32).min


@pytest.mark.parametrize("q,kvl", [(1, 1), (1, 5), (3, 3), (3, 7), (4, 9)])
def test_causal_mask_values(q, kvl):
    mask = causal_mask(q, kvl, torch.float32, "cpu")
    assert mask.shape == (1, 1, q, kvl) and mask.dtype == torch.float32
    for i in range(q):
        for j in range(kvl):
            expected = 0.0 if j <= i + kvl - q else MIN32
            assert mask[0, 0, i, j].item() == expected, (i, j)


def test_causal_mask_dtype_minimum_and_bad_sizes():
    mask = causal_mask(2, 4, torch.bfloat16, "cpu")
    assert mask.dtype == torch.bfloat16
    assert mask[0, 0, 0, 3].item() == torch.finfo(torch.bfloat16).min
    assert mask[0, 0, 1, 3].item() == 0.0
    with pytest.raises(ValueError, match="cache length 2 is shorter than the 3 new tokens"):
        causal_mask(3, 2, torch.float32, "cpu")


def test_tree_mask():
    # node 0 is the root, nodes 1 and 2 are its children, node 3 is a child of node 1
    allowed = torch.tensor(
        [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool
    )
    mask = tree_mask(3, allowed, torch.float32)
    assert mask.shape == (1, 1, 4, 7)
    assert torch.all(mask[0, 0, :, :3] == 0)  # every node sees the whole prefix
    expected = torch.where(allowed, 0.0, MIN32)
    assert torch.equal(mask[0, 0, :, 3:], expected)
    # a chain "tree" is the causal mask
    chain = torch.tril(torch.ones(4, 4, dtype=torch.bool))
    assert torch.equal(tree_mask(5, chain, torch.float32), causal_mask(4, 9, torch.float32, "cpu"))


def test_additive():
    allowed = torch.tensor([[True, False], [False, True]])
    out = additive(allowed, torch.float16)
    assert out.dtype == torch.float16
    assert torch.equal(out, torch.tensor([[0.0, torch.finfo(torch.float16).min], [torch.finfo(torch.float16).min, 0.0]], dtype=torch.float16))
    assert additive(allowed).dtype == torch.float32


def test_score_capture_mean_before_any_capture_raises():
    capture = ScoreCapture(key_positions=torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="no attention was captured"):
        capture.mean()


def _qkv(q_len, kv_len, heads=4, kv_heads=2, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(1, heads, q_len, dim, generator=gen)
    key = torch.randn(1, kv_heads, kv_len, dim, generator=gen)
    value = torch.randn(1, kv_heads, kv_len, dim, generator=gen)
    module = types.SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    return module, query, key, value


def _manual_attention(query, key, value, mask, scale):
    """Softmax attention written out (no SDPA), output (1, q, H, D) like the hook's."""
    probs = torch.softmax(query @ key.transpose(-1, -2) * scale + mask, dim=-1)
    return (probs @ value).transpose(1, 2), probs


def test_score_capture_accumulates_mean_attention():
    module, query, key, value = _qkv(3, 7)
    groups = module.num_key_value_groups
    scale = 8 ** -0.5
    mask = causal_mask(3, 7, torch.float32, "cpu")
    positions = torch.tensor([1, 2, 4])
    capture = ScoreCapture(key_positions=positions)
    _, probs = _manual_attention(query, repeat_kv(key, groups), repeat_kv(value, groups), mask, scale)
    capture.add(query, repeat_kv(key, groups), mask, scale)
    capture.add(query, repeat_kv(key, groups), mask, scale)  # a second "layer"
    assert capture.rows == 2 * 4 * 3  # layers * heads * text queries
    expected = probs[..., positions].mean(dim=(0, 1, 2))
    assert torch.allclose(capture.mean(), expected, atol=1e-6)
    assert capture.mean().dtype == torch.float32


def test_hook_without_context_is_stock_sdpa():
    for q_len in (5, 1):  # a fresh prefill and a single query over a cache
        kvl = 5
        module, query, key, value = _qkv(q_len, kvl)
        mask = None if q_len == kvl else torch.zeros(1, 1, q_len, kvl)
        ours, _ = specvlm_attention(module, query, key, value, mask, scaling=0.3)
        stock, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
        assert torch.equal(ours, stock)
    # and the stock path really is causal SDPA
    module, query, key, value = _qkv(5, 5)
    ours, _ = specvlm_attention(module, query, key, value, None, scaling=0.3)
    expected, _ = _manual_attention(query, repeat_kv(key, 2), repeat_kv(value, 2), causal_mask(5, 5, torch.float32, "cpu"), 0.3)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_hook_with_context_and_offset_causal_mask_matches_sdpa():
    module, query, key, value = _qkv(3, 7)
    mask = causal_mask(3, 7, torch.float32, "cpu")
    scale = 8 ** -0.5
    ours, _ = specvlm_attention(module, query, key, value, None, scaling=scale, specvlm_ctx=AttentionContext(mask=mask))
    assert ours.shape == (1, 3, 4, 8)
    k, v = repeat_kv(key, 2), repeat_kv(value, 2)
    torch_sdpa = torch.nn.functional.scaled_dot_product_attention(query, k, v, attn_mask=mask, scale=scale).transpose(1, 2)
    assert torch.allclose(ours, torch_sdpa, atol=1e-6)
    manual, _ = _manual_attention(query, k, v, mask, scale)
    assert torch.allclose(ours, manual, atol=1e-5)
    # the last query (the newest token) sees every key, the first only the cache + itself
    no_mask, _ = _manual_attention(query, k, v, torch.zeros_like(mask), scale)
    assert torch.allclose(ours[:, -1], no_mask[:, -1], atol=1e-5)
    assert not torch.allclose(ours[:, 0], no_mask[:, 0], atol=1e-3)


def test_hook_context_fresh_prefill_and_capture():
    module, query, key, value = _qkv(4, 4)
    capture = ScoreCapture(key_positions=torch.tensor([0, 2]))
    ours, _ = specvlm_attention(module, query, key, value, None, scaling=0.5, specvlm_ctx=AttentionContext(capture=capture))
    causal = causal_mask(4, 4, torch.float32, "cpu")
    expected, probs = _manual_attention(query, repeat_kv(key, 2), repeat_kv(value, 2), causal, 0.5)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(capture.mean(), probs[..., [0, 2]].mean(dim=(0, 1, 2)), atol=1e-6)


def test_hook_refuses_multi_token_forward_over_a_cache_without_mask():
    module, query, key, value = _qkv(3, 7)
    with pytest.raises(ValueError, match="a 3-token forward over a 7-token cache needs an explicit mask"):
        specvlm_attention(module, query, key, value, None, scaling=0.5, specvlm_ctx=AttentionContext())


def test_register_is_idempotent():
    """Registering twice leaves one entry in transformers' own attention registry, bound to the hook."""
    from transformers import AttentionInterface

    name = attention.register()
    registry = AttentionInterface._global_mapping
    before = dict(registry)
    assert attention.register() == name == attention.ATTN_IMPLEMENTATION
    assert dict(registry) == before  # nothing added or replaced by the second call
    assert registry[name] is attention.specvlm_attention  # the name stock models resolve is the hook itself
