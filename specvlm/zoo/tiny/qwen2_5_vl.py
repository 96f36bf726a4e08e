"""Tiny Qwen2.5-VL: a window-attention ViT (2x2 merge, 2-frame tubelets) over a text model with 3-D mRoPE
and fps-scaled temporal positions, the stock processor. Also what the other tiny Qwen-style families share
(chat template, mRoPE text settings, vision token ids, the Qwen2-VL processors), as ``specvlm.models``
builds their adapters on Qwen2.5-VL's."""

from __future__ import annotations

from specvlm.zoo.tiny.base import QWEN_SPECIALS, TinySpec, instantiate, merger_vit_settings, text_settings

# Jinja chat template in the Qwen-VL prompt format (ChatML), kept minimal.
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def text_config(spec: TinySpec, tokenizer, *, interleaved: bool = False) -> dict:
    """Text-model settings shared by the tiny Qwen-VL families (3-D mRoPE over head_dim / 2 frequencies)."""
    head_dim = spec.hidden_size // spec.num_heads
    half = head_dim // 2
    # mRoPE sections (temporal, height, width), like the real 16/24/24 (Qwen2-VL) or 24/20/20 (Qwen3-VL) splits
    t_sec = half // 4
    h_sec = (half - t_sec) // 2
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [t_sec, h_sec, half - t_sec - h_sec]}
    if interleaved:
        rope["mrope_interleaved"] = True
    return dict(text_settings(spec, tokenizer), rope_parameters=rope)


def token_ids(tokenizer) -> dict:
    """The vision token ids a Qwen-style config names (image, video, vision start and end)."""
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in QWEN_SPECIALS}
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def processor(Processor, spec: TinySpec, tokenizer, temporal_patch_size: int = 2, **video):
    """``Processor`` over the stock Qwen2-VL image and video processors, every frame resized to exactly
    image_size x image_size; ``video``: further video-processor settings."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixels = spec.image_size * spec.image_size
    kw = dict(patch_size=spec.patch_size, temporal_patch_size=temporal_patch_size, merge_size=2)
    size = {"shortest_edge": pixels, "longest_edge": pixels}
    return Processor(
        image_processor=Qwen2VLImageProcessor(size=size, **kw),
        video_processor=Qwen2VLVideoProcessor(size=size, **video, **kw),
        tokenizer=tokenizer,
        chat_template=TEMPLATE,
    )


def build(spec: TinySpec, tokenizer):
    """Qwen2.5-VL: window attention in every vision layer but the last, fps-scaled temporal positions
    (``tokens_per_second`` 2)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )

    config = Qwen2_5_VLConfig(
        text_config=text_config(spec, tokenizer),
        vision_config=dict(
            merger_vit_settings(spec),
            intermediate_size=2 * spec.vision_hidden_size,  # a fixed 2x MLP and 2 heads, whatever the spec says
            num_heads=2,
            temporal_patch_size=2,
            window_size=4 * spec.patch_size,
            fullatt_block_indexes=[spec.vision_layers - 1],
            tokens_per_second=2,
        ),
        **token_ids(tokenizer),
        tie_word_embeddings=False,
        **spec.extra,
    )
    model = instantiate(Qwen2_5_VLForConditionalGeneration, config, tokenizer)
    return model, processor(Qwen2_5_VLProcessor, spec, tokenizer)
