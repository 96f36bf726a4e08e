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

Layer kinds (:func:`layer_kind`) and what each does when the loop keeps a committed path:

* ``full`` (``DynamicLayer`` / :class:`GrowingLayer`): rows are cropped, or gathered then cropped (a tree path);
* ``sliding`` (``DynamicSlidingWindowLayer``): it keeps only its last ``window - 1`` rows, so a forward that
  may be rolled back is recorded first (:func:`record`: the layer keeps every row until the next
  :func:`keep`), and the crop then restores the window;
* ``shared`` (``DummyLayer``, a KV-shared layer reading another layer's rows): nothing to do;
* ``linear`` (``LinearAttentionLayer``, e.g. Qwen3.5's Gated-DeltaNet): no rows at all, one convolution
  state and one recurrent state. :func:`record` before a forward of n tokens makes the layer keep its
  recurrent state after each of the n tokens (and its whole convolution input); :func:`keep` restores
  exactly one of them: the state after the last kept token (before the forward's first token for a full
  rejection). Every recorded token must have its state (the stock assisted decoding records one too few).
  Only a prefix can be kept (a linear layer cannot drop a middle token), so trees are refused.

The loop calls :func:`record` before every decode-time forward (a no-op for a cache of full-attention
layers) and :func:`keep` / :func:`truncate` after verification; it never needs to know the layer kinds.

What this module deliberately does not do: quantised, static or offloaded caches (it raises for layers it
does not know how to edit), or self-drafting subsets of sliding-window and linear layers (refused with the
reason).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DummyLayer, DynamicLayer, DynamicSlidingWindowLayer, LinearAttentionLayer


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


#: the stock cache layer classes of each kind this module edits (exact types: a subclass may store differently)
_KINDS = {
    DynamicLayer: "full",
    GrowingLayer: "full",
    DynamicSlidingWindowLayer: "sliding",
    LinearAttentionLayer: "linear",
    DummyLayer: "shared",
}


def layer_kind(layer) -> str:
    """"full", "sliding", "linear" or "shared" (see the module docstring); TypeError for any other layer."""
    kind = _KINDS.get(type(layer))
    if kind is None:
        raise TypeError(
            f"cache layer {type(layer).__name__} is not supported; supported: {', '.join(c.__name__ for c in _KINDS)}"
        )
    return kind


def new_cache(config, reserve: int = 256) -> DynamicCache:
    """A ``DynamicCache`` for ``config``: its full-attention layers are :class:`GrowingLayer`s, its
    sliding-window, linear-attention and KV-shared layers the stock ones (TypeError for other kinds)."""
    cache = DynamicCache(config=config)
    for layer in cache.layers:
        layer_kind(layer)
    cache.layers = [GrowingLayer(reserve) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def record(cache: DynamicCache, tokens: int) -> None:
    """Prepare ``cache`` for a forward of ``tokens`` new tokens that the next :func:`keep` may roll back.

    Linear-attention layers record the recurrent state after each of the ``tokens`` tokens (several
    recorded forwards may precede one :func:`keep`: their states add up); sliding-window layers keep every
    row until the next :func:`keep`. Nothing for full-attention and KV-shared layers.
    """
    for layer in cache.layers:
        kind = _KINDS.get(type(layer))
        if kind == "linear":
            if not layer.record_past:
                layer.activate_past_recording(recurrent_states_to_keep=tokens)
                layer.specvlm_recorded = 0  # tokens fed under record() since the last keep (a host count)
            layer.recurrent_states_to_keep = tokens
            layer.specvlm_recorded += tokens
        elif kind == "sliding":
            layer.activate_past_recording()


def _check_linear_rollback(layer, remove: int) -> None:
    """Raise ValueError unless a linear-attention layer recorded the states to drop its last ``remove`` tokens."""
    if not layer.record_past:
        if remove:
            raise ValueError(f"cannot roll back {remove} tokens of a linear-attention layer that recorded no states (call record())")
        return
    recorded = layer.specvlm_recorded
    history = layer.recurrent_states_history[0] if layer.is_recurrent_states_initialized[0] else None
    if remove > recorded or (remove and history is not None and len(history) != recorded):
        have = recorded if history is None else len(history)
        raise ValueError(
            f"cannot roll back {remove} tokens of a linear-attention layer: {have} recorded states for the "
            f"{recorded} tokens fed under record() since the last keep (every decode-time forward must call record())"
        )


def _rollback_linear(layer, remove: int) -> None:
    """Drop the last ``remove`` tokens of a linear-attention layer (restoring one recorded state) and stop
    recording (checked by :func:`_check_linear_rollback`)."""
    if not layer.record_past:
        return
    layer.crop(-remove)  # restores the state after the last kept token; with 0, only trims the conv state
    layer.record_past = False
    layer.specvlm_recorded = 0
    layer.recurrent_states_history = {i: [] for i in range(layer.number_of_states)}


def ensure_capacity(cache: DynamicCache, extra: int) -> None:
    """Make room for ``extra`` more positions in every :class:`GrowingLayer` of ``cache`` (no-op for others)."""
    for layer in cache.layers:
        if isinstance(layer, GrowingLayer):
            layer.ensure_capacity(extra)


_SUBSET_REFUSAL = {
    "linear": "a linear-attention layer's recurrent state has already read every prompt token, so it cannot be "
    "restricted to the kept positions",
    "sliding": "a sliding-window layer keeps only its last window of rows, so older kept positions are gone",
    "shared": "a KV-shared layer holds no rows of its own",
}


def _layers(cache: DynamicCache):
    """The full-attention layers of ``cache``; raises for a cache with any other kind (they hold no rows
    that could be index-selected or copied)."""
    for layer in cache.layers:
        kind = layer_kind(layer)
        if kind != "full":
            raise ValueError(
                f"cache layer {type(layer).__name__} cannot be index-selected or copied: {_SUBSET_REFUSAL[kind]} "
                "(self-drafting is not possible for this model; pass a separate draft)"
            )
        yield layer


def length(cache: DynamicCache) -> int:
    """Number of cached token positions (read from a layer with rows; linear layers count on the device)."""
    if isinstance(cache, PartialCache):
        return cache.get_seq_length()
    for layer in cache.layers:
        if isinstance(layer, DynamicLayer):  # full and sliding-window layers count on the host
            return int(layer.get_seq_length())
    return int(cache.get_seq_length())


def truncate(cache: DynamicCache, new_length: int) -> None:
    """Drop every cached position at or after ``new_length`` (in place)."""
    current = length(cache)
    if not 0 <= new_length <= current:
        raise ValueError(f"cannot truncate a cache of length {current} to {new_length}")
    keep(cache, new_length, [])


def keep(cache: DynamicCache, start: int, indices: torch.Tensor | list[int]) -> None:
    """Keep positions ``[0, start)`` plus ``start + indices`` and drop the rest (in place).

    Used after verification: ``indices`` (sorted; a list, or an (n,) tensor) are the committed nodes'
    offsets in the verified block. A contiguous run ``0..n-1`` (a chain's accepted prefix) is a plain
    crop; otherwise the kept rows are gathered and written back at ``start`` before cropping, so the
    prefix is never copied.

    Linear-attention layers restore the recorded state after the last kept token and sliding-window
    layers trim back to their window (both need a :func:`record` before each forward since the last keep,
    and keep only a contiguous run: anything else raises ValueError).
    """
    values = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
    n = len(values)
    contiguous = values == list(range(n))
    indices = None if contiguous else torch.tensor(values, dtype=torch.long)
    kinds = [layer_kind(layer) for layer in cache.layers]
    removed = {}  # layer index -> trailing tokens a sliding-window or linear layer drops
    current = None  # the cache's length, read once (from a layer with rows) for the layers without any
    for i, (layer, kind) in enumerate(zip(cache.layers, kinds)):  # check everything before editing anything
        if kind in ("full", "shared"):
            continue
        if not contiguous:
            raise ValueError(
                f"a {kind} cache layer ({type(layer).__name__}) can only keep a contiguous run of new tokens, not "
                f"the offsets {values}: tree verification is not possible for this model (use tree='chain')"
            )
        if kind == "sliding":
            held = layer.get_seq_length()
        else:
            held = current = length(cache) if current is None else current
        removed[i] = held - (start + n)
        if removed[i] < 0:
            raise ValueError(f"cannot keep {start + n} positions of a cache layer holding {held}")
        if kind == "linear":
            _check_linear_rollback(layer, removed[i])
        elif removed[i] and not layer.record_past and held >= layer.sliding_window:
            raise ValueError(
                f"cannot roll back {removed[i]} tokens of a sliding-window layer past its window of "
                f"{layer.sliding_window}: the forward was not recorded (call record() before it)"
            )
    for i, (layer, kind) in enumerate(zip(cache.layers, kinds)):
        if kind == "shared":
            continue
        if kind == "linear":
            _rollback_linear(layer, removed[i])
            continue
        if kind == "sliding":
            if layer.record_past or removed[i]:
                layer.crop(-removed[i])  # back within the window (raises past the window without a record())
                layer.record_past = False
            continue
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
    """Bytes held by keys and values (and by linear-attention layers' convolution and recurrent states)."""
    total = 0
    for layer in cache.layers:
        kind = layer_kind(layer)
        if kind == "linear":
            states = [*layer.conv_states.values(), *layer.recurrent_states.values()]
        elif kind == "shared":
            states = []
        else:
            states = [layer.keys, layer.values]
        total += sum(t.numel() * t.element_size() for t in states if isinstance(t, torch.Tensor))
    return total
