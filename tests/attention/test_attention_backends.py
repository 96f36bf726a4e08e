"""Attention backends behind the hook: structured contexts, the cascade (prefix + local block merged by
log-sum-exp), score capture without an L x L matrix, backend selection, and a tiny model end to end."""

from __future__ import annotations

import types

import pytest
import torch
from transformers import AutoModelForImageTextToText, DynamicCache
from transformers.integrations.sdpa_attention import repeat_kv

from specvlm import SpecVLM
from specvlm import attention
from specvlm.attention import capture as capture_module, kernels as attention_backends
from specvlm.attention.kernels import merge_attention
from specvlm.attention import (
    ATTENTION_BACKENDS,
    BACKENDS,
    AttentionContext,
    ScoreCapture,
    causal_context,
    causal_mask,
    resolve_backend,
    specvlm_attention,
    tree_context,
    tree_mask,
)

CPU_BACKENDS = ("sdpa", "cascade")
FAMILIES = ("llava_onevision", "qwen2_5_vl")


def _qkv(q_len, kv_len, heads=4, kv_heads=2, dim=8, value_dim=None, seed=0, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    # the transformers layout: projections are (B, L, H, D) and arrive transposed to (B, H, L, D)
    query = torch.randn(1, q_len, heads, dim, generator=gen).transpose(1, 2)
    key = torch.randn(1, kv_heads, kv_len, dim, generator=gen)
    value = torch.randn(1, kv_heads, kv_len, value_dim or dim, generator=gen)
    module = types.SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    return module, *(t.to(device=device, dtype=dtype) for t in (query, key, value))


def _reference(query, key, value, mask, scale):
    """Dense softmax attention in float64 over repeated key/value heads, (1, q, H, Dv) like the hook."""
    groups = query.shape[1] // key.shape[1]
    k, v = repeat_kv(key, groups).double(), repeat_kv(value, groups).double()
    logits = query.double() @ k.transpose(-1, -2) * scale
    if mask is not None:
        logits = logits + mask.double()
    probs = torch.softmax(logits, dim=-1)
    return (probs @ v).transpose(1, 2).to(query.dtype), probs


def _random_tree(n, seed):
    """(n, n) ancestor-or-self mask of a random forest: node i's parent is in [-1, i - 1] (-1: a root that
    sees no other local key)."""
    gen = torch.Generator().manual_seed(seed)
    parent = [int(torch.randint(-1, i, (1,), generator=gen)) if i else -1 for i in range(n)]
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:
            allowed[i, j] = True
            j = parent[j]
    return allowed, parent


def _run(backend, ctx_builder, module, query, key, value, scale):
    ctx = ctx_builder(backend)
    out, weights = specvlm_attention(module, query, key, value, None, scaling=scale, specvlm_ctx=ctx)
    assert weights is None
    return out


# ------------------------------------------------------------------------------ contexts


def test_causal_context_forms_and_dense_masks():
    chunk = causal_context(3, 7, "cpu", backend="cascade")
    assert chunk.prefix == 4 and chunk.backend == "cascade" and chunk.structured
    assert torch.equal(chunk.local, torch.ones(3, 3, dtype=torch.bool).tril())
    assert torch.equal(chunk.dense_mask(torch.float32), causal_mask(3, 7, torch.float32, "cpu"))
    assert torch.equal(chunk.dense_mask(torch.bfloat16), causal_mask(3, 7, torch.bfloat16, "cpu"))

    single = causal_context(1, 9, "cpu")
    assert single.prefix == 9 and single.local is None and single.dense_mask(torch.float32) is None

    fresh = causal_context(5, 5, "cpu", capture=ScoreCapture(key_positions=torch.tensor([0])))
    assert not fresh.structured and fresh.mask is None and fresh.capture is not None  # plain causal: no 5 x 5 mask

    with pytest.raises(ValueError, match="cache length 2 is shorter than the 3 new tokens"):
        causal_context(3, 2, "cpu")


def test_tree_context_dense_mask_equals_tree_mask():
    allowed, _ = _random_tree(6, seed=3)
    ctx = tree_context(10, allowed, backend="cascade")
    assert ctx.prefix == 10 and torch.equal(ctx.local, allowed) and ctx.backend == "cascade"
    assert torch.equal(ctx.dense_mask(torch.float16), tree_mask(10, allowed, torch.float16))
    with pytest.raises(ValueError, match="square"):
        tree_context(3, torch.ones(2, 3, dtype=torch.bool))


def test_context_validation():
    with pytest.raises(ValueError, match="either a dense `mask` or a structured"):
        AttentionContext(mask=torch.zeros(1, 1, 2, 2), prefix=0)
    with pytest.raises(ValueError, match="`local` needs `prefix`"):
        AttentionContext(local=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="2-D bool"):
        AttentionContext(prefix=1, local=torch.ones(2, 2))
    module, query, key, value = _qkv(3, 9)
    bad = AttentionContext(prefix=5, local=torch.ones(3, 3, dtype=torch.bool).tril())  # 5 + 3 != 9
    for backend in CPU_BACKENDS:
        bad.backend = backend
        with pytest.raises(ValueError, match="covers 5 prefix \\+ 3 local keys but the cache holds 9"):
            specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=bad)
        with pytest.raises(ValueError, match="a 3-token forward over a 9-token cache needs an explicit mask"):
            specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=AttentionContext(backend=backend))


