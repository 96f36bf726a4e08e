"""Unit tests of the pure pieces (acceptance rule, cache edits, attention hook, metrics) with
hand-built tensors, plus the honesty of the statistics the engine reports on tiny models."""

from __future__ import annotations

import types

import pytest
import torch
from transformers import DynamicCache
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

import pruning
from specvlm import SpecVLM
from specvlm import attention
from specvlm.models import cache as kv
from specvlm.attention import AttentionContext, ScoreCapture, additive, causal_mask, specvlm_attention, tree_mask
from specvlm.stats import GenerationStats
from specvlm.decoding.verify import greedy_accept_chain

V = 11  # vocabulary of the hand-built logits
MIN32 = torch.finfo(torch.float32).min
PROMPT = "Describe the video."


# ------------------------------------------------------------------------------ greedy_accept_chain


def _logits(greedy: list[int], vocab: int = V) -> torch.Tensor:
    """(len(greedy), V) logits whose row-wise argmax is ``greedy`` (random elsewhere, clear margin)."""
    gen = torch.Generator().manual_seed(len(greedy))
    out = torch.rand(len(greedy), vocab, generator=gen)
    out[torch.arange(len(greedy)), torch.tensor(greedy)] = 5.0
    return out


def _reference_accept(drafts: list[int], greedy: list[int]) -> list[int]:
    out = []
    for d, g in zip(drafts, greedy):
        if d != g:
            break
        out.append(d)
    return out + [greedy[len(out)]]


def _accept(drafts: list[int], greedy: list[int]) -> list[int]:
    result = greedy_accept_chain(torch.tensor(drafts, dtype=torch.long), _logits(greedy))
    assert result.dtype == torch.long and result.dim() == 1
    return result.tolist()


def test_accept_all_drafts_plus_bonus():
    assert _accept([3, 5, 7], [3, 5, 7, 2]) == [3, 5, 7, 2]


def test_reject_at_first_returns_only_the_targets_token():
    assert _accept([3, 5, 7], [4, 5, 7, 2]) == [4]


def test_reject_in_the_middle():
    # d_3 == greedy[2] again, but nothing after the first mismatch may be accepted
    assert _accept([3, 5, 7], [3, 6, 7, 2]) == [3, 6]
    assert _accept([3, 5, 7], [3, 5, 8, 2]) == [3, 5, 8]


def test_no_drafts_is_a_plain_decoding_step():
    assert _accept([], [9]) == [9]
    empty = torch.empty(0, dtype=torch.long)
    assert greedy_accept_chain(empty, _logits([4])).tolist() == [4]


@pytest.mark.parametrize("n,rows", [(3, 3), (3, 5), (0, 2), (2, 0)])
def test_wrong_number_of_logit_rows(n, rows):
    with pytest.raises(ValueError) as info:
        greedy_accept_chain(torch.zeros(n, dtype=torch.long), torch.zeros(rows, V))
    assert str(info.value) == f"{n} draft tokens need {n + 1} rows of target logits, got {rows}"


def test_accept_matches_reference_on_random_cases():
    gen = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(300):
        n = int(torch.randint(0, 7, (1,), generator=gen))
        greedy = torch.randint(0, 3, (n + 1,), generator=gen).tolist()  # small range: later matches too
        drafts = torch.randint(0, 3, (n,), generator=gen).tolist()
        a = int(torch.randint(0, n + 1, (1,), generator=gen))  # force the first a drafts to match
        drafts[:a] = greedy[:a]
        got = _accept(drafts, greedy)
        assert got == _reference_accept(drafts, greedy), (drafts, greedy)
        assert len(got) >= a + 1
        lengths.add(len(got))
    assert lengths == set(range(1, 8))  # every acceptance length was exercised


