"""Explicit operations on transformers' stock ``DynamicCache``.

Speculative decoding needs four things from a KV cache: its length, cropping back to a length,
keeping an arbitrary set of positions (the accepted path of a verified tree, or the kept video tokens
for a self-drafting cache), and copying a subset into a new cache. They are plain functions over the
stock class, so any model that uses ``DynamicCache`` works unchanged.

:func:`new_cache` builds a ``DynamicCache`` whose layers (:class:`GrowingLayer`) keep spare capacity,
so a decode step writes its few new rows in place instead of re-allocating the whole cache.

What this module deliberately does not do: sliding-window, quantised or offloaded caches (it raises
for layers it does not know how to edit).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A stock ``DynamicLayer`` whose ``keys``/``values`` are prefix views of larger buffers.

    The stock layer concatenates on every update, copying the whole cache each forward; this one
    writes the new rows into spare capacity (``reserve`` rows, or half the length when larger, added
    whenever it runs out). Cropping and :func:`keep` leave prefix views of the same buffers, so the
    next update writes in place again.
    """

    def __init__(self, reserve: int = 256):
        super().__init__()
        self.reserve = reserve
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.keys.shape[-2] if self.keys.numel() else 0
        new = n + key_states.shape[-2]
        fits = self._k is not None and new <= self._k.shape[-2] and (n == 0 or self.keys.data_ptr() == self._k.data_ptr())
        if not fits:
            capacity = new + max(self.reserve, new // 2)
            k = key_states.new_empty((*key_states.shape[:-2], capacity, key_states.shape[-1]))
            v = value_states.new_empty((*value_states.shape[:-2], capacity, value_states.shape[-1]))
            if n:
                k[..., :n, :] = self.keys
                v[..., :n, :] = self.values
            self._k, self._v = k, v
        self._k[..., n:new, :] = key_states
        self._v[..., n:new, :] = value_states
        self.keys, self.values = self._k[..., :new, :], self._v[..., :new, :]
        return self.keys, self.values

    def reset(self) -> None:
        super().reset()
        self._k = self._v = None


def new_cache(config, reserve: int = 256) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` with :class:`GrowingLayer` layers (full attention only)."""
    cache = DynamicCache(config=config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise TypeError("new_cache supports full-attention models only (every layer a DynamicLayer)")
    cache.layers = [GrowingLayer(reserve) for _ in cache.layers]
    return cache


def _layers(cache: DynamicCache):
    for layer in cache.layers:
        if type(layer) not in (DynamicLayer, GrowingLayer):
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


def keep(cache: DynamicCache, start: int, indices: torch.Tensor | list[int]) -> None:
    """Keep positions ``[0, start)`` plus ``start + indices`` and drop the rest (in place).

    Used after verification: ``indices`` (sorted; a list, or an (n,) tensor) are the committed nodes'
    offsets in the verified block. A contiguous run ``0..n-1`` (a chain's accepted prefix) is a plain
    crop; otherwise the kept rows are gathered and written back at ``start`` before cropping, so the
    prefix is never copied.
    """
    values = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    n = len(values)
    contiguous = values == list(range(n))
    indices = None if contiguous else torch.tensor(values, dtype=torch.long)
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
    out = DynamicCache(ddp_cache_data=data)
    grown = []
    for (keys, values), layer in zip(data, cache.layers):
        copy = GrowingLayer(getattr(layer, "reserve", 256))
        copy.update(keys, values)
        grown.append(copy)
    out.layers = grown
    return out


def nbytes(cache: DynamicCache) -> int:
    """Bytes held by keys and values."""
    return sum(l.keys.numel() * l.keys.element_size() + l.values.numel() * l.values.element_size() for l in _layers(cache))
