"""``specvlm bench --device cuda``: real-shape random-weight text models (default: a Qwen2-7B-shaped target
and a Qwen2-0.5B-shaped draft, bf16), prefilled with ``--context`` tokens, their per-step costs and the decode
speedup projected from ``--tau`` (see :func:`specvlm_eval.bench.costs.project`).

What this module deliberately does not do: load real checkpoints or weights (the costs depend on the shapes
only), feed video (text decoders only), or measure acceptance (tau is given).
"""

from __future__ import annotations

import torch
from specvlm.models import cache as kv
from specvlm.models.base import ModelAdapter
from specvlm.attention import causal_context
from specvlm.config import DEFAULT_NUM_DRAFT_TOKENS

from specvlm_eval.bench.costs import draft_cost, forward_cost, project, structures

REAL_SHAPES = {  # text decoders of real checkpoints (random weights: costs depend on shapes only)
    # Qwen2 family: LLaVA-OneVision 72B/7B/0.5B, Qwen2-VL, Qwen2.5-VL 7B / 3B drafts
    "qwen2-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064),
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=152064),
    # Qwen3 family (q/k norms, head_dim 128): Qwen3-VL 32B / 8B / 2B; InternVL3.5-38B (Qwen3-32B) / -1B (Qwen3-0.6B)
    "qwen3-32b": dict(hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64,
                      num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "qwen3-2b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
}  # fmt: skip


class _TextAdapter(ModelAdapter):
    """The model adapter for a stock text-only causal LM: the decode loop's interface, no video hooks."""

    family = "text"

    def language_model(self):
        return self.model.model


def build_text_model(shape: str, device, dtype):
    """A stock ``Qwen2ForCausalLM`` or ``Qwen3ForCausalLM`` (``qwen3-*`` shapes) with random weights of the
    named shape, using the attention hook (``context_attention``)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from specvlm.attention import register

    if shape not in REAL_SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(REAL_SHAPES)}")
    config_class, model_class = (Qwen3Config, Qwen3ForCausalLM) if shape.startswith("qwen3") else (Qwen2Config, Qwen2ForCausalLM)
    config = config_class(**REAL_SHAPES[shape], max_position_embeddings=65536, tie_word_embeddings=False)
    config._attn_implementation = register()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def _prefilled(model, context: int, chunk: int = 4096):
    """A :class:`~specvlm.decoding.target.DecodingState` over ``context`` random-embedding tokens (prefilled in
    chunks)."""
    from specvlm.attention import AttentionContext, resolve_backend
    from specvlm.decoding.target import DecodingState

    adapter = _TextAdapter(model)
    backend = resolve_backend("auto", adapter.device)
    cache = kv.new_cache(model.config)
    hidden = model.config.hidden_size
    with torch.no_grad():
        for start in range(0, context, chunk):
            n = min(chunk, context - start)
            embeds = torch.randn(1, n, hidden, device=adapter.device, dtype=adapter.dtype) * 0.02
            pos = torch.arange(start, start + n, device=adapter.device).unsqueeze(0)
            ctx = AttentionContext(backend=backend) if start == 0 else causal_context(n, start + n, adapter.device, backend=backend)
            adapter.forward(embeds, pos, cache, ctx, logits_to_keep=1)
    return DecodingState(adapter, cache, prefix=context, next_pos=context, axes=1, backend=backend)


def bench_shapes(
    target_shape: str = "qwen2-7b",
    draft_shape: str = "qwen2-0.5b",
    *,
    context: int = 16384,
    keep: float = 0.1,
    tau: float = 4.0,
    device: str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    repeats: int = 20,
    chain_length: int = DEFAULT_NUM_DRAFT_TOKENS,
) -> dict:
    """Per-step costs of real-shape random-weight models at ``context`` tokens (the draft at
    ``keep * context``) and the decode speedup they project for ``tau`` tokens per step (a chain of
    ``chain_length`` draft tokens, and the 25-node tree)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep={keep!r} must be in (0, 1]")
    shapes = structures(chain_length)
    out: dict = {"target": target_shape, "draft": draft_shape, "context": context, "draft_context": max(1, int(context * keep)),
                 "dtype": str(dtype).replace("torch.", ""), "device": device, "tau": tau}  # fmt: skip
    target = build_text_model(target_shape, device, dtype)
    seq = _prefilled(target, context)
    costs = {"plain_step": forward_cost(seq, None, repeats)}
    for name, st in shapes.items():
        costs[f"verify_{name}_{st.parents.numel() + 1}_tokens"] = forward_cost(seq, st, repeats)
    del seq, target
    if device == "cuda":
        torch.cuda.empty_cache()
    draft = build_text_model(draft_shape, device, dtype)
    dseq = _prefilled(draft, out["draft_context"])
    costs["draft_step"] = forward_cost(dseq, None, repeats)
    for name, st in shapes.items():
        costs[f"draft_{name}"] = draft_cost(dseq, st, repeats)
    out["step_costs_ms"] = costs
    out["verify_tree_over_plain"] = costs["verify_reference-25_26_tokens"] / costs["plain_step"]
    out["projected_speedup"] = {
        name: project(tau, costs["plain_step"], costs[f"verify_{name}_{st.parents.numel() + 1}_tokens"], costs[f"draft_{name}"])
        for name, st in shapes.items()
    }
    return out
