"""The cache operations per layer kind (specvlm/models/cache.py) on hand-built tensors: length, truncate, keep a
prefix plus selected offsets, subsets, the growing layer that appends in place, the layer kinds that may or may not
be index-selected, and sliding-window and KV-shared layers keeping exactly the committed prefix."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from specvlm.models import cache as kv


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


def test_sliding_window_and_shared_layers_keep_the_committed_prefix():
    """Cache operations per layer kind beyond linear attention (Gemma-style caches): a sliding-window layer
    keeps only its last ``window - 1`` rows, so a recorded forward keeps every row until the keep, which
    then crops back to the window ending at the last kept token, exactly the rows plain decoding would hold;
    a KV-shared layer (``DummyLayer``) holds nothing and is left alone."""
    from transformers import DynamicCache
    from transformers.cache_utils import DummyLayer, DynamicSlidingWindowLayer

    window, prompt, block = 4, 6, 3
    rows = torch.randn(1, 2, prompt + block, 8)

    def fresh():
        cache = DynamicCache()
        cache.layers = [DynamicSlidingWindowLayer(sliding_window=window), kv.GrowingLayer(), DummyLayer()]
        for i in (0, 1):
            cache.update(rows[..., :prompt, :], rows[..., :prompt, :], layer_idx=i)
        return cache

    cache = fresh()
    assert kv.length(cache) == prompt and cache.layers[0].keys.shape[-2] == window - 1
    kv.record(cache, block)
    for i in (0, 1):
        cache.update(rows[..., prompt:, :], rows[..., prompt:, :], layer_idx=i)
    assert cache.layers[0].keys.shape[-2] == window - 1 + block  # recorded: nothing dropped yet
    kv.keep(cache, prompt, [0])  # the first new token committed, the other two rolled back
    reference = fresh()
    for i in (0, 1):
        reference.update(rows[..., prompt : prompt + 1, :], rows[..., prompt : prompt + 1, :], layer_idx=i)
    assert kv.length(cache) == kv.length(reference) == prompt + 1
    assert torch.equal(cache.layers[0].keys, reference.layers[0].keys)  # the window ending at the kept token
    assert torch.equal(cache.layers[1].keys, reference.layers[1].keys)
    assert kv.nbytes(cache) == kv.nbytes(reference)
    # without a record() the rows past the window are gone: rolling back raises instead of going wrong
    for i in (0, 1):
        cache.update(rows[..., :2, :], rows[..., :2, :], layer_idx=i)
    with pytest.raises(ValueError, match="past its window of 4: the forward was not recorded"):
        kv.keep(cache, prompt + 1, [0])