# ------------------------------------------------------------------------------ cascade vs dense SDPA


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("q_len,kv_len", [(3, 7), (4, 40), (6, 6), (1, 9), (1, 1), (2, 2)])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_causal_chunks_match_dense_sdpa(backend, q_len, kv_len, heads, kv_heads):
    module, query, key, value = _qkv(q_len, kv_len, heads, kv_heads, seed=q_len * 100 + kv_len)
    scale = 0.37
    out = _run(backend, lambda b: causal_context(q_len, kv_len, "cpu", backend=b), module, query, key, value, scale)
    expected, _ = _reference(query, key, value, causal_mask(q_len, kv_len, torch.float32, "cpu"), scale)
    assert out.shape == (1, q_len, heads, 8) and out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("prefix", [0, 1, 17])
@pytest.mark.parametrize("seed", range(4))
def test_verification_trees_match_dense_sdpa(backend, prefix, seed):
    n = 9
    allowed, parent = _random_tree(n, seed)
    module, query, key, value = _qkv(n, prefix + n, seed=seed)
    out = _run(backend, lambda b: tree_context(prefix, allowed, backend=b), module, query, key, value, 0.3)
    expected, _ = _reference(query, key, value, tree_mask(prefix, allowed, torch.float32), 0.3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    if prefix == 0:
        # with no prefix a root (parent -1) sees only itself: its output is its own value row
        for root in (i for i in range(n) if parent[i] == -1):
            torch.testing.assert_close(out[0, root], repeat_kv(value, 2)[0, :, root], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (6, 2), (4, 1)])
@pytest.mark.parametrize("form", ["tree", "dense", "dense_broadcast_rows"])
def test_sdpa_masked_grouped_query_folds_heads_instead_of_copying_the_cache(monkeypatch, heads, kv_heads, form):
    """A masked forward with grouped key/value heads equals the stock SDPA path over repeated heads, and
    never repeats (copies) the key/value cache."""
    from transformers.integrations import sdpa_attention

    n, prefix = 6, 30
    allowed, _ = _random_tree(n, heads + kv_heads)
    module, query, key, value = _qkv(n, prefix + n, heads, kv_heads, seed=heads)
    mask = tree_mask(prefix, allowed, torch.float32)
    if form == "dense_broadcast_rows":  # one mask row for every query
        mask = torch.zeros(1, 1, 1, prefix + n).masked_fill(torch.arange(prefix + n) % 5 == 0, torch.finfo(torch.float32).min)
    stock, _ = sdpa_attention.sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)

    def no_copy(*args, **kwargs):
        raise AssertionError("the key/value heads were repeated")

    monkeypatch.setattr(sdpa_attention, "repeat_kv", no_copy)
    ctx = tree_context(prefix, allowed) if form == "tree" else AttentionContext(mask=mask)
    out, _ = specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=ctx)
    assert out.shape == (1, n, heads, 8) and out.is_contiguous()
    torch.testing.assert_close(out, stock, rtol=1e-6, atol=1e-6)


