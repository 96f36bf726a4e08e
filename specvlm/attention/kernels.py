"""Attention kernels behind the hook (:mod:`specvlm.attention.hook`), selected by name.

:data:`ATTENTION_BACKENDS` maps a name to a function
``fn(module, query, key, value, ctx, scaling, dropout, need_lse, **kwargs) -> (out, lse)``:

``"sdpa"``       PyTorch SDPA over a dense additive mask (materialised from a structured context when
                 needed); ``is_causal`` for a fresh causal prefill.
``"cascade"``    attention over the prefix with no mask (a fused kernel that also returns the log-sum-exp
                 where torch has one) and an explicit attention over the small local block, merged
                 exactly by log-sum-exp (:func:`merge_attention`).
``"flash_attn"`` the same cascade with the ``flash_attn`` package's kernel (CUDA only, float16 /
                 bfloat16, imported lazily).

:func:`resolve_backend` turns ``"auto"`` into a concrete name for a device. This module knows nothing
about score capture or registration with transformers; it only computes attention (and its LSE).
The kernels' names live in :data:`specvlm.attention.context.BACKENDS`.
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import Callable

import torch
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

from specvlm.attention.context import BACKENDS, AttentionContext

logger = logging.getLogger(__name__)


def scaled_logits(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """Scaled float32 logits (B, H, q, k) of query (B, H, q, D) against key (B, H_kv, k, D), GQA-aware."""
    b, h, q, d = query.shape
    hkv = key.shape[1]
    if h % hkv:
        raise ValueError(f"{h} query heads cannot share {hkv} key heads")
    groups = h // hkv
    qg = query.float().reshape(b, hkv, groups, q, d)
    out = torch.matmul(qg, key.float()[:, :, None].transpose(-1, -2)) * scaling  # (B, H_kv, g, q, k)
    return out.reshape(b, h, q, key.shape[2])


# ------------------------------------------------------------------------------ attention pieces


def merge_attention(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention over the union of two disjoint key sets from the attention over each.

    out_*: (..., q, D) softmax-normalised outputs of each part; lse_*: (...,  q) natural-log sum of the
    exponentiated scaled (masked) logits of each part, ``-inf`` for a row that sees no key of that part
    (its output is then ignored, even if NaN). Returns ``(out, lse)``: ``out`` in the promoted dtype of
    the inputs (computed in float32), ``lse`` float32 (``-inf`` and a zero output where both parts are empty).
    """
    lse_a, lse_b = lse_a.float(), lse_b.float()
    top = torch.maximum(lse_a, lse_b)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    w_a, w_b = torch.exp(lse_a - top), torch.exp(lse_b - top)
    total = w_a + w_b
    lse = top + torch.log(total)
    denom = torch.where(total > 0, total, torch.ones_like(total))
    w_a, w_b = (w_a / denom)[..., None], (w_b / denom)[..., None]
    out = torch.where(w_a > 0, w_a * out_a.float(), 0.0) + torch.where(w_b > 0, w_b * out_b.float(), 0.0)
    return out.to(torch.promote_types(out_a.dtype, out_b.dtype)), lse