def test_accepted_tokens_are_the_targets_greedy_tokens():
    """Lossless: whatever was proposed, the committed tokens are the target's argmax chain prefix."""
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(1))
    greedy = logits.argmax(-1)
    for drafts in (greedy[:5], torch.zeros(5, dtype=torch.long), torch.cat([greedy[:2], greedy[3:6]])):
        out = greedy_accept_chain(drafts, logits)
        assert torch.equal(out, greedy[: out.numel()])


# ------------------------------------------------------------------------------------------ cache


def _cache(length: int = 6, layers: int = 2, heads: int = 2, dim: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    data = [
        (torch.randn(1, heads, length, dim, generator=gen), torch.randn(1, heads, length, dim, generator=gen))
        for _ in range(layers)
    ]
    cache = DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v in data])
    return cache, data


def _contents(cache):
    return [(layer.keys, layer.values) for layer in cache.layers]


def _assert_positions(cache, data, positions):
    idx = torch.tensor(positions, dtype=torch.long)
    assert kv.length(cache) == len(positions)
    assert len(cache.layers) == len(data)
    for (k, v), (k0, v0) in zip(_contents(cache), data):
        assert torch.equal(k, k0[:, :, idx]) and torch.equal(v, v0[:, :, idx])


def test_length():
    cache, _ = _cache(length=6)
    assert kv.length(cache) == 6
    assert kv.length(DynamicCache()) == 0


def test_truncate_keeps_exact_prefix():
    cache, data = _cache(length=6)
    kv.truncate(cache, 4)
    _assert_positions(cache, data, [0, 1, 2, 3])
    kv.truncate(cache, 4)  # same length: no-op
    _assert_positions(cache, data, [0, 1, 2, 3])
    kv.truncate(cache, 1)
    _assert_positions(cache, data, [0])
    kv.truncate(cache, 0)
    assert kv.length(cache) == 0


@pytest.mark.parametrize("bad", [7, 100, -1])
def test_truncate_bad_length(bad):
    cache, data = _cache(length=6)
    with pytest.raises(ValueError) as info:
        kv.truncate(cache, bad)
    assert str(info.value) == f"cannot truncate a cache of length 6 to {bad}"
    _assert_positions(cache, data, list(range(6)))  # untouched


def test_keep_prefix_plus_selected_offsets():
    cache, data = _cache(length=8)
    kv.keep(cache, 3, torch.tensor([0, 2, 4]))
    _assert_positions(cache, data, [0, 1, 2, 3, 5, 7])
    # appending after a keep continues at the new end
    extra_k, extra_v = torch.ones(1, 2, 1, 4), torch.full((1, 2, 1, 4), 2.0)
    cache.update(extra_k, extra_v, layer_idx=0)
    assert cache.layers[0].keys.shape[-2] == 7 and torch.equal(cache.layers[0].keys[:, :, -1:], extra_k)


def test_keep_nothing_after_start_equals_truncate():
    cache, data = _cache(length=5)
    kv.keep(cache, 2, torch.tensor([], dtype=torch.long))
    _assert_positions(cache, data, [0, 1])


def test_keep_out_of_range_offset_raises():
    cache, _ = _cache(length=5)
    with pytest.raises((IndexError, RuntimeError)):
        kv.keep(cache, 3, torch.tensor([0, 2]))  # offset 2 -> position 5 does not exist


def test_subset_copies_and_leaves_source_untouched():
    cache, data = _cache(length=7)
    sub = kv.subset(cache, torch.tensor([0, 2, 3, 6]))
    assert isinstance(sub, DynamicCache) and sub is not cache
    _assert_positions(sub, data, [0, 2, 3, 6])
    _assert_positions(cache, data, list(range(7)))
    # editing the subset never reaches the source
    kv.truncate(sub, 2)
    sub.layers[0].keys.add_(100.0)
    sub.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), layer_idx=1)
    _assert_positions(cache, data, list(range(7)))
    # and editing the source never reaches an earlier subset
    sub2 = kv.subset(cache, torch.arange(7))
    kv.truncate(cache, 1)
    _assert_positions(sub2, data, list(range(7)))


