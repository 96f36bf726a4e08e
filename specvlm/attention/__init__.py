"""Attention: the one place where masks are applied, kernels chosen and the verifier's scores captured.

* :mod:`~specvlm.attention.context` — :class:`AttentionContext` (what a forward may see, which kernel,
  whether to capture) and its builders :func:`causal_context` / :func:`tree_context`;
* :mod:`~specvlm.attention.kernels` — the kernels by name (``sdpa``, ``cascade``, ``flash_attn``) and
  :func:`resolve_backend` for ``"auto"``;
* :mod:`~specvlm.attention.capture` — :class:`ScoreCapture`, text-to-video attention without an L x L matrix;
* :mod:`~specvlm.attention.hook` — :func:`context_attention`, the function registered with transformers'
  ``AttentionInterface`` (as ``"context_attention"``).

Imports point one way: context <- kernels <- capture <- hook.
"""

from specvlm.attention.capture import ScoreCapture
from specvlm.attention.context import (
    BACKENDS,
    AttentionContext,
    additive,
    causal_context,
    causal_mask,
    tree_context,
    tree_mask,
)
from specvlm.attention.hook import ATTN_IMPLEMENTATION, context_attention, register, specvlm_attention
from specvlm.attention.kernels import ATTENTION_BACKENDS, merge_attention, resolve_backend, scaled_logits

__all__ = [
    "ATTENTION_BACKENDS",
    "ATTN_IMPLEMENTATION",
    "BACKENDS",
    "AttentionContext",
    "ScoreCapture",
    "additive",
    "causal_context",
    "causal_mask",
    "context_attention",
    "merge_attention",
    "register",
    "resolve_backend",
    "scaled_logits",
    "specvlm_attention",
    "tree_context",
    "tree_mask",
]