def test_tree_differs_from_a_causal_chunk():
    """The masks matter: the same tensors under a tree and under a causal chunk give different outputs."""
    allowed, _ = _random_tree(6, seed=1)
    assert not torch.equal(allowed, torch.ones(6, 6, dtype=torch.bool).tril())
    module, query, key, value = _qkv(6, 16)
    tree = _run("cascade", lambda b: tree_context(10, allowed, backend=b), module, query, key, value, 0.3)
    chain = _run("cascade", lambda b: causal_context(6, 16, "cpu", backend=b), module, query, key, value, 0.3)
    assert not torch.allclose(tree, chain, atol=1e-3)


def test_cascade_local_causal_kernel_path_equals_explicit_local_path():
    module, query, key, value = _qkv(5, 12, seed=7)
    fused = causal_context(5, 12, "cpu", backend="cascade")
    explicit = AttentionContext(prefix=7, local=torch.ones(5, 5, dtype=torch.bool).tril(), backend="cascade")
    assert fused._local_causal and not explicit._local_causal
    a, _ = specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=fused)
    b, _ = specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=explicit)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_prefix_covering_every_key_is_unmasked_attention():
    module, query, key, value = _qkv(4, 10)
    for backend in CPU_BACKENDS:
        out = _run(backend, lambda b: AttentionContext(prefix=10, backend=b), module, query, key, value, 0.3)
        expected, _ = _reference(query, key, value, None, 0.3)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_cascade_with_a_value_head_size_the_kernel_refuses_falls_back():
    """Q/K head size 8, V head size 16: the CPU fused kernel refuses; the explicit path gives the same result."""
    module, query, key, value = _qkv(3, 11, value_dim=16)
    out = _run("cascade", lambda b: causal_context(3, 11, "cpu", backend=b), module, query, key, value, 0.3)
    expected, _ = _reference(query, key, value, causal_mask(3, 11, torch.float32, "cpu"), 0.3)
    assert out.shape == (1, 3, 4, 16)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cascade_half_precision_close_to_float32(dtype):
    module, query, key, value = _qkv(4, 30)
    allowed, _ = _random_tree(4, seed=2)
    ref, _ = _reference(query, key, value, tree_mask(26, allowed, torch.float32), 0.3)
    q, k, v = (t.to(dtype) for t in (query, key, value))
    out = _run("cascade", lambda b: tree_context(26, allowed, backend=b), module, q, k, v, 0.3)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=3e-2)


def test_cpu_fused_kernel_returns_natural_log_lse():
    """The aten kernel with LSE exists on CPU in this torch and its LSE is the natural-log row normaliser."""
    assert hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
    _, query, key, value = _qkv(3, 13, heads=2, kv_heads=2)
    res = attention_backends._kernel_with_lse(query, key, value, 0.3, causal=False)
    assert res is not None
    out, lse = res
    logits = query @ key.transpose(-1, -2) * 0.3
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, torch.softmax(logits, -1) @ value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_lse_folds_grouped_heads(causal):
    _, query, key, value = _qkv(5, 5, heads=6, kv_heads=2)
    out, lse = attention_backends._attention_with_lse(query, key, value, 0.3, causal=causal)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril() if causal else None
    ref_out, ref_lse = attention_backends._explicit_attention(query, key, value, 0.3, allowed)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)
    expected, _ = _reference(query, key, value, causal_mask(5, 5, torch.float32, "cpu") if causal else None, 0.3)
    torch.testing.assert_close(out.transpose(1, 2), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ merge_attention


def _part(logits, value, visible):
    """Softmax attention restricted to `visible` keys, and its LSE (-inf and NaN output for an empty row)."""
    masked = logits.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(masked, -1)
    return torch.softmax(masked, -1) @ value, lse


def test_merge_attention_equals_full_softmax():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 10, generator=gen) * 3
    value = torch.randn(2, 10, 5, generator=gen)
    in_a = torch.rand(10, generator=gen) < 0.5
    in_a[0], in_a[1] = True, False
    full_out = torch.softmax(logits, -1) @ value
    out_a, lse_a = _part(logits, value, in_a.expand(6, 10))
    out_b, lse_b = _part(logits, value, (~in_a).expand(6, 10))
    out, lse = merge_attention(out_a, lse_a, out_b, lse_b)
    torch.testing.assert_close(out, full_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1), rtol=1e-5, atol=1e-5)
    # symmetric in its parts
    out2, _ = merge_attention(out_b, lse_b, out_a, lse_a)
    torch.testing.assert_close(out2, full_out, rtol=1e-5, atol=1e-6)