def _growing(length: int = 6, reserve: int = 4, layers: int = 2):
    """A GrowingLayer cache holding the same data as ``_cache(length)``."""
    _, data = _cache(length=length, layers=layers)
    cache = DynamicCache(ddp_cache_data=[(k.clone(), v.clone()) for k, v in data])
    cache.layers = [kv.GrowingLayer(reserve) for _ in data]
    for i, (k, v) in enumerate(data):
        cache.update(k.clone(), v.clone(), layer_idx=i)
    return cache, data


def test_growing_layer_appends_in_place_and_grows_when_full():
    cache, data = _growing(length=6, reserve=4)
    layer = cache.layers[0]
    buffer = layer.keys.data_ptr()
    appended = [torch.randn(1, 2, 1, 4) for _ in range(6)]
    for i, k in enumerate(appended):
        cache.update(k, k + 1, layer_idx=0)
        if i < 4:  # within the reserve: same storage, written in place
            assert layer.keys.data_ptr() == buffer
    assert layer.keys.data_ptr() != buffer  # grew once the reserve ran out
    expected = torch.cat([data[0][0]] + appended, dim=-2)
    assert torch.equal(layer.keys, expected)
    assert torch.equal(layer.values, torch.cat([data[0][1]] + [k + 1 for k in appended], dim=-2))


def test_growing_layer_keep_and_truncate_then_append():
    cache, data = _growing(length=8, reserve=16)
    kv.keep(cache, 3, torch.tensor([0, 2, 4]))
    _assert_positions(cache, data, [0, 1, 2, 3, 5, 7])
    kv.truncate(cache, 5)
    _assert_positions(cache, data, [0, 1, 2, 3, 5])
    new = torch.randn(1, 2, 2, 4)
    cache.update(new, new, layer_idx=0)
    assert torch.equal(cache.layers[0].keys, torch.cat([data[0][0][:, :, [0, 1, 2, 3, 5]], new], dim=-2))


def test_growing_layer_counts_its_rows_through_every_edit():
    """The row count the layer keeps (what update and get_seq_length read) follows every way the
    stock cache or this module changes the layer, and an update after each writes in the right place."""
    cache, data = _growing(length=8, reserve=16)
    layer = cache.layers[0]

    def check(expected_keys):
        assert layer.rows == layer.keys.shape[-2] == cache.get_seq_length() == expected_keys.shape[-2]
        assert torch.equal(layer.keys, expected_keys)

    keys = data[0][0]
    check(keys)
    kv.keep(cache, 3, [0, 2, 4])  # non-contiguous: gathered
    keys = keys[:, :, [0, 1, 2, 3, 5, 7]]
    check(keys)
    cache.crop(-2)  # the stock crop
    keys = keys[:, :, :4]
    check(keys)
    new = torch.randn(1, 2, 3, 4)
    cache.update(new, new, layer_idx=0)
    keys = torch.cat([keys, new], dim=-2)
    check(keys)
    cache.reorder_cache(torch.tensor([0]))  # replaces keys with a copy: the buffers are dropped
    assert layer._k is None
    check(keys)
    cache.update(new, new, layer_idx=0)
    keys = torch.cat([keys, new], dim=-2)
    check(keys)
    assert layer.keys.data_ptr() == layer._k.data_ptr()  # writing into buffers again
    cache.batch_select_indices(torch.tensor([0]))
    check(keys)
    cache.reset()
    assert layer.rows == 0 and cache.get_seq_length() == 0


