"""Explicit operations on transformers' stock ``DynamicCache``.

Speculative decoding needs four things from a KV cache: its length, cropping back to a length,
keeping an arbitrary set of positions (the accepted path of a verified tree, or the kept video tokens
for a self-drafting cache), and copying a subset into a new cache. They are plain functions over the
stock class, so any model that uses ``DynamicCache`` works unchanged.

What this module deliberately does not do: sliding-window, quantised or offloaded caches (it raises
for layers it does not know how to edit).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def _layers(cache: DynamicCache):
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise TypeError(f"cache layer {type(layer).__name__} is not supported; only full-attention DynamicLayer is")
        yield layer


def length(cache: DynamicCache) -> int:
    """Number of cached token positions."""
    return cache.get_seq_length()


def truncate(cache: DynamicCache, new_length: int) -> None:
    """Drop every cached position at or after ``new_length`` (in place)."""
    current = length(cache)
    if not 0 <= new_length <= current:
        raise ValueError(f"cannot truncate a cache of length {current} to {new_length}")
    if new_length < current:
        cache.crop(new_length - current)  # a negative count removes that many trailing positions


def keep(cache: DynamicCache, start: int, indices: torch.Tensor) -> None:
    """Keep positions ``[0, start)`` plus ``start + indices`` and drop the rest (in place).

    Used after verification: ``indices`` (n,) sorted, are the committed nodes' offsets in the verified
    block. A contiguous run ``0..n-1`` (a chain's accepted prefix) is a plain crop; otherwise the kept
    rows are gathered and written back at ``start`` before cropping, so the prefix is never copied.
    """
    indices = indices.to(torch.long).cpu()
    n = int(indices.numel())
    contiguous = bool(torch.equal(indices, torch.arange(n)))
    for layer in _layers(cache):
        if layer.keys is None or layer.keys.numel() == 0:
            continue
        if not contiguous:
            idx = indices.to(layer.keys.device) + start
            layer.keys[..., start : start + n, :] = layer.keys.index_select(-2, idx)
            layer.values[..., start : start + n, :] = layer.values.index_select(-2, idx)
        layer.keys = layer.keys[..., : start + n, :]
        layer.values = layer.values[..., : start + n, :]


def subset(cache: DynamicCache, positions: torch.Tensor) -> DynamicCache:
    """A new cache holding only ``positions`` (sorted, long) of ``cache``; ``cache`` is left untouched."""
    data = []
    for layer in _layers(cache):
        idx = positions.to(layer.keys.device)
        data.append((layer.keys.index_select(-2, idx), layer.values.index_select(-2, idx)))
    return DynamicCache(ddp_cache_data=data)


def nbytes(cache: DynamicCache) -> int:
    """Bytes held by keys and values."""
    return sum(l.keys.numel() * l.keys.element_size() + l.values.numel() * l.values.element_size() for l in _layers(cache))