def test_merge_attention_with_fully_masked_rows():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 4, 8, generator=gen)
    value = torch.randn(1, 8, 3, generator=gen)
    visible_a = torch.ones(4, 8, dtype=torch.bool)
    visible_a[:, 5:] = False
    visible_b = ~visible_a
    visible_b[1] = False  # row 1: part b sees nothing
    visible_a[2] = False  # row 2: part a sees nothing
    visible_a[3] = visible_b[3] = False  # row 3: nothing at all
    out_a, lse_a = _part(logits, value, visible_a)
    out_b, lse_b = _part(logits, value, visible_b)
    assert torch.isnan(out_b[0, 1]).all() and torch.isinf(lse_b[0, 1])  # the empty part's output is garbage
    out, lse = merge_attention(out_a, lse_a, out_b, lse_b)
    assert torch.isfinite(out).all()
    union = visible_a | visible_b
    for row in range(3):
        expected, exp_lse = _part(logits[:, row : row + 1], value, union[row : row + 1])
        torch.testing.assert_close(out[:, row : row + 1], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(lse[:, row : row + 1], exp_lse, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[0, 3], torch.zeros(3)) and lse[0, 3] == float("-inf")


def test_merge_attention_keeps_precision_with_far_apart_lse():
    out_a, out_b = torch.ones(1, 2), torch.full((1, 2), 2.0)
    out, lse = merge_attention(out_a, torch.tensor([1000.0]), out_b, torch.tensor([0.0]))
    torch.testing.assert_close(out, out_a)
    torch.testing.assert_close(lse, torch.tensor([1000.0]))
    out, _ = merge_attention(out_a.half(), torch.tensor([0.0]), out_b, torch.tensor([0.0]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 2), 1.5))


# ------------------------------------------------------------------------------ score capture


POSITIONS = torch.tensor([0, 2, 3, 5, 8, 9])


def _contexts():
    allowed, _ = _random_tree(4, seed=5)
    return {
        "chunk": (
            3, 10, lambda b, cap: causal_context(3, 10, "cpu", backend=b, capture=cap), causal_mask(3, 10, torch.float32, "cpu")
        ),
        "fresh": (
            10, 10, lambda b, cap: causal_context(10, 10, "cpu", backend=b, capture=cap), causal_mask(10, 10, torch.float32, "cpu")
        ),
        "single": (1, 10, lambda b, cap: causal_context(1, 10, "cpu", backend=b, capture=cap), None),
        "plain_single": (1, 10, lambda b, cap: AttentionContext(backend=b, capture=cap), None),
        "tree": (
            4, 10, lambda b, cap: AttentionContext(prefix=6, local=allowed, backend=b, capture=cap), tree_mask(6, allowed, torch.float32)
        ),
    }