def test_ensure_capacity_allocates_before_the_update():
    cache, data = _growing(length=6, reserve=2)
    layer = cache.layers[0]
    kv.ensure_capacity(cache, 5)
    buffer = layer._k.data_ptr()
    assert layer._k.shape[-2] >= 11 and torch.equal(layer.keys, data[0][0])
    new = torch.randn(1, 2, 5, 4)
    cache.update(new, new, layer_idx=0)
    assert layer._k.data_ptr() == buffer  # written in place: no allocation inside the step
    assert torch.equal(layer.keys, torch.cat([data[0][0], new], dim=-2))


def test_new_cache_and_subset_use_growing_layers(checkpoints):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoints["llava_onevision"]["target"]).get_text_config(decoder=True)
    cache = kv.new_cache(config, reserve=8)
    assert len(cache.layers) == config.num_hidden_layers
    assert all(type(layer) is kv.GrowingLayer for layer in cache.layers)
    grown, data = _growing(length=7)
    sub = kv.subset(grown, torch.tensor([0, 2, 6]))
    assert all(type(layer) is kv.GrowingLayer for layer in sub.layers)
    _assert_positions(sub, data, [0, 2, 6])
    sub.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), layer_idx=0)
    _assert_positions(grown, data, list(range(7)))  # the source is untouched


def test_only_full_attention_layers_are_index_selected():
    """Sliding-window (and linear-attention) layers keep a contiguous prefix but are never index-selected:
    subsets (self-drafting) and tree paths raise with the reason; unknown layer classes raise TypeError."""
    from transformers.cache_utils import DynamicSlidingWindowLayer, StaticLayer

    k, v = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    sliding = DynamicCache()
    sliding.layers = [DynamicSlidingWindowLayer(sliding_window=16)]
    sliding.update(k, v, layer_idx=0)
    with pytest.raises(ValueError, match="DynamicSlidingWindowLayer cannot be index-selected.*window"):
        kv.subset(sliding, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="contiguous run.*tree='chain'"):
        kv.keep(sliding, 1, torch.tensor([1]))
    kv.keep(sliding, 1, torch.tensor([0]))  # within the window: a plain crop
    assert kv.length(sliding) == 2 and torch.equal(sliding.layers[0].keys, k[..., :2, :])
    static = DynamicCache()
    static.layers = [StaticLayer(max_cache_len=8)]
    with pytest.raises(TypeError, match="StaticLayer is not supported"):
        kv.keep(static, 0, [])


def test_nbytes():
    cache, _ = _cache(length=6, layers=3, heads=2, dim=4)
    assert kv.nbytes(cache) == 3 * 2 * (1 * 2 * 6 * 4) * 4
    kv.truncate(cache, 3)
    assert kv.nbytes(cache) == 3 * 2 * (1 * 2 * 3 * 4) * 4


# -------------------------------------------------------------------------------------- attention


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


# ------------------------------------------------------------------------------------------ stats


def test_tau_definitions():
    stats = GenerationStats(method="sd", accepted_lengths=[3, 1, 2, 6])
    assert stats.mean_accepted_tokens == 3.0
    assert stats.mean_accepted_draft_tokens == 2.0
    ar = GenerationStats(method="ar", accepted_lengths=[1] * 7)
    assert ar.mean_accepted_tokens == 1.0 and ar.mean_accepted_draft_tokens == 0.0
    empty = GenerationStats(method="ar")
    assert empty.mean_accepted_tokens is None and empty.mean_accepted_draft_tokens is None  # no step: no tau


def test_time_and_kv_metrics():
    stats = GenerationStats(method="specvlm", new_tokens=5, prefill_s=0.5, decode_s=2.0, draft_kv_tokens=37, target_kv_tokens=102)
    assert stats.tpot_s == 0.5  # decode seconds per token after the first
    assert stats.ttft_s == 0.5 and stats.e2e_s == 2.5
    assert stats.draft_kv_fraction == 37 / 102
    assert GenerationStats(method="ar", new_tokens=1, decode_s=3.0).tpot_s == 0.0
    assert GenerationStats(method="ar", new_tokens=0, decode_s=3.0).tpot_s == 0.0
    assert GenerationStats(method="ar").draft_kv_fraction == 0.0
    d = stats.to_dict()
    for name in ("mean_accepted_tokens", "mean_accepted_draft_tokens", "e2e_s", "ttft_s", "tpot_s", "draft_kv_fraction"):
        assert d[name] == getattr(stats, name)
    assert d["draft_kv_tokens"] == 37


