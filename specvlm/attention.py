"""The attention hook: one attention function registered with transformers' ``AttentionInterface``.

It is the single place where
  (a) the verifier's text-query -> video-key attention is captured during the target's text prefill
      (without ``output_attentions`` and without eager attention: only the rows of the text queries are
      normalised, never an L x L matrix),
  (b) explicit masks (causal-with-offset for chunked prefill and verification, tree masks) are applied,
  (c) the kernel is chosen (PyTorch SDPA here; fused GPU backends plug in at the same place).

Whatever a forward needs arrives explicitly as an :class:`AttentionContext` passed through the
model's ``**kwargs`` (``specvlm_ctx=...``); nothing is stored on model objects. Without a context the
function is exactly transformers' stock SDPA attention, so the stock ``generate()`` of a model that
uses this implementation is unchanged.

What this module deliberately does not do: build position ids, manage caches, or decide which tokens
to keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

ATTN_IMPLEMENTATION = "specvlm"


@dataclass
class ScoreCapture:
    """Accumulates the verifier's attention from text queries to selected keys.

    ``total[j]`` is the sum over layers, heads and text queries of the softmax attention probability
    that a text query gives to key ``key_positions[j]``; :meth:`mean` divides by the number of
    (layer, head, query) rows, giving the mean attention per video token.
    """

    key_positions: torch.Tensor  # (N,) long: absolute cache positions of the video keys
    total: torch.Tensor | None = None  # (N,) float32: summed attention
    rows: int = 0  # number of (layer, head, query) rows summed into `total`

    def add(self, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float) -> None:
        # query: (B=1, H, q, D); key: (B=1, H, kv, D) after GQA expansion; mask: additive (1, 1, q, kv) or None
        logits = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling  # (1, H, q, kv)
        if mask is not None:
            logits = logits + mask.float()
        probs = torch.softmax(logits, dim=-1)
        picked = probs[..., self.key_positions.to(probs.device)]  # (1, H, q, N)
        summed = picked.sum(dim=(0, 1, 2))  # (N,)
        self.total = summed if self.total is None else self.total + summed.to(self.total.device)
        self.rows += picked.shape[0] * picked.shape[1] * picked.shape[2]

    def mean(self) -> torch.Tensor:
        """Mean attention per key over layers, heads and text queries. Shape (N,), float32."""
        if self.total is None or self.rows == 0:
            raise RuntimeError("no attention was captured: the scored forward did not run through the specvlm hook")
        return self.total / self.rows


@dataclass
class AttentionContext:
    """What one forward needs from the hook.

    mask: additive float mask (1, 1, q, kv) with 0 where attention is allowed and the dtype's minimum
        elsewhere, or ``None`` for plain causal attention over q == kv tokens (a fresh prefill) or a
        single query token.
    capture: when set, the text-query attention to ``capture.key_positions`` is accumulated.
    """

    mask: torch.Tensor | None = None
    capture: ScoreCapture | None = None
    extras: dict = field(default_factory=dict)


def specvlm_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention with explicit masks and optional score capture; stock SDPA when no context is given."""
    ctx: AttentionContext | None = kwargs.pop("specvlm_ctx", None)
    if ctx is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    q_len, kv_len = query.shape[2], key.shape[2]
    mask = ctx.mask
    if mask is None and q_len > 1 and kv_len != q_len:
        raise ValueError(
            f"a {q_len}-token forward over a {kv_len}-token cache needs an explicit mask (got none)"
        )
    if mask is not None:
        mask = mask.to(query.dtype)
    if ctx.capture is not None:
        groups = getattr(module, "num_key_value_groups", 1)
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        full_mask = mask if mask is not None else causal_mask(q_len, kv_len, query.dtype, query.device)
        ctx.capture.add(query, repeat_kv(key, groups), full_mask, scale)
    return sdpa_attention_forward(
        module, query, key, value, mask, dropout=dropout, scaling=scaling, is_causal=mask is None and q_len > 1, **kwargs
    )


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


def register() -> str:
    """Register the hook (idempotent) and return its implementation name."""
    if ATTN_IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_IMPLEMENTATION, specvlm_attention)
    if ATTN_IMPLEMENTATION not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    return ATTN_IMPLEMENTATION