def _explicit_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float, allowed: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention with its LSE: (B, H, q, Dv) float32 and (B, H, q) float32.

    key/value may have fewer (grouped) heads; ``allowed`` (q, k) bool. Rows seeing no key get a zero
    output and ``-inf`` LSE.
    """
    logits = scaled_logits(query, key, scaling)  # (B, H, q, k)
    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    lse = torch.logsumexp(logits, dim=-1)
    finite = torch.isfinite(lse)[..., None]
    probs = torch.where(finite, torch.exp(logits - torch.where(finite, lse[..., None], 0.0)), 0.0)
    b, h, q, _ = query.shape
    hkv = value.shape[1]
    out = torch.matmul(probs.reshape(b, hkv, h // hkv, q, -1), value.float()[:, :, None])
    return out.reshape(b, h, q, value.shape[-1]), lse


# kernels (device type, dtype, head dim, name) that refused an input once: not retried.
_KERNEL_FAILURES: set[tuple] = set()


def _try_kernel(name: str, fn: Callable, signature: tuple):
    if (name,) + signature in _KERNEL_FAILURES:
        return None
    try:
        return fn()
    except torch.OutOfMemoryError:
        raise  # not a refusal: the fallbacks need more memory, not less
    except (RuntimeError, NotImplementedError) as err:
        _KERNEL_FAILURES.add((name,) + signature)
        logger.debug("attention kernel %s refused %s (%s); using the next one", name, signature, err)
        return None


def _kernel_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float, causal: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(out (B, H, q, Dv), lse (B, H, q) float32) from a fused torch kernel, or None when none applies.

    query/key/value have equal head counts; ``causal`` is upper-left aligned and only used with q == k.
    """
    q_len, dim = query.shape[2], query.shape[-1]
    if key.shape[2] == 0 or value.shape[-1] != dim or query.dtype != key.dtype or query.dtype != value.dtype:
        return None
    signature = (query.device.type, query.dtype, dim)
    ops = torch.ops.aten
    if query.device.type == "cpu":
        if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu"):
            res = _try_kernel(
                "flash_for_cpu",
                lambda: ops._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, causal, scale=scaling),
                signature,
            )
            if res is not None:
                return res[0], res[1].float()
        return None
    if query.device.type == "cuda":
        if query.dtype in (torch.float16, torch.bfloat16) and hasattr(ops, "_scaled_dot_product_flash_attention"):
            res = _try_kernel(
                "flash",
                lambda: ops._scaled_dot_product_flash_attention(query, key, value, 0.0, causal, False, scale=scaling),
                signature,
            )
            if res is not None:
                return res[0], res[1][..., :q_len].float()
        if hasattr(ops, "_scaled_dot_product_efficient_attention"):
            # its log-sum-exp is padded along the query axis (to a multiple of 32): keep the first q
            res = _try_kernel(
                "efficient",
                lambda: ops._scaled_dot_product_efficient_attention(query, key, value, None, True, 0.0, causal, scale=scaling),
                signature,
            )
            if res is not None:
                return res[0], res[1][..., :q_len].float()
    return None


def _attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float, *, causal: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with no mask (or causal, q == k) and its row LSE; fused kernel where torch has one.

    Grouped key/value heads: without a mask the query heads sharing a key head are folded into the
    query axis (no key/value copy); the causal case repeats the key/value heads.
    """
    b, h, q_len, d = query.shape
    hkv = key.shape[1]
    groups = h // hkv
    if causal:
        k, v = repeat_kv(key, groups), repeat_kv(value, groups)
        res = _kernel_with_lse(query, k, v, scaling, causal=True)
        if res is not None:
            return res
        allowed = torch.ones(q_len, key.shape[2], dtype=torch.bool, device=query.device).tril()
        return _explicit_attention(query, key, value, scaling, allowed)
    folded = query.reshape(b, hkv, groups * q_len, d) if groups > 1 else query
    res = _kernel_with_lse(folded, key, value, scaling, causal=False)
    if res is None:
        return _explicit_attention(query, key, value, scaling)
    out, lse = res
    return out.reshape(b, h, q_len, out.shape[-1]), lse.reshape(b, h, q_len)


def _cascade(
    query, key, value, ctx: AttentionContext, scaling: float, prefix_part: Callable, causal_part: Callable
) -> tuple[torch.Tensor, torch.Tensor]:
    """Structured attention: unmasked prefix part + local part, merged. Returns (B, H, q, Dv), (B, H, q)."""
    prefix = ctx.prefix
    parts = []
    if prefix > 0:
        parts.append(prefix_part(query, key[:, :, :prefix], value[:, :, :prefix]))
    if ctx.local is not None:
        k_loc, v_loc = key[:, :, prefix:], value[:, :, prefix:]
        if ctx._local_causal and ctx.local.shape[0] == ctx.local.shape[1]:
            parts.append(causal_part(query, k_loc, v_loc))
        else:
            parts.append(_explicit_attention(query, k_loc, v_loc, scaling, ctx.local.to(query.device)))
    if not parts:
        raise ValueError("the context describes no keys at all")
    out, lse = parts[0]
    for other_out, other_lse in parts[1:]:
        out, lse = merge_attention(out, lse, other_out, other_lse)
    return out, lse


def _finish(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, H, q, D) -> the (B, q, H, D) contiguous layout transformers' attention functions return."""
    return out.to(dtype).transpose(1, 2).contiguous()