# ----------------------------------------------------------------------- engine stats honesty


@pytest.fixture(scope="module")
def engines(checkpoints):
    """{family: (engine with separate draft, self-drafting engine)} with EOS disabled."""
    out = {}
    for family, paths in checkpoints.items():
        # short answers here: the draft starts with the target (lazy_draft_after=0) so its stats are checked
        pair = SpecVLM.from_pretrained(paths["target"], draft=paths["draft"], lazy_draft_after=0)
        alone = SpecVLM.from_pretrained(paths["target"], draft=None, self_draft_layers="all", lazy_draft_after=0)
        for engine in (pair, alone):
            engine.target.generation_config.eos_token_id = None  # stock generate() then never stops early
        out[family] = (pair, alone)
    return out


@pytest.fixture(scope="module")
def inputs(engines, frames):
    return {family: pair.build_inputs(frames, PROMPT) for family, (pair, _) in engines.items()}


def _expected_gammas(accepted_lengths, max_new_tokens, k):
    """Draft tokens proposed at each step by the loop's rule gamma = min(k, remaining - 1)."""
    committed, gammas = 1, []
    for length in accepted_lengths:
        gammas.append(max(0, min(k, max_new_tokens - committed - 1)))
        committed += length
    return gammas


def _check_common(result, max_new_tokens):
    stats = result.stats
    assert stats.new_tokens == len(result.token_ids) == max_new_tokens
    assert stats.stopped_by == "max_new_tokens"
    assert sum(stats.accepted_lengths) == stats.new_tokens - 1  # the first token is the prefill's
    assert stats.target_steps == len(stats.accepted_lengths)
    assert all(length >= 1 for length in stats.accepted_lengths)
    assert stats.target_kv_tokens == stats.prompt_tokens
    assert stats.prefill_s > 0 and stats.decode_s > 0


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_ar_stats(engines, inputs, family):
    for engine in engines[family]:
        result = engine.generate(inputs=inputs[family], max_new_tokens=7, method="ar")
        stats = result.stats
        _check_common(result, 7)
        assert stats.accepted_lengths == [1] * 6
        assert stats.target_steps == stats.new_tokens - 1
        assert stats.mean_accepted_tokens == 1.0 and stats.mean_accepted_draft_tokens == 0.0
        assert stats.draft_steps == 0 and stats.kept_video_tokens == 0 and stats.draft_kv_tokens == 0
        assert stats.draft_kv_fraction == 0.0
        assert stats.prompt_tokens == inputs[family]["input_ids"].shape[1]
        n_video = int((inputs[family]["input_ids"] == engine.target.config.video_token_id).sum())
        structural = 1 if family == "llava_onevision" else 0  # LLaVA-OV's trailing newline token
        assert stats.video_tokens == n_video - structural


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_self_drafting_without_pruning_accepts_every_draft(engines, inputs, family):
    _, engine = engines[family]
    k, max_new = 3, 14
    ar = engine.generate(inputs=inputs[family], max_new_tokens=max_new, method="ar")
    result = engine.generate(inputs=inputs[family], max_new_tokens=max_new, method="sd", num_draft_tokens=k)
    stats = result.stats
    _check_common(result, max_new)
    assert result.token_ids == ar.token_ids
    # 13 tokens after the prefill's: 4 + 4 + 4 + 1 (the last step has no room left for drafts)
    assert stats.accepted_lengths == [k + 1, k + 1, k + 1, 1]
    assert stats.accepted_lengths[:-1] == [k + 1] * (len(stats.accepted_lengths) - 1)
    assert stats.draft_steps == sum(_expected_gammas(stats.accepted_lengths, max_new, k)) == 3 * k
    assert stats.mean_accepted_tokens == 13 / 4
    assert stats.kept_video_tokens == stats.video_tokens
    assert stats.draft_kv_tokens == stats.target_kv_tokens == stats.prompt_tokens
    assert stats.draft_kv_fraction == 1.0


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
@pytest.mark.parametrize("strategy,drop_rate", [("uniform", 0.9), ("uniform", 0.5), ("specvlm", 0.75), ("random", 0.3)])
def test_kept_video_tokens_and_draft_kv(engines, inputs, family, strategy, drop_rate):
    for engine in engines[family]:
        result = engine.generate(
            inputs=inputs[family], max_new_tokens=3, method="specvlm", pruning=strategy, drop_rate=drop_rate
        )
        stats = result.stats
        _check_common(result, 3)
        n = stats.video_tokens
        assert n > 1
        assert stats.kept_video_tokens == pruning.budget(n, drop_rate)
        assert stats.kept_video_tokens < n
        assert stats.draft_kv_tokens == stats.prompt_tokens - n + stats.kept_video_tokens
        assert stats.draft_kv_fraction == stats.draft_kv_tokens / stats.prompt_tokens
        assert stats.draft_steps == sum(_expected_gammas(stats.accepted_lengths, 3, engine.config.num_draft_tokens))


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_separate_draft_stats_are_consistent(engines, inputs, family):
    pair, _ = engines[family]
    ar = pair.generate(inputs=inputs[family], max_new_tokens=8, method="ar")
    for method in ("sd", "specvlm"):
        result = pair.generate(inputs=inputs[family], max_new_tokens=8, method=method)
        stats = result.stats
        _check_common(result, 8)
        assert result.token_ids == ar.token_ids
        assert stats.draft_steps == sum(_expected_gammas(stats.accepted_lengths, 8, pair.config.num_draft_tokens))
        assert stats.mean_accepted_tokens == sum(stats.accepted_lengths) / len(stats.accepted_lengths)
        if method == "sd":
            assert stats.kept_video_tokens == stats.video_tokens
            assert stats.draft_kv_tokens == stats.prompt_tokens
        else:
            assert stats.kept_video_tokens == pruning.budget(stats.video_tokens, pair.config.drop_rate)


