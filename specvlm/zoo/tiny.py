"""Tiny, randomly initialised checkpoints of the real model classes, built offline.

Used by the tests, by `specvlm demo` and by anyone who wants to try the framework without downloading
weights. Each checkpoint is a directory written with ``save_pretrained`` (model, tokenizer, processor)
and is loaded back exactly like a hub checkpoint with ``from_pretrained``: the stock
``LlavaOnevisionForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration`` /
``Qwen2VLForConditionalGeneration`` / ``Qwen3VLForConditionalGeneration`` /
``Qwen3VLMoeForConditionalGeneration`` / ``InternVLForConditionalGeneration`` /
``LlavaOnevision15ForConditionalGeneration`` / ``Glm4vForConditionalGeneration`` /
``Glm4vMoeForConditionalGeneration`` / ``Qwen3_5ForConditionalGeneration`` / ``Qwen3_5MoeForConditionalGeneration``
(hybrid linear + full attention, :func:`qwen3_5_layer_types`) / ``Gemma4ForConditionalGeneration`` (sliding-window + full
attention, :func:`gemma4_layer_types`; :data:`GEMMA4_E_STYLE` for an E-model draft) classes and their stock processors. The tokenizer is a byte-level
BPE without merges (any text encodes; the vocabulary is the 256 bytes plus the family's special tokens),
built with the ``tokenizers`` library.

What this module deliberately does not do: train anything (random weights make every acceptance rate
meaningless; trained pairs live elsewhere) or reproduce real model sizes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

FAMILIES = (
    "llava_onevision",
    "qwen2_5_vl",
    "qwen2_vl",
    "qwen3_vl",
    "qwen3_vl_moe",
    "internvl",
    "llava_onevision1_5",
    "glm4v",
    "glm4v_moe",
    "glm46v",
    "qwen3_5",
    "qwen3_5_moe",
    "gemma4",
)

# Jinja chat templates in the families' own prompt format (ChatML), kept minimal.
_LLAVA_OV_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<video>\n"
    "{% elif c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_QWEN_VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# InternVL's (``-hf`` checkpoints): an image entry is ``<IMG_CONTEXT>``, a video entry ``<video>``, which the
# processor expands to ``Frame1: <img><IMG_CONTEXT>...</img>\\nFrame2: ...``
_INTERNVL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<video>\n"
    "{% elif c['type'] == 'image' %}<IMG_CONTEXT>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# GLM-4.1V / 4.5V / 4.6V's video markup (ChatML roles kept for the tiny tokenizer): the processor expands
# ``<|video|>`` to ``<|begin_of_image|><|image|>...<|end_of_image|>{seconds}`` per temporal patch
_GLM_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<|begin_of_video|><|video|><|end_of_video|>"
    "{% elif c['type'] == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_GLM_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
]

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Gemma 4's special tokens (ChatML roles kept for the tiny tokenizer); the processor reads the named ones
# (``tokenizer.boi_token`` ...) and adds ``<|video|>`` itself
_GEMMA4_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<boi>",
    "<eoi>",
    "<|image|>",
    "<|video|>",
    "<boa>",
    "<eoa>",
    "<|audio|>",
]
# Gemma 4's video markup: the processor expands ``<|video|>`` to ``mm:ss <boi><|video|>...<eoi>`` per frame
_GEMMA4_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<|video|>"
    "{% elif c['type'] == 'image' %}<|image|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SPECIALS = {
    "gemma4": _GEMMA4_SPECIALS,
    "llava_onevision": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
    "qwen2_5_vl": _QWEN_SPECIALS,
    "qwen2_vl": _QWEN_SPECIALS,
    "qwen3_vl": _QWEN_SPECIALS,
    "qwen3_vl_moe": _QWEN_SPECIALS,
    "qwen3_5": _QWEN_SPECIALS,
    "qwen3_5_moe": _QWEN_SPECIALS,
    "llava_onevision1_5": _QWEN_SPECIALS,
    "glm4v": _GLM_SPECIALS,
    "glm4v_moe": _GLM_SPECIALS,
    "glm46v": _GLM_SPECIALS,
    "internvl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
}
# named special tokens a family's processor reads from its tokenizer (``tokenizer.start_image_token`` ...);
# saved in the tokenizer config like the real checkpoints'
_NAMED_TOKENS = {
    "gemma4": {
        "boi_token": "<boi>",
        "eoi_token": "<eoi>",
        "image_token": "<|image|>",
        "boa_token": "<boa>",
        "eoa_token": "<eoa>",
        "audio_token": "<|audio|>",
    },
    "internvl": {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    },
}


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny checkpoint. Defaults give a few hundred thousand parameters."""

    family: str = "llava_onevision"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_mlp_ratio: int = 2
    image_size: int = 48  # frames are resized to image_size x image_size
    patch_size: int = 8
    max_positions: int = 32768
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; supported: {', '.join(FAMILIES)}")