def _reject_unsupported(name: str, dropout: float, kwargs: dict) -> None:
    if dropout:
        raise ValueError(f"the {name} attention backend is for inference and does not support dropout ({dropout})")
    for arg in ("softcap", "position_bias"):
        if kwargs.get(arg) is not None:
            raise ValueError(f"the {name} attention backend does not support `{arg}`; use backend 'sdpa'")


# ------------------------------------------------------------------------------ backends
# Each backend: fn(module, query, key, value, ctx, scaling, dropout, need_lse, **kwargs)
#   -> (attn_output (B, q, H, D) contiguous, lse (B, H, q) float32 or None)
# query (B, H, q, D); key/value (B, H_kv, kv, D); ctx already checked against the shapes.


def _fold_grouped_heads(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, cache: dict) -> tuple | None:
    """(query (B, H_kv, G * q, D), mask (1, 1, G * q, kv)) for a masked grouped-query forward, or None.

    The G query heads that share a key/value head become G blocks of rows over that head (row
    g * q + i is head g's query i), with the mask tiled to match: exactly the same attention, without
    the copy of the whole key/value cache that repeating its heads makes (about a third of a 6-query
    verification at 1k context on CPU). None where there is nothing to fold (one group, no mask, or a
    mask with its own head axis). ``cache``: where the tiled mask is kept for the forward's other layers.
    """
    groups = query.shape[1] // key.shape[1]
    if groups == 1 or mask is None or mask.dim() != 4 or mask.shape[:2] != (1, 1):
        return None
    b, _, q_len, d = query.shape
    folded_mask = mask
    if mask.shape[2] > 1:
        tiled = ("tiled", groups, mask.dtype, str(mask.device))
        if tiled not in cache:
            cache[tiled] = mask.repeat(1, 1, groups, 1)
        folded_mask = cache[tiled]
    return query.reshape(b, key.shape[1], groups * q_len, d), folded_mask


def _sdpa_backend(module, query, key, value, ctx, scaling, dropout, need_lse, **kwargs):
    q_len = query.shape[2]
    if ctx.mask is not None or ctx.structured:
        mask = ctx.dense_mask(query.dtype, query.device)
        is_causal = False
    else:
        mask, is_causal = None, q_len > 1
    plain_kernel = kwargs.get("position_bias") is None and kwargs.get("softcap") is None
    folded = _fold_grouped_heads(query, key, mask, ctx._dense) if plain_kernel else None
    if folded is not None:
        fq, fmask = folded
        out = torch.nn.functional.scaled_dot_product_attention(fq, key, value, attn_mask=fmask, dropout_p=dropout, scale=scaling)
        return _finish(out.reshape(query.shape[0], query.shape[1], q_len, out.shape[-1]), query.dtype), None
    out, _ = sdpa_attention_forward(
        module, query, key, value, mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
    )
    return out, None


