"""Explicit operations on transformers' stock ``DynamicCache``.

Speculative decoding needs five things from a KV cache: its length, cropping back to a length,
keeping an arbitrary set of positions (the accepted path of a verified tree, or the kept video tokens
for a self-drafting cache), copying a subset into a new cache, and copying another cache's rows in
(:func:`adopt`: a layer-skipping self-draft takes the target's exact rows of every committed token).
They are plain functions over the stock class, so any model that uses ``DynamicCache`` works unchanged.

A self-drafting cache (:func:`subset`) is a :class:`PartialCache`: forwards that skip decoder layers
leave those layers' rows alone, so its length is read from a layer every forward runs.

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
    """A stock ``DynamicLayer`` that keeps its rows in larger buffers and writes new rows in place.

    The stock layer concatenates on every update, copying the whole cache each forward; this one
    writes the new rows into spare capacity (``reserve`` rows, or half the length when larger, added
    whenever it runs out). Cropping and :func:`keep` only move the row count, so the next update writes
    in place again.

    ``keys`` / ``values`` are properties: the buffers' first ``rows`` rows. Assigning either (as the
    stock offloading, beam reordering and batch selection do) hands the rows over to plain tensors
    and drops the buffers; the next update copies them into new ones. An update reads and writes only
    the buffers and the row count, so a compiled decode step takes no view of them as an input or
    output (which would make the graph alias its inputs).
    """

    def __init__(self, reserve: int = 256):
        self._k: torch.Tensor | None = None  # buffers (B, H, capacity, D), or None
        self._v: torch.Tensor | None = None
        self._n = 0  # rows in use while the buffers are set
        self._keys: torch.Tensor | None = None  # the tensors themselves while no buffers are set
        self._values: torch.Tensor | None = None
        super().__init__()
        self.reserve = reserve

    @property
    def keys(self) -> torch.Tensor | None:
        return self._keys if self._k is None else self._k[..., : self._n, :]

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        self._loosen()
        self._keys = value

    @property
    def values(self) -> torch.Tensor | None:
        return self._values if self._v is None else self._v[..., : self._n, :]

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        self._loosen()
        self._values = value

    def _loosen(self) -> None:
        """Hand the rows in use over to plain tensors (views of the buffers) and drop the buffers."""
        if self._k is not None:
            self._keys, self._values = self._k[..., : self._n, :], self._v[..., : self._n, :]
            self._k = self._v = None

    @property
    def rows(self) -> int:
        """Cached positions (``keys`` is a 1-D placeholder right after the stock lazy initialisation)."""
        if self._k is not None:
            return self._n
        return self._keys.shape[-2] if self._keys is not None and self._keys.dim() > 1 else 0

    def _allocate(self, rows: int, like_keys: torch.Tensor, like_values: torch.Tensor) -> None:
        """New buffers for ``rows`` rows plus spare capacity, holding a copy of the current rows."""
        n = self.rows
        capacity = rows + max(self.reserve, rows // 2)
        k = like_keys.new_empty((*like_keys.shape[:-2], capacity, like_keys.shape[-1]))
        v = like_values.new_empty((*like_values.shape[:-2], capacity, like_values.shape[-1]))
        if n:
            k[..., :n, :] = self.keys
            v[..., :n, :] = self.values
        self._k, self._v, self._n = k, v, n
        self._keys = self._values = None

    def ensure_capacity(self, extra: int) -> None:
        """Allocate now if ``extra`` more rows would not fit, so the next update writes in place (a
        compiled decode step then never traces the allocation)."""
        if self.rows and (self._k is None or self.rows + extra > self._k.shape[-2]):
            self._allocate(self.rows + extra, self.keys, self.values)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.rows
        new = n + key_states.shape[-2]
        if self._k is None or new > self._k.shape[-2]:
            self._allocate(new, key_states, value_states)
        self._k[..., n:new, :] = key_states
        self._v[..., n:new, :] = value_states
        self._n = new
        return self._k[..., :new, :], self._v[..., :new, :]

    def get_seq_length(self) -> int:
        return self.rows

    def crop(self, tokens_to_remove: int) -> None:
        if self._k is None or tokens_to_remove > 0:  # the stock checks and legacy handling
            super().crop(tokens_to_remove)
        else:
            self._n = max(0, self._n - abs(tokens_to_remove))


class PartialCache(DynamicCache):
    """A ``DynamicCache`` some of whose forwards run only a subset of the decoder layers (a layer-skipping
    self-draft): the skipped layers' rows are not written by those forwards, so the cache's length is
    that of ``length_layer``, a layer every forward runs (0 unless set)."""

    length_layer: int = 0

    def get_seq_length(self, layer_idx: int | None = None) -> int:
        return super().get_seq_length(self.length_layer if layer_idx is None else layer_idx)


def new_cache(config, reserve: int = 256) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` with :class:`GrowingLayer` layers (full attention only)."""
    cache = DynamicCache(config=config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise TypeError("new_cache supports full-attention models only (every layer a DynamicLayer)")
    cache.layers = [GrowingLayer(reserve) for _ in cache.layers]
    return cache


def ensure_capacity(cache: DynamicCache, extra: int) -> None:
    """Make room for ``extra`` more positions in every :class:`GrowingLayer` of ``cache`` (no-op for others)."""
    for layer in cache.layers:
        if isinstance(layer, GrowingLayer):
            layer.ensure_capacity(extra)


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
        layer.crop(start + n - layer.get_seq_length())  # a negative count removes that many trailing positions


def subset(cache: DynamicCache, positions: torch.Tensor) -> PartialCache:
    """A new cache holding only ``positions`` (sorted, long) of ``cache``; ``cache`` is left untouched."""
    data = []
    for layer in _layers(cache):
        idx = positions.to(layer.keys.device)
        data.append((layer.keys.index_select(-2, idx), layer.values.index_select(-2, idx)))
    out = PartialCache(ddp_cache_data=data)
    grown = []
    for (keys, values), layer in zip(data, cache.layers):
        copy = GrowingLayer(getattr(layer, "reserve", 256))
        copy.update(keys, values)
        grown.append(copy)
    out.layers = grown
    return out


def adopt(cache: DynamicCache, length: int, source: DynamicCache, start: int, stop: int) -> None:
    """Cut every layer of ``cache`` back to its first ``length`` positions, then append positions
    ``[start, stop)`` of the same layer of ``source`` (in place; ``source`` is left untouched).

    A layer-skipping self-draft writes approximate rows (its hidden states skipped layers) and none at
    all in the layers it skips; after each verification it replaces them with the target's exact rows
    of the tokens just committed, so every layer holds every committed token, whichever layers the next
    draft runs.
    """
    for mine, theirs in zip(_layers(cache), _layers(source)):
        rows = mine.get_seq_length()
        if rows < length:
            raise ValueError(f"cannot cut a cache layer of {rows} positions back to {length}")
        if rows > length:
            mine.crop(length - rows)
        if stop > start:
            mine.update(theirs.keys[..., start:stop, :], theirs.values[..., start:stop, :])


def nbytes(cache: DynamicCache) -> int:
    """Bytes held by keys and values."""
    return sum(l.keys.numel() * l.keys.element_size() + l.values.numel() * l.values.element_size() for l in _layers(cache))
