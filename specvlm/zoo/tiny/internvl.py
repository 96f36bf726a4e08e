"""Tiny InternVL (the HF-native ``-hf`` layout): an InternViT-style tower with a 0.5 pixel shuffle over a
Qwen2 text model, the stock processor."""

from __future__ import annotations

from specvlm.zoo.tiny.base import TinySpec, instantiate, text_settings, vit_settings

# InternVL's (``-hf`` checkpoints): an image entry is ``<IMG_CONTEXT>``, a video entry ``<video>``, which the
# processor expands to ``Frame1: <img><IMG_CONTEXT>...</img>\\nFrame2: ...``
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<video>\n"
    "{% elif c['type'] == 'image' %}<IMG_CONTEXT>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)



def build(spec: TinySpec, tokenizer):
    """InternVL (HF-native ``-hf`` layout): every frame is an image of ``(image_size / patch_size / 2)^2``
    ``<IMG_CONTEXT>`` tokens (pixel shuffle 0.5, CLS dropped) in ``FrameK: <img>...</img>`` text; a Qwen2 text
    model with 1-D positions. Frames are resized to image_size x image_size (one tile per frame, no cropping)."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    side = spec.image_size // spec.patch_size // 2  # tokens per frame side after the 0.5 pixel shuffle
    config = InternVLConfig(
        text_config=dict(text_settings(spec, tokenizer), model_type="qwen2"),
        vision_config=vit_settings(spec),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=side * side,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
        **spec.extra,
    )
    model = instantiate(InternVLForConditionalGeneration, config, tokenizer)
    size = {"height": spec.image_size, "width": spec.image_size}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        video_processor=InternVLVideoProcessor(size=size),
        tokenizer=tokenizer,
        image_seq_length=side * side,
        chat_template=TEMPLATE,
    )
    return model, processor
