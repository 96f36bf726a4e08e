"""Tiny, randomly initialised checkpoints of the real model classes, built offline.

Used by the tests, by `specvlm demo` and by anyone who wants to try the framework without downloading
weights. Each checkpoint is a directory written with ``save_pretrained`` (model, tokenizer, processor)
and is loaded back exactly like a hub checkpoint with ``from_pretrained``: the stock
``LlavaOnevisionForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration`` /
``Qwen2VLForConditionalGeneration`` / ``Qwen3VLForConditionalGeneration`` /
``Qwen3VLMoeForConditionalGeneration`` / ``InternVLForConditionalGeneration`` /
``LlavaOnevision15ForConditionalGeneration`` / ``Glm4vForConditionalGeneration`` /
``Glm4vMoeForConditionalGeneration`` / ``Qwen3_5ForConditionalGeneration`` /
``Qwen3_5MoeForConditionalGeneration`` (hybrid linear + full attention, :func:`qwen3_5_layer_types`) /
``Gemma4ForConditionalGeneration`` (sliding-window + full attention, :func:`gemma4_layer_types`;
:data:`GEMMA4_E_STYLE` for an E-model draft) classes and their stock processors, one module a family
(named as in ``specvlm.models``). The tokenizer is a byte-level BPE without merges (any text encodes; the
vocabulary is the 256 bytes plus the family's special tokens), built with the ``tokenizers`` library
(:mod:`specvlm.zoo.tiny.base`, beside :class:`TinySpec`).

What this package deliberately does not do: train anything (random weights make every acceptance rate
meaningless; trained pairs live elsewhere) or reproduce real model sizes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from specvlm.zoo.tiny import (
    gemma4,
    glm4v,
    internvl,
    llava_onevision1_5,
    qwen2_5_vl,
    qwen2_vl,
    qwen3_5,
    qwen3_vl,
)
from specvlm.zoo.tiny import llava_onevision as _llava_onevision
from specvlm.zoo.tiny.base import FAMILIES, TinySpec, build_tokenizer
from specvlm.zoo.tiny.gemma4 import GEMMA4_E_STYLE, gemma4_layer_types
from specvlm.zoo.tiny.qwen3_5 import qwen3_5_layer_types
from specvlm.zoo.tiny.qwen3_vl import QWEN3_VL_BUDGET_FRAMES

logger = logging.getLogger(__name__)

#: LLaVA-OneVision's builder under its earlier name; as a package attribute it hides the family module
#: of the same name (import the builder from the module: ``from specvlm.zoo.tiny.llava_onevision import build``).
llava_onevision = _llava_onevision.build

_BUILDERS = {
    "llava_onevision": _llava_onevision.build,
    "qwen2_5_vl": qwen2_5_vl.build,
    "qwen2_vl": qwen2_vl.build,
    "qwen3_vl": qwen3_vl.build,
    "qwen3_vl_moe": qwen3_vl.build_moe,
    "internvl": internvl.build,
    "llava_onevision1_5": llava_onevision1_5.build,
    "glm4v": glm4v.build,
    "glm4v_moe": glm4v.build_moe,
    "glm46v": glm4v.build_46v,
    "qwen3_5": qwen3_5.build,
    "qwen3_5_moe": qwen3_5.build_moe,
    "gemma4": gemma4.build,
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


__all__ = [
    "FAMILIES",
    "GEMMA4_E_STYLE",
    "QWEN3_VL_BUDGET_FRAMES",
    "TinySpec",
    "build_tiny",
    "build_tokenizer",
    "gemma4_layer_types",
    "llava_onevision",
    "qwen3_5_layer_types",
    "save_tiny",
]
