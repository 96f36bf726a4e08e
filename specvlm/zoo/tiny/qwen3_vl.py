"""Tiny Qwen3-VL and Qwen3-VL-MoE: per-tubelet timestamps, interleaved mRoPE and DeepStack, the stock
processor with a per-video pixel budget. Also the vision tower, model and processor that tiny Qwen3.5 reuses."""

from __future__ import annotations

from specvlm.zoo.tiny.base import TinySpec, instantiate, merger_vit_settings
from specvlm.zoo.tiny.qwen2_5_vl import TEMPLATE, text_config, token_ids

#: Frames whose pixels make up a tiny Qwen3-VL video's whole budget at image_size x image_size.
QWEN3_VL_BUDGET_FRAMES = 8


def vision_config(spec: TinySpec, deepstack: bool) -> dict:
    """Qwen3-VL's vision settings (2x2 merge, 2-frame tubelets); ``deepstack``: feed the first (up to 3)
    vision layers' features into the decoder (Qwen3-VL), else none (Qwen3.5)."""
    side = spec.image_size // spec.patch_size
    return dict(
        merger_vit_settings(spec),
        temporal_patch_size=2,
        num_position_embeddings=side * side,
        **({"deepstack_visual_indexes": list(range(min(spec.vision_layers, 3)))} if deepstack else {}),
    )


def build_model(Config, Model, spec: TinySpec, tokenizer, text: dict, deepstack: bool):
    """(model, processor) of a Qwen3-VL-style checkpoint: ``Config`` / ``Model`` over the text settings
    ``text`` and :func:`vision_config`, with the stock ``Qwen3VLProcessor``."""
    config = Config(
        text_config=text,
        vision_config=vision_config(spec, deepstack=deepstack),
        tie_word_embeddings=False,
        **token_ids(tokenizer),
        **spec.extra,
    )
    return instantiate(Model, config, tokenizer), processor(spec, tokenizer)


def processor(spec: TinySpec, tokenizer):
    """The stock ``Qwen3VLProcessor`` (Qwen3-VL and Qwen3.5) for the tiny vision settings."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    pixels = spec.image_size * spec.image_size
    factor = spec.patch_size * 2
    kw = dict(patch_size=spec.patch_size, temporal_patch_size=2, merge_size=2)
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size={"shortest_edge": pixels, "longest_edge": pixels}, **kw),
        video_processor=Qwen3VLVideoProcessor(
            size={"shortest_edge": 2 * factor * factor, "longest_edge": QWEN3_VL_BUDGET_FRAMES * pixels},
            cap_pixels_per_frame=False,
            **kw,
        ),
        tokenizer=tokenizer,
        chat_template=TEMPLATE,
    )


def build(spec: TinySpec, tokenizer, moe: bool = False):
    """Qwen3-VL (``moe``: Qwen3-VL-MoE): per-tubelet timestamps, interleaved mRoPE and DeepStack.

    DeepStack takes one feature set from every vision layer (at most 3, like the real 3 of 27), added after
    the first decoder layers. The video processor's size is Qwen3-VL's *total* pixel budget over all frames:
    ``QWEN3_VL_BUDGET_FRAMES`` frames of image_size x image_size (8 frames of 64 x 64 become 48 x 48; more
    frames get a smaller side). ``cap_pixels_per_frame`` is set explicitly to False (the stock behaviour of
    transformers 5.25, without its warning): the tiny budget is already per video.
    """
    if moe:
        from transformers import Qwen3VLMoeConfig as Config
        from transformers import Qwen3VLMoeForConditionalGeneration as Model
    else:
        from transformers import Qwen3VLConfig as Config
        from transformers import Qwen3VLForConditionalGeneration as Model

    text = text_config(spec, tokenizer, interleaved=True)
    text["head_dim"] = spec.hidden_size // spec.num_heads
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=spec.intermediate_size // 2)
    return build_model(Config, Model, spec, tokenizer, text, deepstack=True)


def build_moe(spec: TinySpec, tokenizer):
    """Qwen3-VL-MoE (:func:`build` with ``moe``)."""
    return build(spec, tokenizer, moe=True)
