"""What one attention forward needs, passed explicitly: :class:`AttentionContext` and its builders.

A context says which keys each new query may see (plain causal, a dense additive mask, or the
structured form: a prefix every query sees plus a small boolean ``local`` block — the lower triangle
of a causal chunk or a verification tree's ancestor mask), which kernel runs it (a name in
:data:`BACKENDS`, or ``"auto"``) and whether the verifier's scores are captured. It also builds the
dense additive masks for the ``sdpa`` kernel.

What this module deliberately does not do: compute attention (:mod:`specvlm.attention.kernels`),
accumulate scores (:mod:`specvlm.attention.capture`) or talk to transformers (:mod:`specvlm.attention.hook`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from specvlm.attention.capture import ScoreCapture

#: The concrete attention kernels (``specvlm.attention.kernels.ATTENTION_BACKENDS`` implements each).
BACKENDS: tuple[str, ...] = ("sdpa", "cascade", "flash_attn")


@dataclass
class AttentionContext:
    """What one forward needs from the hook.

    Three forms (``mask`` and ``prefix`` are mutually exclusive):

    * plain (``mask`` and ``prefix`` both ``None``): causal attention over q == kv tokens (a fresh
      prefill) or a single query token over the whole cache.
    * dense: ``mask`` is an additive float mask (1, 1, q, kv), 0 where attention is allowed and the
      dtype's minimum elsewhere. Always computed with SDPA.
    * structured: keys ``[0, prefix)`` are visible to every query; ``local`` (bool, (q, kv - prefix))
      says which of the remaining keys each query may see. ``local=None`` means the prefix is every key
      (plain unmasked attention). Built by :func:`causal_context` and :func:`tree_context`.

    capture: when set, the text-query attention to ``capture.key_positions`` is accumulated.
    backend: a name in :data:`BACKENDS` or ``"auto"`` (resolved per call with :func:`resolve_backend`).
    sliding: the context of the forward's sliding-window layers (the hook uses it where transformers passes a
        ``sliding_window``; built by the adapter of a family that has them, e.g. Gemma 4), or None.
    """

    mask: torch.Tensor | None = None
    capture: ScoreCapture | None = None
    extras: dict = field(default_factory=dict)
    prefix: int | None = None
    local: torch.Tensor | None = None
    backend: str = "sdpa"
    # what the sliding-window layers of the same forward see instead (their keys are only the last window of
    # the cache plus the new tokens; built by the model adapter, e.g. Gemma 4's); None: every layer uses this one
    sliding: AttentionContext | None = None
    # True when `local` is known to be the square lower triangle (a causal chunk): lets a fused causal
    # kernel handle the local block. Set by causal_context; never inferred (that would sync the device).
    _local_causal: bool = field(default=False, repr=False, compare=False)
    # dense masks already built for this forward, by (dtype, device), and their tiles for grouped heads:
    # every layer asks for the same ones
    _dense: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.mask is not None and (self.prefix is not None or self.local is not None):
            raise ValueError("an AttentionContext takes either a dense `mask` or a structured `prefix`/`local`, not both")
        if self.local is not None:
            if self.prefix is None:
                raise ValueError("`local` needs `prefix` (the number of keys every query sees before the local block)")
            if self.local.dim() != 2 or self.local.dtype != torch.bool:
                raise ValueError(
                    f"`local` must be a 2-D bool tensor (q, kv - prefix), got {tuple(self.local.shape)} {self.local.dtype}"
                )
            if self.local.shape[1] == 0:
                self.local = None
        if self.backend != "auto" and self.backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {self.backend!r}; choose one of: {', '.join(('auto',) + BACKENDS)}")
        if self.prefix is not None and self.prefix < 0:
            raise ValueError(f"`prefix` must be >= 0, got {self.prefix}")

    @property
    def structured(self) -> bool:
        """Whether the context is in the structured (prefix + local) form."""
        return self.prefix is not None

    def check(self, q_len: int, kv_len: int) -> None:
        """Raise ValueError when the context does not describe a q_len-query, kv_len-key attention."""
        if self.mask is not None:
            return  # a dense mask is checked by the kernel it goes to
        if self.prefix is not None:
            width = 0 if self.local is None else self.local.shape[1]
            if self.prefix + width != kv_len:
                raise ValueError(
                    f"the context covers {self.prefix} prefix + {width} local keys but the cache holds {kv_len}"
                )
            if self.local is not None and self.local.shape[0] != q_len:
                raise ValueError(f"`local` has {self.local.shape[0]} rows for a {q_len}-query forward")
        elif q_len > 1 and kv_len != q_len:
            raise ValueError(f"a {q_len}-token forward over a {kv_len}-token cache needs an explicit mask (got none)")

    def dense_mask(self, dtype: torch.dtype, device=None) -> torch.Tensor | None:
        """The additive (1, 1, q, kv) mask this context describes, materialised only on request.

        ``None`` where no mask is needed: the plain form (causal prefill / single query, see
        :attr:`structured`) and a structured prefix covering every key (all keys visible).
        """
        if self.mask is not None:
            return self.mask.to(dtype=dtype, device=device if device is not None else self.mask.device)
        if self.prefix is None or self.local is None:
            return None
        key = (dtype, str(device))
        if key not in self._dense:
            local = self.local if device is None else self.local.to(device)
            q = local.shape[0]
            allowed = torch.cat([torch.ones(q, self.prefix, dtype=torch.bool, device=local.device), local], dim=1)
            self._dense[key] = additive(allowed, dtype)[None, None]
        return self._dense[key]

    def _bias(self, q_len: int, kv_len: int, rows: slice, cols: torch.Tensor | None, device) -> torch.Tensor | None:
        """Additive float32 bias of the query rows ``rows`` over the key columns ``cols`` (all when None).

        Shape (r, c) or broadcastable to (1, H, r, c); ``None`` when nothing is masked. Never wider than
        the requested columns.
        """
        if self.mask is not None:
            m = self.mask.to(device)
            m = m if m.shape[-2] == 1 else m[..., rows, :]  # a broadcast query axis stays as is
            return (m if cols is None else m.index_select(-1, cols)).float()
        if self.prefix is not None:
            if self.local is None:
                return None
            local = self.local.to(device)[rows]
            if cols is None:
                ones = torch.ones(local.shape[0], self.prefix, dtype=torch.bool, device=device)
                visible = torch.cat([ones, local], dim=1)
            else:
                in_local = cols >= self.prefix
                visible = torch.where(in_local[None, :], local[:, (cols - self.prefix).clamp(min=0)], True)
        else:  # plain: causal with the new tokens after kv - q cached ones (all visible for one query)
            row_ids = torch.arange(q_len, device=device)[rows]
            col_ids = torch.arange(kv_len, device=device) if cols is None else cols
            visible = col_ids[None, :] <= row_ids[:, None] + (kv_len - q_len)
        return torch.zeros(visible.shape, dtype=torch.float32, device=device).masked_fill(~visible, float("-inf"))


def causal_context(
    q_len: int, kv_len: int, device, *, backend: str = "sdpa", capture: ScoreCapture | None = None
) -> AttentionContext:
    """Context for q new tokens appended causally after kv - q cached ones.

    q == 1: structured, prefix = every key, no local block. q == kv (a fresh prefill): the plain form,
    which every backend runs as a causal kernel (a q x q local block would be an L x L mask).
    Otherwise: structured, prefix = kv - q, local = the (q, q) lower triangle.
    """
    if kv_len < q_len:
        raise ValueError(f"cache length {kv_len} is shorter than the {q_len} new tokens")
    if q_len < 1:
        raise ValueError(f"a forward needs at least one new token, got {q_len}")
    if q_len == 1:
        return AttentionContext(capture=capture, prefix=kv_len, backend=backend)
    if q_len == kv_len:
        return AttentionContext(capture=capture, backend=backend)
    local = torch.ones(q_len, q_len, dtype=torch.bool, device=device).tril()
    return AttentionContext(capture=capture, prefix=kv_len - q_len, local=local, backend=backend, _local_causal=True)


def tree_context(prefix_len: int, tree_allowed: torch.Tensor, *, backend: str = "sdpa") -> AttentionContext:
    """Context for n tree nodes after ``prefix_len`` cached tokens: every node sees the whole prefix and
    the nodes ``tree_allowed`` (n, n) bool marks (its ancestors and itself)."""
    if tree_allowed.dim() != 2 or tree_allowed.shape[0] != tree_allowed.shape[1]:
        raise ValueError(f"tree_allowed must be a square (n, n) mask, got {tuple(tree_allowed.shape)}")
    return AttentionContext(prefix=prefix_len, local=tree_allowed.to(torch.bool), backend=backend)


def causal_mask(q_len: int, kv_len: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Additive mask (1, 1, q, kv) for q new tokens appended after kv - q cached ones."""
    if kv_len < q_len:
        raise ValueError(f"cache length {kv_len} is shorter than the {q_len} new tokens")
    offset = kv_len - q_len
    allowed = torch.arange(kv_len, device=device)[None, :] <= (torch.arange(q_len, device=device)[:, None] + offset)
    return additive(allowed, dtype)[None, None]


def tree_mask(prefix_len: int, tree_allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (1, 1, n, prefix + n): every node sees the whole prefix and its ancestors (tree_allowed: (n, n) bool)."""
    n = tree_allowed.shape[0]
    allowed = torch.cat(
        [torch.ones(n, prefix_len, dtype=torch.bool, device=tree_allowed.device), tree_allowed], dim=1
    )
    return additive(allowed, dtype)[None, None]


def additive(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean 'may attend' -> additive float (0 / dtype minimum). Eager attention mis-handles boolean masks."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)