@pytest.mark.parametrize("case", ["chunk", "fresh", "single", "plain_single", "tree"])
def test_capture_equals_softmax_attention_with_every_backend(case):
    q_len, kv_len, build, mask = _contexts()[case]
    module, query, key, value = _qkv(q_len, kv_len, seed=11)
    _, probs = _reference(query, key, value, mask, 0.3)
    expected = probs[..., POSITIONS].mean(dim=(0, 1, 2)).float()
    means = {}
    for backend in CPU_BACKENDS:
        capture = ScoreCapture(key_positions=POSITIONS)
        ctx = build(backend, capture)
        specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=ctx)
        specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=ctx)  # a second layer
        assert capture.rows == 2 * 4 * q_len
        means[backend] = capture.mean()
        torch.testing.assert_close(means[backend], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(means["sdpa"], means["cascade"], rtol=1e-5, atol=1e-7)


def test_capture_with_a_dense_mask_context_and_the_old_call():
    module, query, key, value = _qkv(3, 10, seed=2)
    mask = causal_mask(3, 10, torch.float32, "cpu")
    _, probs = _reference(query, key, value, mask, 0.3)
    expected = probs[..., POSITIONS].mean(dim=(0, 1, 2)).float()
    for backend in ("sdpa", "cascade"):  # a dense mask runs through SDPA whatever the backend
        capture = ScoreCapture(key_positions=POSITIONS)
        ctx = AttentionContext(mask=mask, capture=capture, backend=backend)
        specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=ctx)
        torch.testing.assert_close(capture.mean(), expected, rtol=1e-5, atol=1e-6)
    # the original call: repeated key heads, an additive mask, no LSE
    capture = ScoreCapture(key_positions=POSITIONS)
    capture.add(query, repeat_kv(key, 2), mask, 0.3)
    torch.testing.assert_close(capture.mean(), expected, rtol=1e-5, atol=1e-6)
    # mask None means every key is visible
    capture = ScoreCapture(key_positions=POSITIONS)
    capture.add(query, key, None, 0.3)
    _, unmasked = _reference(query, key, value, None, 0.3)
    torch.testing.assert_close(capture.mean(), unmasked[..., POSITIONS].mean(dim=(0, 1, 2)).float(), rtol=1e-5, atol=1e-6)


def test_capture_uses_the_backend_lse(monkeypatch):
    """With the cascade the row normaliser comes from the kernel: the explicit row LSE is never computed."""
    module, query, key, value = _qkv(3, 10)

    def forbidden(*args, **kwargs):
        raise AssertionError("the row LSE was recomputed")

    monkeypatch.setattr(capture_module, "_row_lse", forbidden)
    capture = ScoreCapture(key_positions=POSITIONS)
    ctx = causal_context(3, 10, "cpu", backend="cascade", capture=capture)
    specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=ctx)
    assert capture.rows == 12
    with pytest.raises(AssertionError, match="recomputed"):
        ctx = causal_context(3, 10, "cpu", backend="sdpa", capture=ScoreCapture(key_positions=POSITIONS))
        specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=ctx)


