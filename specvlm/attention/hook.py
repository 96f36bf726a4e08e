"""The attention hook: one attention function registered with transformers' ``AttentionInterface``
under the name ``"context_attention"`` (:data:`ATTN_IMPLEMENTATION`): attention as a per-forward
:class:`~specvlm.attention.context.AttentionContext` says. Its old name ``"specvlm_attention"`` stays
registered for the same function.

Every SpecVLM forward passes an :class:`~specvlm.attention.context.AttentionContext` through the
model's ``**kwargs`` (``specvlm_ctx=...``); the hook checks it, runs the kernel it names and, when
the context carries a :class:`~specvlm.attention.capture.ScoreCapture`, records the verifier's
scores. Nothing is stored on model objects. Without a context the function is exactly transformers'
stock SDPA attention, so the stock ``generate()`` of a model that uses this implementation is
unchanged. A context carrying a dense ``mask`` always runs through SDPA, whatever its ``backend``.

What this module deliberately does not do: build position ids, manage caches, decide which tokens to
keep, or support attention dropout in the ``cascade`` / ``flash_attn`` kernels (they are for inference).
"""

from __future__ import annotations

from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

from specvlm.attention.context import AttentionContext
from specvlm.attention.kernels import ATTENTION_BACKENDS, resolve_backend

#: The name the hook is registered under (``model.set_attn_implementation``).
ATTN_IMPLEMENTATION = "context_attention"
#: Old names of the same implementation, still registered so that code naming them keeps working.
ATTN_IMPLEMENTATION_ALIASES = ("specvlm_attention",)


def context_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention with explicit or structured masks, a chosen backend and optional score capture;
    stock SDPA when no context is given."""
    ctx: AttentionContext | None = kwargs.pop("specvlm_ctx", None)
    if ctx is not None and ctx.sliding is not None and kwargs.get("sliding_window") is not None:
        ctx = ctx.sliding  # a sliding-window layer (transformers passes its window): the adapter's context for it
    if ctx is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    q_len, kv_len = query.shape[2], key.shape[2]
    ctx.check(q_len, kv_len)
    name = ctx.backend if ctx.backend in ATTENTION_BACKENDS else resolve_backend(ctx.backend, query.device)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out, lse = ATTENTION_BACKENDS[name](
        module, query, key, value, ctx, scale, dropout, ctx.capture is not None, **kwargs
    )
    if ctx.capture is not None:
        ctx.capture.add(query, key, ctx, scale, lse=lse)
    return out, None


specvlm_attention = context_attention  # its old name, kept for imports


def register() -> str:
    """Register the hook (idempotent) under its name and its old names; return its name."""
    for name in (ATTN_IMPLEMENTATION, *ATTN_IMPLEMENTATION_ALIASES):
        if name not in AttentionInterface._global_mapping:
            AttentionInterface.register(name, context_attention)
        if name not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
            AttentionMaskInterface.register(name, sdpa_mask)
    return ATTN_IMPLEMENTATION
