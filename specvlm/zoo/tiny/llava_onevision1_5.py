"""Tiny LLaVA-OneVision-1.5: a RICE ViT over a Qwen3 text model with 1-D positions, Qwen2-VL-style inputs,
the stock processor."""

from __future__ import annotations

from specvlm.zoo.tiny.base import TinySpec, instantiate, merger_vit_settings
from specvlm.zoo.tiny.qwen2_5_vl import processor, text_config, token_ids


def build(spec: TinySpec, tokenizer):
    """LLaVA-OneVision-1.5: a RICE ViT (2-D axial RoPE, a CLS token per frame, 2x2 merge) over a Qwen3 text
    model with 1-D positions; Qwen2-VL-style inputs (``video_grid_thw``) with a temporal patch of 1, so every
    frame gives (image_size / patch_size / 2)^2 tokens in one contiguous run. The stock processor class is
    ``Exaone4_5_Processor`` (what ``AutoProcessor`` maps the model type to)."""
    from transformers import (
        Exaone4_5_Processor,
        LlavaOnevision15Config,
        LlavaOnevision15ForConditionalGeneration,
    )

    text = text_config(spec, tokenizer)
    text.update(model_type="qwen3", head_dim=spec.hidden_size // spec.num_heads)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0}
    config = LlavaOnevision15Config(
        text_config=text,
        vision_config=dict(
            merger_vit_settings(spec), rope_parameters={"rope_type": "axial", "rope_theta": 10000.0}
        ),
        tie_word_embeddings=False,
        **token_ids(tokenizer),
        **spec.extra,
    )
    model = instantiate(LlavaOnevision15ForConditionalGeneration, config, tokenizer)
    return model, processor(Exaone4_5_Processor, spec, tokenizer, temporal_patch_size=1, cap_pixels_per_frame=False)