def test_no_eos_means_no_early_stop_like_stock_generate(checkpoints, frames):
    """With ``generation_config.eos_token_id = None`` stock greedy ``generate()`` runs to
    ``max_new_tokens`` even past the tokenizer's EOS token; the engine must stop at the same place."""
    from transformers import AutoModelForImageTextToText

    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], draft=None)
    inputs = engine.build_inputs(frames, PROMPT)
    engine.target.generation_config.eos_token_id = []  # certainly no EOS
    free = engine.generate(inputs=inputs, max_new_tokens=8, method="ar").token_ids
    # make the tokenizer's EOS a token the target emits early
    tokenizer = engine.processor.tokenizer
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(free[2])
    assert tokenizer.eos_token_id == free[2]
    engine.target.generation_config.eos_token_id = None
    stock = AutoModelForImageTextToText.from_pretrained(checkpoints["llava_onevision"]["target"]).eval()
    stock.generation_config.eos_token_id = None
    with torch.no_grad():
        ref = stock.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    assert ref == free
    for method in ("ar", "sd", "specvlm"):
        result = engine.generate(inputs=inputs, max_new_tokens=8, method=method)
        assert result.token_ids == ref, method
        assert result.stats.stopped_by == "max_new_tokens"
    # and a real EOS id still stops it right after that token
    engine.target.generation_config.eos_token_id = free[2]
    assert engine.generate(inputs=inputs, max_new_tokens=8, method="sd").token_ids == free[: free.index(free[2]) + 1]
