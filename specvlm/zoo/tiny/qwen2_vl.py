"""Tiny Qwen2-VL: Qwen2.5-VL's layout with a plain ViT, the stock processor."""

from __future__ import annotations

from specvlm.zoo.tiny.base import TinySpec, instantiate
from specvlm.zoo.tiny.qwen2_5_vl import processor, text_config, token_ids


def build(spec: TinySpec, tokenizer):
    """Qwen2-VL: Qwen2.5-VL's layout with a plain ViT (no window attention) and no fps-scaled positions.

    The video processor's ``cap_pixels_per_frame`` is set (False: tiny frames are resized to exactly
    image_size x image_size, so the per-frame cap of qwen-vl-utils would change nothing but the warning).
    """
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )

    config = Qwen2VLConfig(
        text_config=text_config(spec, tokenizer),
        vision_config=dict(
            depth=spec.vision_layers,
            embed_dim=spec.vision_hidden_size,
            hidden_size=spec.hidden_size,  # the merger projects to the language model's width
            mlp_ratio=spec.vision_mlp_ratio,
            num_heads=spec.vision_heads,
            patch_size=spec.patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        tie_word_embeddings=False,
        **token_ids(tokenizer),
        **spec.extra,
    )
    model = instantiate(Qwen2VLForConditionalGeneration, config, tokenizer)
    return model, processor(Qwen2VLProcessor, spec, tokenizer, cap_pixels_per_frame=False)