def test_row_lse_in_blocks_equals_one_block(monkeypatch):
    module, query, key, value = _qkv(7, 12, seed=4)
    ctx = causal_context(7, 12, "cpu")
    whole = capture_module._row_lse(query, key, ctx, 0.3)
    monkeypatch.setattr(capture_module, "_LSE_BLOCK_ELEMENTS", 4 * 12 * 2)  # two rows per block
    blocked = capture_module._row_lse(query, key, ctx, 0.3)
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-6)
    logits = query @ repeat_kv(key, 2).transpose(-1, -2) * 0.3 + causal_mask(7, 12, torch.float32, "cpu")
    torch.testing.assert_close(whole, torch.logsumexp(logits, -1), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ backend selection


def test_backend_registry():
    assert BACKENDS == ("sdpa", "cascade", "flash_attn")
    assert set(ATTENTION_BACKENDS) == set(BACKENDS) and all(callable(f) for f in ATTENTION_BACKENDS.values())


def test_resolve_backend_on_cpu():
    assert resolve_backend("auto", "cpu") == "sdpa"
    assert resolve_backend("sdpa", torch.device("cpu")) == "sdpa"
    assert resolve_backend("cascade", "cpu") == "cascade"
    with pytest.raises(ValueError, match=r"unknown attention backend 'flash'; choose one of: auto, sdpa, cascade, flash_attn"):
        resolve_backend("flash", "cpu")
    with pytest.raises(ValueError, match="'flash_attn' attention backend needs a CUDA device, got 'cpu'"):
        resolve_backend("flash_attn", "cpu")


def test_resolve_backend_on_cuda_follows_the_package(monkeypatch):
    monkeypatch.setattr(attention_backends, "_flash_attn_module", lambda: None)
    assert resolve_backend("auto", "cuda") == "cascade"
    assert resolve_backend("cascade", "cuda:0") == "cascade"
    with pytest.raises(ImportError, match="needs the flash-attn package"):
        resolve_backend("flash_attn", "cuda")
    monkeypatch.setattr(attention_backends, "_flash_attn_module", lambda: types.SimpleNamespace())
    assert resolve_backend("auto", "cuda") == "flash_attn"
    assert resolve_backend("flash_attn", "cuda") == "flash_attn"


def test_hook_rejects_unknown_and_unusable_backends():
    module, query, key, value = _qkv(3, 7)
    with pytest.raises(ValueError, match="unknown attention backend 'bogus'; choose one of: auto, sdpa, cascade"):
        causal_context(3, 7, "cpu", backend="bogus")  # refused when the context is built
    late = causal_context(3, 7, "cpu")
    late.backend = "bogus"
    with pytest.raises(ValueError, match="unknown attention backend 'bogus'"):  # and by the hook
        specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=late)
    with pytest.raises(ValueError, match="needs CUDA tensors, got cpu"):
        specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=causal_context(3, 7, "cpu", backend="flash_attn"))
    with pytest.raises(ValueError, match="does not support dropout"):
        ctx = causal_context(3, 7, "cpu", backend="cascade")
        specvlm_attention(module, query, key, value, None, scaling=0.3, dropout=0.1, specvlm_ctx=ctx)
    # "auto" resolves per call: sdpa on CPU
    out, _ = specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=causal_context(3, 7, "cpu", backend="auto"))
    torch.testing.assert_close(out, _reference(query, key, value, causal_mask(3, 7, torch.float32, "cpu"), 0.3)[0], rtol=1e-5, atol=1e-5)


def _fake_flash_attn(calls):
    """A stand-in for flash_attn.flash_attn_func in torch: (B, L, H, D) layout, grouped key/value heads,
    bottom-right aligned causal mask, returns (out, lse, None) with return_attn_probs."""

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, return_attn_probs=False):
        assert q.shape[0] == 1 and q.shape[2] == 4 and k.shape[2] in (1, 2, 4), "layout must be (B, L, H, D)"
        calls.append((q.shape[1], k.shape[1], causal))
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        groups = qh.shape[1] // kh.shape[1]
        logits = qh @ repeat_kv(kh, groups).transpose(-1, -2) * softmax_scale
        if causal:
            ql, kl = q.shape[1], k.shape[1]
            logits = logits + causal_mask(ql, kl, torch.float32, q.device)
        out = (torch.softmax(logits, -1) @ repeat_kv(vh, groups)).transpose(1, 2)
        return (out, torch.logsumexp(logits, -1), None) if return_attn_probs else out

    return types.SimpleNamespace(flash_attn_func=flash_attn_func)


