"""Tiny Qwen3.5 and Qwen3.5-MoE: Qwen3-VL's video layout without DeepStack over a hybrid decoder of
Gated-DeltaNet linear attention and full attention (:func:`qwen3_5_layer_types`)."""

from __future__ import annotations

from specvlm.zoo.tiny.base import TinySpec, text_settings
from specvlm.zoo.tiny.qwen3_vl import build_model


def qwen3_5_layer_types(num_layers: int) -> list[str]:
    """Qwen3.5's decoder pattern for a tiny model: Gated-DeltaNet linear attention in every layer but every
    4th (as the real ``full_attention_interval`` 4) and the last, which are full attention (2 layers:
    [linear, full]; 4 layers: [linear, linear, linear, full])."""
    return [
        "full_attention" if (i + 1) % 4 == 0 or i == num_layers - 1 else "linear_attention" for i in range(num_layers)
    ]


def build(spec: TinySpec, tokenizer, moe: bool = False):
    """Qwen3.5 (``moe``: Qwen3.5-MoE): Qwen3-VL's video layout (per-tubelet timestamps, interleaved mRoPE)
    without DeepStack, over a hybrid decoder (:func:`qwen3_5_layer_types`). The full-attention layers keep
    the real partial rotary factor (0.25) and output gate; the linear layers are small Gated-DeltaNets with
    the real 4-wide causal convolution. Processor as in :func:`specvlm.zoo.tiny.qwen3_vl.build` (the stock
    ``Qwen3VLProcessor``)."""
    if moe:
        from transformers import Qwen3_5MoeConfig as Config
        from transformers import Qwen3_5MoeForConditionalGeneration as Model
    else:
        from transformers import Qwen3_5Config as Config
        from transformers import Qwen3_5ForConditionalGeneration as Model

    head_dim = 2 * spec.hidden_size // spec.num_heads
    rotary = head_dim // 4  # partial_rotary_factor 0.25, as the real checkpoints
    half = rotary // 2
    t_sec = half - 2 * (half // 4)
    rope = {
        "rope_type": "default",
        "rope_theta": 10000000.0,
        "partial_rotary_factor": 0.25,
        "mrope_section": [t_sec, half // 4, half // 4],
        "mrope_interleaved": True,
    }
    text = dict(
        text_settings(spec, tokenizer),
        head_dim=head_dim,
        rope_parameters=rope,
        layer_types=qwen3_5_layer_types(spec.num_layers),
        linear_conv_kernel_dim=4,
        linear_key_head_dim=spec.hidden_size // spec.num_heads,
        linear_value_head_dim=spec.hidden_size // spec.num_heads,
        linear_num_key_heads=spec.num_kv_heads,
        linear_num_value_heads=spec.num_heads,
    )
    if moe:
        text.update(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=spec.intermediate_size // 2,
            shared_expert_intermediate_size=spec.intermediate_size // 2,
        )
    return build_model(Config, Model, spec, tokenizer, text, deepstack=False)


def build_moe(spec: TinySpec, tokenizer):
    """Qwen3.5-MoE (:func:`build` with ``moe``)."""
    return build(spec, tokenizer, moe=True)