def build_tokenizer(family: str):
    """A byte-level BPE tokenizer with no merges plus the family's special tokens (stock fast tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(byte_symbols)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = _SPECIALS[family]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
        **_NAMED_TOKENS.get(family, {}),
    )
    fast.add_special_tokens({"additional_special_tokens": specials})
    return fast


def _text_settings(spec: TinySpec, tokenizer) -> dict:
    """A tiny text decoder's sizes and special tokens (separate output head, no BOS)."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )


def _vit_settings(spec: TinySpec) -> dict:
    """A tiny SigLIP/InternViT-style vision tower's sizes."""
    return dict(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_mlp_ratio * spec.vision_hidden_size,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )


def llava_onevision(spec: TinySpec, tokenizer, chat_template: str = _LLAVA_OV_TEMPLATE):
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

    text = Qwen2Config(**_text_settings(spec, tokenizer))
    vision = SiglipVisionConfig(**_vit_settings(spec))
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
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = LlavaOnevisionForConditionalGeneration(config)
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


def _qwen2_5_vl(spec: TinySpec, tokenizer):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    head_dim = spec.hidden_size // spec.num_heads
    half = head_dim // 2
    # mRoPE sections (temporal, height, width) over head_dim / 2 frequencies, like the real 16/24/24 split.
    t_sec = half // 4
    h_sec = (half - t_sec) // 2
    mrope_section = [t_sec, h_sec, half - t_sec - h_sec]
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in _SPECIALS["qwen2_5_vl"]}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=spec.max_positions,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
            tie_word_embeddings=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        ),
        vision_config=dict(
            depth=spec.vision_layers,
            hidden_size=spec.vision_hidden_size,
            intermediate_size=2 * spec.vision_hidden_size,
            num_heads=2,
            out_hidden_size=spec.hidden_size,
            patch_size=spec.patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=4 * spec.patch_size,
            fullatt_block_indexes=[spec.vision_layers - 1],
            tokens_per_second=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        **spec.extra,
    )
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = Qwen2_5_VLForConditionalGeneration(config)
    pixels = spec.image_size * spec.image_size
    kw = dict(patch_size=spec.patch_size, temporal_patch_size=2, merge_size=2)
    size = {"shortest_edge": pixels, "longest_edge": pixels}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, **kw),
        video_processor=Qwen2VLVideoProcessor(size=size, **kw),
        tokenizer=tokenizer,
        chat_template=_QWEN_VL_TEMPLATE,
    )
    return model, processor


def _qwen_text_config(spec: TinySpec, tokenizer, *, interleaved: bool = False) -> dict:
    """Text-model settings shared by the tiny Qwen-VL families (3-D mRoPE over head_dim / 2 frequencies)."""
    head_dim = spec.hidden_size // spec.num_heads
    half = head_dim // 2
    # mRoPE sections (temporal, height, width), like the real 16/24/24 (Qwen2-VL) or 24/20/20 (Qwen3-VL) splits
    t_sec = half // 4
    h_sec = (half - t_sec) // 2
    rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [t_sec, h_sec, half - t_sec - h_sec]}
    if interleaved:
        rope["mrope_interleaved"] = True
    return dict(_text_settings(spec, tokenizer), rope_parameters=rope)


