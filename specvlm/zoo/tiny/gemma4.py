"""Tiny Gemma 4: per-frame soft-token runs, sliding-window and full-attention layers
(:func:`gemma4_layer_types`), the stock processor; :data:`GEMMA4_E_STYLE` for an E-model draft."""

from __future__ import annotations

from specvlm.zoo.tiny.base import TinySpec, text_settings

# Gemma 4's video markup: the processor expands ``<|video|>`` to ``mm:ss <boi><|video|>...<eoi>`` per frame
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<|video|>"
    "{% elif c['type'] == 'image' %}<|image|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def gemma4_layer_types(num_layers: int) -> list[str]:
    """Gemma 4's decoder pattern for a tiny model: sliding-window attention in every layer but every 2nd and
    the last, which are full attention (the real models alternate 4 or 5 sliding layers with one full layer;
    2 layers: [sliding, full]; 3: [sliding, full, full]; 4: [sliding, full, sliding, full])."""
    return ["full_attention" if i % 2 == 1 or i == num_layers - 1 else "sliding_attention" for i in range(num_layers)]


#: text-config settings of an E-model (Gemma 4 E2B / E4B style) draft: per-layer input embeddings, the last
#: two layers reading the keys and values of earlier layers (KV sharing), no bidirectional vision blocks.
#: Use as ``TinySpec(family="gemma4", num_layers=4, extra=GEMMA4_E_STYLE)``.
GEMMA4_E_STYLE = {"hidden_size_per_layer_input": 16, "num_kv_shared_layers": 2, "use_bidirectional_attention": None}


def build(spec: TinySpec, tokenizer):
    """Gemma 4: per-frame ``mm:ss <boi><|video|>...<eoi>`` runs (the stock ``Gemma4Processor`` and video
    processor, at most 70 soft tokens per frame), 1-D positions, sliding-window (window 24, smaller than a
    frame's run) and full-attention layers (:func:`gemma4_layer_types`) with proportional RoPE and wider heads
    on the full layers, keys as values on the full layers, final logit soft-capping, and by default the large
    models' bidirectional attention within each frame's vision block. ``spec.extra`` overrides text-config
    settings (:data:`GEMMA4_E_STYLE` gives an E-model draft with per-layer embeddings and KV-shared layers)."""
    from transformers import (
        Gemma4AudioFeatureExtractor,
        Gemma4Config,
        Gemma4ForConditionalGeneration,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4VideoProcessor,
    )

    head_dim = spec.hidden_size // spec.num_heads
    text = dict(
        text_settings(spec, tokenizer),
        head_dim=head_dim,
        global_head_dim=2 * head_dim,
        num_global_key_value_heads=1,
        attention_k_eq_v=True,
        layer_types=gemma4_layer_types(spec.num_layers),
        sliding_window=24,
        final_logit_softcapping=30.0,
        use_bidirectional_attention="vision",
        hidden_size_per_layer_input=0,
        vocab_size_per_layer_input=len(tokenizer),
        num_kv_shared_layers=0,
    )
    text.update(spec.extra)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("boi_token_id", "<boi>"), ("eoi_token_id", "<eoi>"), ("image_token_id", "<|image|>"),
        ("video_token_id", "<|video|>"), ("boa_token_id", "<boa>"), ("eoa_token_index", "<eoa>"),
        ("audio_token_id", "<|audio|>"),
    )}  # fmt: skip
    config = Gemma4Config(
        text_config=text,
        vision_config=dict(
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_mlp_ratio * spec.vision_hidden_size,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.vision_heads,
            num_key_value_heads=spec.vision_heads,
            head_dim=spec.vision_hidden_size // spec.vision_heads,
            patch_size=spec.patch_size,
            pooling_kernel_size=3,
            position_embedding_size=256,
        ),
        audio_config=None,
        tie_word_embeddings=False,
        **ids,
    )
    model = Gemma4ForConditionalGeneration(config)
    kw = dict(patch_size=spec.patch_size, max_soft_tokens=70, pooling_kernel_size=3)
    processor = Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=Gemma4ImageProcessor(**kw),
        video_processor=Gemma4VideoProcessor(**kw),
        tokenizer=tokenizer,
        chat_template=TEMPLATE,
    )
    return model, processor