def _cascade_backend(module, query, key, value, ctx, scaling, dropout, need_lse, **kwargs):
    if ctx.mask is not None:
        return _sdpa_backend(module, query, key, value, ctx, scaling, dropout, need_lse, **kwargs)
    _reject_unsupported("cascade", dropout, kwargs)
    if not ctx.structured:
        q_len = query.shape[2]
        if not need_lse:  # nothing to merge: the stock kernel (GQA without copying key/value where it can)
            return _sdpa_backend(module, query, key, value, ctx, scaling, dropout, need_lse, **kwargs)
        out, lse = _attention_with_lse(query, key, value, scaling, causal=q_len > 1)
        return _finish(out, query.dtype), lse
    kernel = lambda q, k, v, causal: _attention_with_lse(q, k, v, scaling, causal=causal)  # noqa: E731
    out, lse = _cascade_with(query, key, value, ctx, scaling, kernel)
    return _finish(out, query.dtype), lse


def _cascade_with(query, key, value, ctx, scaling, run):
    """:func:`_cascade` with one kernel ``run(q, k, v, causal) -> (out, lse)`` for both parts."""
    return _cascade(
        query, key, value, ctx, scaling,
        prefix_part=lambda q, k, v: run(q, k, v, False),
        causal_part=lambda q, k, v: run(q, k, v, True),
    )  # fmt: skip


@functools.lru_cache(maxsize=1)
def _flash_attn_module():
    """The ``flash_attn`` package, or None when it does not import."""
    try:
        return importlib.import_module("flash_attn")
    except Exception as err:  # a broken CUDA build raises more than ImportError
        logger.debug("flash_attn does not import: %s", err)
        return None


def _import_flash_attn():
    module = _flash_attn_module()
    if module is None:
        raise ImportError(
            "the 'flash_attn' attention backend needs the flash-attn package (pip install flash-attn); "
            "use backend 'cascade' or 'auto' without it"
        )
    return module


def _check_flash_inputs(query: torch.Tensor) -> None:
    if query.device.type != "cuda":
        raise ValueError(f"the 'flash_attn' attention backend needs CUDA tensors, got {query.device.type}")
    if query.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"the 'flash_attn' attention backend needs float16 or bfloat16, got {query.dtype}")


def _flash_attn_backend(module, query, key, value, ctx, scaling, dropout, need_lse, **kwargs):
    if ctx.mask is not None:
        return _sdpa_backend(module, query, key, value, ctx, scaling, dropout, need_lse, **kwargs)
    _reject_unsupported("flash_attn", dropout, kwargs)
    _check_flash_inputs(query)
    fa = _import_flash_attn()

    def run(q, k, v, causal):
        # flash_attn's layout is (B, L, H, D) and it shares grouped key/value heads natively
        res = fa.flash_attn_func(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=0.0, softmax_scale=scaling,
            causal=causal, return_attn_probs=True,
        )
        return res[0].transpose(1, 2), res[1][..., : q.shape[2]].float()

    if not ctx.structured:
        out, lse = run(query, key, value, causal=query.shape[2] > 1)
    else:
        out, lse = _cascade_with(query, key, value, ctx, scaling, run)
    return _finish(out, query.dtype), lse


ATTENTION_BACKENDS: dict[str, Callable] = {
    "sdpa": _sdpa_backend,
    "cascade": _cascade_backend,
    "flash_attn": _flash_attn_backend,
}
assert tuple(ATTENTION_BACKENDS) == BACKENDS, "every backend name has exactly one kernel"


def resolve_backend(name: str, device) -> str:
    """A concrete backend name for ``device``.

    ``"auto"``: ``"flash_attn"`` on CUDA when the package imports, else ``"cascade"`` on CUDA, ``"sdpa"``
    elsewhere. A named backend is returned as is after checking it can run there; unknown names raise
    ValueError, ``"flash_attn"`` off CUDA raises ValueError and without the package ImportError.
    """
    device_type = torch.device(device).type
    if name == "auto":
        if device_type == "cuda":
            return "flash_attn" if _flash_attn_module() is not None else "cascade"
        return "sdpa"
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of: {', '.join(('auto',) + BACKENDS)}")
    if name == "flash_attn":
        if device_type != "cuda":
            raise ValueError(f"the 'flash_attn' attention backend needs a CUDA device, got {device_type!r}")
        _import_flash_attn()
    return name