def _qwen_token_ids(tokenizer) -> dict:
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in _QWEN_SPECIALS}
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _qwen2_vl(spec: TinySpec, tokenizer):
    """Qwen2-VL: Qwen2.5-VL's layout with a plain ViT (no window attention) and no fps-scaled positions.

    The video processor's ``cap_pixels_per_frame`` is set (False: tiny frames are resized to exactly
    image_size x image_size, so the per-frame cap of qwen-vl-utils would change nothing but the warning).
    """
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    config = Qwen2VLConfig(
        text_config=_qwen_text_config(spec, tokenizer),
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
        **_qwen_token_ids(tokenizer),
        **spec.extra,
    )
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = Qwen2VLForConditionalGeneration(config)
    pixels = spec.image_size * spec.image_size
    kw = dict(patch_size=spec.patch_size, temporal_patch_size=2, merge_size=2)
    size = {"shortest_edge": pixels, "longest_edge": pixels}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size, **kw),
        video_processor=Qwen2VLVideoProcessor(size=size, cap_pixels_per_frame=False, **kw),
        tokenizer=tokenizer,
        chat_template=_QWEN_VL_TEMPLATE,
    )
    return model, processor


#: Frames whose pixels make up a tiny Qwen3-VL video's whole budget at image_size x image_size.
QWEN3_VL_BUDGET_FRAMES = 8


def _qwen3_vision(spec: TinySpec, deepstack: bool) -> dict:
    """Qwen3-VL's vision settings (2x2 merge, 2-frame tubelets); ``deepstack``: feed the first (up to 3)
    vision layers' features into the decoder (Qwen3-VL), else none (Qwen3.5)."""
    side = spec.image_size // spec.patch_size
    return dict(
        depth=spec.vision_layers,
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_mlp_ratio * spec.vision_hidden_size,
        num_heads=spec.vision_heads,
        out_hidden_size=spec.hidden_size,
        patch_size=spec.patch_size,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=side * side,
        **({"deepstack_visual_indexes": list(range(min(spec.vision_layers, 3)))} if deepstack else {}),
    )


def _qwen3_model(Config, Model, spec: TinySpec, tokenizer, text: dict, deepstack: bool):
    """(model, processor) of a Qwen3-VL-style checkpoint: ``Config`` / ``Model`` over the text settings
    ``text`` and :func:`_qwen3_vision`, with the stock ``Qwen3VLProcessor``."""
    config = Config(
        text_config=text,
        vision_config=_qwen3_vision(spec, deepstack=deepstack),
        tie_word_embeddings=False,
        **_qwen_token_ids(tokenizer),
        **spec.extra,
    )
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    return Model(config), _qwen3_processor(spec, tokenizer)


def _qwen3_processor(spec: TinySpec, tokenizer):
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
        chat_template=_QWEN_VL_TEMPLATE,
    )


def _qwen3_vl(spec: TinySpec, tokenizer, moe: bool = False):
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

    text = _qwen_text_config(spec, tokenizer, interleaved=True)
    text["head_dim"] = spec.hidden_size // spec.num_heads
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=spec.intermediate_size // 2)
    return _qwen3_model(Config, Model, spec, tokenizer, text, deepstack=True)


def _qwen3_vl_moe(spec: TinySpec, tokenizer):
    return _qwen3_vl(spec, tokenizer, moe=True)


def qwen3_5_layer_types(num_layers: int) -> list[str]:
    """Qwen3.5's decoder pattern for a tiny model: Gated-DeltaNet linear attention in every layer but every
    4th (as the real ``full_attention_interval`` 4) and the last, which are full attention (2 layers:
    [linear, full]; 4 layers: [linear, linear, linear, full])."""
    return [
        "full_attention" if (i + 1) % 4 == 0 or i == num_layers - 1 else "linear_attention" for i in range(num_layers)
    ]