def test_flash_attn_backend_plumbing_with_a_stand_in(monkeypatch):
    """Layouts, the cascade split and the LSE hand-off of the flash_attn backend, on CPU with a stand-in kernel."""
    calls = []
    monkeypatch.setattr(attention_backends, "_flash_attn_module", lambda: _fake_flash_attn(calls))
    monkeypatch.setattr(attention_backends, "_check_flash_inputs", lambda query: None)
    allowed, _ = _random_tree(5, seed=9)
    cases = [
        # (context, q, kv, dense reference mask, expected kernel calls (q, k, causal))
        (
            lambda b, cap: causal_context(3, 12, "cpu", backend=b, capture=cap), 3, 12,
            causal_mask(3, 12, torch.float32, "cpu"), [(3, 9, False), (3, 3, True)],
        ),
        (
            lambda b, cap: causal_context(6, 6, "cpu", backend=b, capture=cap), 6, 6,
            causal_mask(6, 6, torch.float32, "cpu"), [(6, 6, True)],
        ),
        (lambda b, cap: causal_context(1, 12, "cpu", backend=b, capture=cap), 1, 12, None, [(1, 12, False)]),
        (lambda b, cap: tree_context(7, allowed, backend=b), 5, 12, tree_mask(7, allowed, torch.float32), [(5, 7, False)]),
    ]
    for build, q_len, kv_len, mask, expected_calls in cases:
        calls.clear()
        module, query, key, value = _qkv(q_len, kv_len, seed=q_len)
        picked = POSITIONS[POSITIONS < kv_len]
        capture = ScoreCapture(key_positions=picked)
        out, _ = specvlm_attention(module, query, key, value, None, scaling=0.3, specvlm_ctx=build("flash_attn", capture))
        expected, probs = _reference(query, key, value, mask, 0.3)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert out.shape == (1, q_len, 4, 8) and out.is_contiguous()
        assert calls == expected_calls
        if capture.rows:
            torch.testing.assert_close(capture.mean(), probs[..., picked].mean(dim=(0, 1, 2)).float(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ a tiny model end to end


def _model_run(adapter, embeds, positions, split, backend, tree_tokens, allowed, depth):
    """Prefill [0, split) plainly, the text after it as a causal chunk with capture, then a tree; returns
    (chunk logits, tree logits, captured mean)."""
    length = embeds.shape[1]
    cache = DynamicCache(config=adapter.text_config)
    device = adapter.device
    adapter.forward(embeds[:, :split], positions[:, :split], cache, AttentionContext(backend=backend), logits_to_keep=1)
    capture = ScoreCapture(key_positions=torch.arange(1, split, 2, device=device))
    ctx = causal_context(length - split, length, device, backend=backend, capture=capture)
    chunk = adapter.forward(embeds[:, split:], positions[:, split:], cache, ctx, logits_to_keep=0)
    pos = adapter.continuation(int(positions.max()) + 1, depth, positions.shape[0]).to(device)
    tree_ctx = tree_context(length, allowed.to(device), backend=backend)
    tree = adapter.forward(adapter.embed_tokens(tree_tokens[None]), pos, cache, tree_ctx, 0)
    return chunk, tree, capture.mean()


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_logits_equal_across_backends(checkpoints, frames, family):
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"])
    adapter = engine.target_adapter
    inputs = engine.build_inputs(frames, "Which colour is the square?")
    with torch.no_grad():
        embeds = adapter.embed(inputs)
        positions = adapter.positions(inputs).to(adapter.device)
        split = adapter.layout(inputs).last_position + 1
        allowed, parent = _random_tree(7, seed=0)
        depth = []
        for p in parent:  # parents come before their children
            depth.append(0 if p < 0 else depth[p] + 1)
        depth = torch.tensor(depth)
        tokens = torch.randint(0, adapter.vocab_size, (7,), generator=torch.Generator().manual_seed(0))
        runs = {b: _model_run(adapter, embeds, positions, split, b, tokens, allowed, depth) for b in CPU_BACKENDS}
        stock = engine.target(**inputs).logits[0, split:]  # the stock forward (no context: stock SDPA)
    sdpa, cascade = runs["sdpa"], runs["cascade"]
    torch.testing.assert_close(cascade[0][0], sdpa[0][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cascade[1], sdpa[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cascade[2], sdpa[2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(cascade[0][0], stock, rtol=1e-4, atol=1e-4)


def test_tiny_model_cascade_capture_equals_eager_attention(checkpoints, frames):
    family = "qwen2_5_vl"
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"])
    adapter = engine.target_adapter
    inputs = engine.build_inputs(frames, "Which colour is the square?")
    layout = adapter.layout(inputs)
    split = layout.last_position + 1
    with torch.no_grad():
        embeds = adapter.embed(inputs)
        positions = adapter.positions(inputs).to(adapter.device)
        length = embeds.shape[1]
        cache = DynamicCache(config=adapter.text_config)
        adapter.forward(embeds[:, :split], positions[:, :split], cache, AttentionContext(backend="cascade"), 1)
        capture = ScoreCapture(key_positions=layout.positions.to(adapter.device))
        ctx = causal_context(length - split, length, adapter.device, backend="cascade", capture=capture)
        adapter.forward(embeds[:, split:], positions[:, split:], cache, ctx, 1)
        eager = AutoModelForImageTextToText.from_pretrained(checkpoints[family]["target"], attn_implementation="eager").eval()
        out = eager(**inputs, output_attentions=True)
    rows = torch.stack([a[0, :, split:, :] for a in out.attentions])
    expected = rows[..., layout.positions].mean(dim=(0, 1, 2))
    torch.testing.assert_close(capture.mean(), expected, rtol=1e-4, atol=1e-6)
    assert expected.std() > 0


# ------------------------------------------------------------------------------ CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("q_len,kv_len", [(1, 300), (5, 300), (64, 64), (40, 1000)])
def test_cuda_cascade_matches_dense_sdpa(dtype, q_len, kv_len):
    module, query, key, value = _qkv(q_len, kv_len, heads=8, kv_heads=2, dim=64, dtype=dtype, device="cuda")
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    out = _run("cascade", lambda b: causal_context(q_len, kv_len, "cuda", backend=b), module, query, key, value, 0.125)
    expected, _ = _reference(query.float(), key.float(), value.float(), causal_mask(q_len, kv_len, torch.float32, "cuda"), 0.125)
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=tol)
    allowed, _ = _random_tree(min(q_len, 16), seed=1)
    n = allowed.shape[0]
    module, query, key, value = _qkv(n, kv_len, heads=8, kv_heads=2, dim=64, dtype=dtype, device="cuda")
    out = _run("cascade", lambda b: tree_context(kv_len - n, allowed.cuda(), backend=b), module, query, key, value, 0.125)
    expected, _ = _reference(query.float(), key.float(), value.float(), tree_mask(kv_len - n, allowed.cuda(), torch.float32), 0.125)
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_fused_kernel_lse_shape_and_values(dtype):
    _, query, key, value = _qkv(5, 77, heads=4, kv_heads=4, dim=64, dtype=dtype, device="cuda")
    res = attention_backends._kernel_with_lse(query, key, value, 0.125, causal=False)
    assert res is not None, "no fused CUDA kernel with LSE ran"
    out, lse = res
    assert lse.shape == (1, 4, 5) and lse.dtype == torch.float32  # the efficient kernel pads its LSE: trimmed
    logits = query.float() @ key.float().transpose(-1, -2) * 0.125
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1), rtol=0, atol=1e-2 if dtype != torch.float32 else 1e-4)


@pytest.mark.skipif(
    not torch.cuda.is_available() or attention_backends._flash_attn_module() is None, reason="needs CUDA and the flash-attn package"
)
@pytest.mark.parametrize("q_len,kv_len", [(1, 300), (5, 300), (64, 64)])
def test_cuda_flash_attn_backend_matches_dense_sdpa(q_len, kv_len):
    module, query, key, value = _qkv(q_len, kv_len, heads=8, kv_heads=2, dim=64, dtype=torch.bfloat16, device="cuda")
    capture = ScoreCapture(key_positions=torch.arange(0, kv_len, 7, device="cuda"))
    ctx = causal_context(q_len, kv_len, "cuda", backend="flash_attn", capture=capture)
    out, _ = specvlm_attention(module, query, key, value, None, scaling=0.125, specvlm_ctx=ctx)
    expected, probs = _reference(query.float(), key.float(), value.float(), causal_mask(q_len, kv_len, torch.float32, "cuda"), 0.125)
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=2e-2)
    torch.testing.assert_close(capture.mean(), probs[..., capture.key_positions].mean(dim=(0, 1, 2)).float(), rtol=2e-2, atol=1e-4)
