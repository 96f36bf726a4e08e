"""What every tiny family shares: :class:`TinySpec` (the sizes), the byte-level tokenizer with each family's
special tokens (:func:`build_tokenizer`), and the text-decoder and ViT settings most families start from.

The family modules beside this one each build one family's stock model and processor from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

# Each family's special tokens (the tokenizer adds them to the 256 bytes); GLM-4.1V / 4.5V / 4.6V's:
GLM_SPECIALS = [
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
# Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5 and LLaVA-OneVision-1.5's:
QWEN_SPECIALS = [
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
GEMMA4_SPECIALS = [
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
SPECIALS = {
    "gemma4": GEMMA4_SPECIALS,
    "llava_onevision": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
    "qwen2_5_vl": QWEN_SPECIALS,
    "qwen2_vl": QWEN_SPECIALS,
    "qwen3_vl": QWEN_SPECIALS,
    "qwen3_vl_moe": QWEN_SPECIALS,
    "qwen3_5": QWEN_SPECIALS,
    "qwen3_5_moe": QWEN_SPECIALS,
    "llava_onevision1_5": QWEN_SPECIALS,
    "glm4v": GLM_SPECIALS,
    "glm4v_moe": GLM_SPECIALS,
    "glm46v": GLM_SPECIALS,
    "internvl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"],
}
# named special tokens a family's processor reads from its tokenizer (``tokenizer.start_image_token`` ...);
# saved in the tokenizer config like the real checkpoints'
NAMED_TOKENS = {
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
    specials = SPECIALS[family]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
        **NAMED_TOKENS.get(family, {}),
    )
    fast.add_special_tokens({"additional_special_tokens": specials})
    return fast


def text_sizes(spec: TinySpec, tokenizer) -> dict:
    """A tiny text decoder's sizes (the vocabulary is the tokenizer's)."""
    return {"vocab_size": len(tokenizer), "hidden_size": spec.hidden_size, "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.num_layers, "num_attention_heads": spec.num_heads,
            "num_key_value_heads": spec.num_kv_heads, "max_position_embeddings": spec.max_positions}  # fmt: skip


def text_settings(spec: TinySpec, tokenizer) -> dict:
    """A tiny text decoder's sizes and special tokens (separate output head, no BOS)."""
    return dict(
        text_sizes(spec, tokenizer),
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )


def vit_settings(spec: TinySpec) -> dict:
    """A tiny SigLIP/InternViT-style vision tower's sizes."""
    return dict(
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_mlp_ratio * spec.vision_hidden_size,
        num_hidden_layers=spec.vision_layers,
        num_attention_heads=spec.vision_heads,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )


def merger_vit_settings(spec: TinySpec) -> dict:
    """A tiny Qwen-style vision tower's sizes: its patch merger (2x2) projects to the text model's width."""
    return dict(
        depth=spec.vision_layers,
        hidden_size=spec.vision_hidden_size,
        intermediate_size=spec.vision_mlp_ratio * spec.vision_hidden_size,
        num_heads=spec.vision_heads,
        out_hidden_size=spec.hidden_size,
        patch_size=spec.patch_size,
        spatial_merge_size=2,
    )


def instantiate(Model, config, tokenizer):
    """``Model(config)`` with the tokenizer's EOS and padding tokens on the top-level config."""
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    return Model(config)

