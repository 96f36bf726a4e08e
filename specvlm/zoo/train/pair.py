"""The embedded pair's models and their inputs: the target's and the draft's sizes (:data:`TARGET`,
:data:`DRAFT`), the word-level tokenizer and chat template, the stock LLaVA-OneVision model and
processor built from them, frames to pixel values, pixel values to video tokens, and writing the pair."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from specvlm.zoo import CHECKPOINTS, synthetic
from specvlm.zoo.tiny import TinySpec
from specvlm.zoo.tiny.llava_onevision import build as build_llava_onevision

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
ROLES = ("user", "assistant")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|> {{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'video' %}<video> "
    "{% elif c['type'] == 'image' %}<image> {% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)

IMAGE_SIZE = 64  # frames are generated at this resolution: the processor's resize is the identity
PATCH_SIZE = 8  # 8 x 8 patches, pooled to 4 x 4 = 16 video tokens per frame
GRID = math.ceil((IMAGE_SIZE // PATCH_SIZE) / 2)  # pooled video tokens per frame side
_COMMON = dict(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, vision_heads=4, vision_mlp_ratio=4, max_positions=4096)
TARGET = TinySpec(hidden_size=256, num_layers=6, num_heads=4, num_kv_heads=2, intermediate_size=768,
                  vision_hidden_size=128, vision_layers=2, **_COMMON)  # fmt: skip
DRAFT = TinySpec(hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=384,
                 vision_hidden_size=128, vision_layers=2, **_COMMON)  # fmt: skip


def build_tokenizer():
    """Word-level tokenizer: the synthetic vocabulary, chat roles and special tokens (stock fast tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIALS) + list(ROLES) + list(synthetic.VOCABULARY) + ["<unk>"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    return fast


def build_model(spec: TinySpec, tokenizer):
    """(stock LLaVA-OneVision model, stock processor) with the word-level tokenizer and chat template."""
    model, processor = build_llava_onevision(spec, tokenizer, chat_template=CHAT_TEMPLATE)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


def pixel_values(frames: np.ndarray, processor) -> torch.Tensor:
    """(T, H, W, 3) uint8 at IMAGE_SIZE -> (1, T, 3, H, W), exactly as the stock video processor makes it."""
    vp = processor.video_processor
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(vp.image_mean)[:, None, None]
    std = torch.tensor(vp.image_std)[:, None, None]
    return ((x - mean) / std).unsqueeze(0)


def video_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """(B, T * GRID**2 + 1, hidden) for pixels (B, T, 3, H, W): the projected, pooled video tokens plus
    the trailing newline of each video, as the stock forward feeds them."""
    out = model.get_video_features(pixel_values_videos=pixels).pooler_output
    return out.reshape(pixels.shape[0], -1, out.shape[-1])


def save(out: Path, target, draft, processor) -> None:
    for name, model in (("target", target), ("draft", draft)):
        path = out / CHECKPOINTS[name]
        model.save_pretrained(path)
        processor.save_pretrained(path)
