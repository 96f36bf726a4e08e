"""Tiny LLaVA-OneVision: a SigLIP vision tower over a Qwen2 text model, the stock processor."""

from __future__ import annotations

from specvlm.zoo.tiny.base import TinySpec, instantiate, text_settings, vit_settings

# Jinja chat template in the family's own prompt format (ChatML), kept minimal.
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<video>\n"
    "{% elif c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(spec: TinySpec, tokenizer, chat_template: str = TEMPLATE):
    """(stock LLaVA-OneVision model with default-initialised weights, its stock processor) of ``spec``'s sizes."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    text = Qwen2Config(**text_settings(spec, tokenizer))
    vision = SiglipVisionConfig(**vit_settings(spec))
    config = LlavaOnevisionConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=[[spec.image_size, spec.image_size]],
        tie_word_embeddings=False,
        **spec.extra,
    )
    model = instantiate(LlavaOnevisionForConditionalGeneration, config, tokenizer)
    size = {"height": spec.image_size, "width": spec.image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=size, image_grid_pinpoints=[[spec.image_size, spec.image_size]]
        ),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=(spec.image_size // spec.patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=chat_template,
    )
    return model, processor