def _qwen3_5(spec: TinySpec, tokenizer, moe: bool = False):
    """Qwen3.5 (``moe``: Qwen3.5-MoE): Qwen3-VL's video layout (per-tubelet timestamps, interleaved mRoPE)
    without DeepStack, over a hybrid decoder (:func:`qwen3_5_layer_types`). The full-attention layers keep
    the real partial rotary factor (0.25) and output gate; the linear layers are small Gated-DeltaNets with
    the real 4-wide causal convolution. Processor as in :func:`_qwen3_vl` (the stock ``Qwen3VLProcessor``)."""
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
        _text_settings(spec, tokenizer),
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
    return _qwen3_model(Config, Model, spec, tokenizer, text, deepstack=False)


def _qwen3_5_moe(spec: TinySpec, tokenizer):
    return _qwen3_5(spec, tokenizer, moe=True)


def gemma4_layer_types(num_layers: int) -> list[str]:
    """Gemma 4's decoder pattern for a tiny model: sliding-window attention in every layer but every 2nd and
    the last, which are full attention (the real models alternate 4 or 5 sliding layers with one full layer;
    2 layers: [sliding, full]; 3: [sliding, full, full]; 4: [sliding, full, sliding, full])."""
    return ["full_attention" if i % 2 == 1 or i == num_layers - 1 else "sliding_attention" for i in range(num_layers)]


#: text-config settings of an E-model (Gemma 4 E2B / E4B style) draft: per-layer input embeddings, the last
#: two layers reading the keys and values of earlier layers (KV sharing), no bidirectional vision blocks.
#: Use as ``TinySpec(family="gemma4", num_layers=4, extra=GEMMA4_E_STYLE)``.
GEMMA4_E_STYLE = {"hidden_size_per_layer_input": 16, "num_kv_shared_layers": 2, "use_bidirectional_attention": None}


def _gemma4(spec: TinySpec, tokenizer):
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
        _text_settings(spec, tokenizer),
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
        chat_template=_GEMMA4_TEMPLATE,
    )
    return model, processor


def _internvl(spec: TinySpec, tokenizer):
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
        text_config=dict(_text_settings(spec, tokenizer), model_type="qwen2"),
        vision_config=_vit_settings(spec),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=side * side,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
        **spec.extra,
    )
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = InternVLForConditionalGeneration(config)
    size = {"height": spec.image_size, "width": spec.image_size}
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=False),
        video_processor=InternVLVideoProcessor(size=size),
        tokenizer=tokenizer,
        image_seq_length=side * side,
        chat_template=_INTERNVL_TEMPLATE,
    )
    return model, processor


