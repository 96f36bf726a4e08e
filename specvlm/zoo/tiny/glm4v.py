"""Tiny GLM-4.1V, GLM-4.5V (MoE text model) and GLM-4.6V: one image run per temporal patch followed by its
timestamp, 3-D mRoPE over half of each head, the stock processors."""

from __future__ import annotations

from specvlm.zoo.tiny.base import GLM_SPECIALS, TinySpec, instantiate, merger_vit_settings, text_sizes
from specvlm.zoo.tiny.qwen3_vl import QWEN3_VL_BUDGET_FRAMES

# GLM-4.1V / 4.5V / 4.6V's video markup (ChatML roles kept for the tiny tokenizer): the processor expands
# ``<|video|>`` to ``<|begin_of_image|><|image|>...<|end_of_image|>{seconds}`` per temporal patch
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<|begin_of_video|><|video|><|end_of_video|>"
    "{% elif c['type'] == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(spec: TinySpec, tokenizer, moe: bool = False, v46: bool = False):
    """GLM-4.1V (``moe``: GLM-4.5V's MoE text model; ``v46``: GLM-4.6V's own classes over the same towers):
    the video is one ``<|begin_of_image|>`` run of ``<|image|>`` tokens per temporal patch (2 frames), each
    followed by its timestamp in whole seconds; video tokens share the image token id and are marked only by
    ``mm_token_type_ids`` (2 inside ``<|begin_of_video|>`` ... ``<|end_of_video|>``). 3-D mRoPE over half of
    each head's dimensions (``partial_rotary_factor`` 0.5). As for Qwen3-VL, the video processor's size is the
    total pixel budget over ``QWEN3_VL_BUDGET_FRAMES`` frames of image_size x image_size.
    """
    from transformers import Glm4vImageProcessor, Glm4vProcessor, Glm4vVideoProcessor

    if v46:  # GLM-4.6V: the GLM-4.1V text and vision towers under their own config, model and processor
        from transformers import Glm46VConfig as Config
        from transformers import Glm46VForConditionalGeneration as Model
        from transformers import Glm46VImageProcessor as Glm4vImageProcessor
        from transformers import Glm46VProcessor as Glm4vProcessor
        from transformers import Glm46VVideoProcessor as Glm4vVideoProcessor
    elif moe:
        from transformers import Glm4vMoeConfig as Config
        from transformers import Glm4vMoeForConditionalGeneration as Model
    else:
        from transformers import Glm4vConfig as Config
        from transformers import Glm4vForConditionalGeneration as Model

    head_dim = spec.hidden_size // spec.num_heads
    quarter = head_dim // 4  # frequencies of the rotated half of a head
    t_sec = max(1, quarter // 4)
    h_sec = (quarter - t_sec) // 2
    text = dict(
        text_sizes(spec, tokenizer),
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
            "mrope_section": [t_sec, h_sec, quarter - t_sec - h_sec],
        },
        pad_token_id=tokenizer.pad_token_id,
    )
    if moe:
        text.update(
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_shared_experts=1,
            moe_intermediate_size=spec.intermediate_size // 2,
            first_k_dense_replace=1,
            eos_token_id=tokenizer.eos_token_id,
        )
    if v46:
        text["model_type"] = "glm4v_text"
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in GLM_SPECIALS}
    config = Config(
        text_config=text,
        vision_config=dict(
            merger_vit_settings(spec),
            image_size=spec.image_size,
            temporal_patch_size=2,
            **({"model_type": "glm4v_vision"} if v46 else {}),  # GLM-4.6V's config resolves its towers by type
        ),
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
        tie_word_embeddings=False,
        **spec.extra,
    )
    model = instantiate(Model, config, tokenizer)
    pixels = spec.image_size * spec.image_size
    factor = spec.patch_size * 2
    kw = dict(patch_size=spec.patch_size, temporal_patch_size=2, merge_size=2)
    processor = Glm4vProcessor(
        image_processor=Glm4vImageProcessor(size={"shortest_edge": factor * factor, "longest_edge": pixels}, **kw),
        video_processor=Glm4vVideoProcessor(
            size={"shortest_edge": 2 * factor * factor, "longest_edge": QWEN3_VL_BUDGET_FRAMES * pixels}, **kw
        ),
        tokenizer=tokenizer,
        chat_template=TEMPLATE,
    )
    return model, processor


def build_moe(spec: TinySpec, tokenizer):
    """GLM-4.5V (:func:`build` with ``moe``)."""
    return build(spec, tokenizer, moe=True)


def build_46v(spec: TinySpec, tokenizer):
    """GLM-4.6V (:func:`build` with ``v46``)."""
    return build(spec, tokenizer, v46=True)