def _llava_onevision1_5(spec: TinySpec, tokenizer):
    """LLaVA-OneVision-1.5: a RICE ViT (2-D axial RoPE, a CLS token per frame, 2x2 merge) over a Qwen3 text
    model with 1-D positions; Qwen2-VL-style inputs (``video_grid_thw``) with a temporal patch of 1, so every
    frame gives (image_size / patch_size / 2)^2 tokens in one contiguous run. The stock processor class is
    ``Exaone4_5_Processor`` (what ``AutoProcessor`` maps the model type to)."""
    from transformers import (
        Exaone4_5_Processor,
        LlavaOnevision15Config,
        LlavaOnevision15ForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    text = _qwen_text_config(spec, tokenizer)
    text.update(model_type="qwen3", head_dim=spec.hidden_size // spec.num_heads)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0}
    config = LlavaOnevision15Config(
        text_config=text,
        vision_config=dict(
            depth=spec.vision_layers,
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_mlp_ratio * spec.vision_hidden_size,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.hidden_size,
            patch_size=spec.patch_size,
            spatial_merge_size=2,
            rope_parameters={"rope_type": "axial", "rope_theta": 10000.0},
        ),
        tie_word_embeddings=False,
        **_qwen_token_ids(tokenizer),
        **spec.extra,
    )
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = LlavaOnevision15ForConditionalGeneration(config)
    pixels = spec.image_size * spec.image_size
    kw = dict(patch_size=spec.patch_size, temporal_patch_size=1, merge_size=2)
    size = {"shortest_edge": pixels, "longest_edge": pixels}
    processor = Exaone4_5_Processor(
        image_processor=Qwen2VLImageProcessor(size=size, **kw),
        video_processor=Qwen2VLVideoProcessor(size=size, cap_pixels_per_frame=False, **kw),
        tokenizer=tokenizer,
        chat_template=_QWEN_VL_TEMPLATE,
    )
    return model, processor


def _glm4v(spec: TinySpec, tokenizer, moe: bool = False, v46: bool = False):
    """GLM-4.1V (``moe``: GLM-4.5V's MoE text model; ``v46``: GLM-4.6V's own classes over the same towers): the video is one ``<|begin_of_image|>`` run of
    ``<|image|>`` tokens per temporal patch (2 frames), each followed by its timestamp in whole seconds; video
    tokens share the image token id and are marked only by ``mm_token_type_ids`` (2 inside
    ``<|begin_of_video|>`` ... ``<|end_of_video|>``). 3-D mRoPE over half of each head's dimensions
    (``partial_rotary_factor`` 0.5). As for Qwen3-VL, the video processor's size is the total pixel budget over
    ``QWEN3_VL_BUDGET_FRAMES`` frames of image_size x image_size.
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
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
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
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in _GLM_SPECIALS}
    config = Config(
        text_config=text,
        vision_config=dict(
            depth=spec.vision_layers,
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_mlp_ratio * spec.vision_hidden_size,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.hidden_size,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            spatial_merge_size=2,
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
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = Model(config)
    pixels = spec.image_size * spec.image_size
    factor = spec.patch_size * 2
    kw = dict(patch_size=spec.patch_size, temporal_patch_size=2, merge_size=2)
    processor = Glm4vProcessor(
        image_processor=Glm4vImageProcessor(size={"shortest_edge": factor * factor, "longest_edge": pixels}, **kw),
        video_processor=Glm4vVideoProcessor(
            size={"shortest_edge": 2 * factor * factor, "longest_edge": QWEN3_VL_BUDGET_FRAMES * pixels}, **kw
        ),
        tokenizer=tokenizer,
        chat_template=_GLM_TEMPLATE,
    )
    return model, processor


def _glm4v_moe(spec: TinySpec, tokenizer):
    return _glm4v(spec, tokenizer, moe=True)


def _glm46v(spec: TinySpec, tokenizer):
    return _glm4v(spec, tokenizer, v46=True)


_BUILDERS = {
    "llava_onevision": llava_onevision,
    "qwen2_5_vl": _qwen2_5_vl,
    "qwen2_vl": _qwen2_vl,
    "qwen3_vl": _qwen3_vl,
    "qwen3_vl_moe": _qwen3_vl_moe,
    "internvl": _internvl,
    "llava_onevision1_5": _llava_onevision1_5,
    "glm4v": _glm4v,
    "glm4v_moe": _glm4v_moe,
    "glm46v": _glm46v,
    "qwen3_5": _qwen3_5,
    "qwen3_5_moe": _qwen3_5_moe,
    "gemma4": _gemma4,
}


def build_tiny(spec: TinySpec):
    """Return ``(model, processor)``: a stock model with random weights (seeded) and its stock processor."""
    tokenizer = build_tokenizer(spec.family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        builder = _BUILDERS[spec.family]
        model, processor = builder(spec, tokenizer)
        _scale_weights(model)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, processor


@torch.no_grad()
def _scale_weights(model, gain: float = 2.0) -> None:
    """Re-draw every weight matrix from N(0, (gain / sqrt(fan_in))^2).

    Default initialisation (std 0.02) gives near-uniform next-token distributions whose argmax can flip
    under float reassociation, and low gains make random models repeat one token; gain 2 gives
    well-separated greedy choices and varied continuations, which make equivalence tests meaningful.
    """
    for p in model.parameters():
        if p.ndim >= 2:
            fan_in = p[0].numel()
            p.normal_(0.0, gain * fan_in**-0.5)


def save_tiny(spec: TinySpec, path: str | os.PathLike) -> Path:
    """Build and write a tiny checkpoint (model + processor) to ``path``; returns the path."""
    path = Path(path)
    model, processor = build_tiny(spec)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    logger.info("wrote tiny %s checkpoint to %s", spec.family, path)
    return path
