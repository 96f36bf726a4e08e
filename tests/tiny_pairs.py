"""Helpers shared by the tests that decode on tiny pairs: each family's target / draft checkpoints, the prompts the
lossless tests decode, the stock model's greedy tokens, and the checks of an EOS-free chain decoding.

The session fixtures built on these (``pairs``, ``checkpoints``, ``stock_reference``) are in tests/conftest.py."""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import numpy as np
import torch
from transformers import AutoModelForImageTextToText

from specvlm.zoo.tiny import TinySpec, save_tiny

#: the two reference families: the session's ``checkpoints`` (tests/conftest.py) hold a pair of each
CORE_FAMILIES = ("llava_onevision", "qwen2_5_vl")

#: (target, draft) decoder layers of each family's tiny pair. The Qwen3-VL targets have 3 layers and their drafts 2:
#: DeepStack adds visual features after the first decoder layers, which reach the text only through a later layer,
#: so a 1-layer draft could not show that its DeepStack features matter. The hybrid Qwen3.5 targets are
#: [linear, linear, linear, full] and their drafts [linear, full]; the Gemma 4 target is [sliding, full, sliding,
#: full] and its draft the same depth (tests/models/test_gemma4.py gives it the E-model extras).
LAYERS = {
    "llava_onevision": (2, 1),
    "qwen2_5_vl": (2, 1),
    "qwen2_vl": (2, 1),
    "qwen3_vl": (3, 2),
    "qwen3_vl_moe": (3, 2),
    "internvl": (2, 1),
    "llava_onevision1_5": (2, 1),
    "glm4v": (2, 1),
    "glm4v_moe": (2, 1),  # the first layer is dense (first_k_dense_replace), the second MoE
    "glm46v": (2, 1),
    "qwen3_5": (4, 2),
    "qwen3_5_moe": (4, 2),
    "gemma4": (4, 4),
}

VIDEO_PROMPT = "Describe the video."
IMAGE_QUESTION = "What is shown?"


def save_pairs(root, layers: dict[str, tuple[int, int]]) -> dict[str, dict[str, str]]:
    """{family: {"target": path, "draft": path}}: a seed-0 target and a seed-1 draft of each family, with
    ``layers[family]`` = (target, draft) decoder layers, saved under ``root``."""
    return {family: save_pair(root / family, family, family_layers) for family, family_layers in layers.items()}


def save_pair(root, family: str, layers: tuple[int, int], *, max_positions: int | None = None, draft_extra=None):
    """{"target": path, "draft": path}: a seed-0 target and a seed-1 draft of ``family`` with (target, draft) decoder
    ``layers``, an optional context length and extra draft settings (``TinySpec.extra``), saved under ``root``."""
    sizes = {} if max_positions is None else {"max_positions": max_positions}
    target_layers, draft_layers = layers
    return {
        "target": save_tiny(TinySpec(family=family, seed=0, num_layers=target_layers, **sizes), root / "target"),
        "draft": save_tiny(
            TinySpec(family=family, seed=1, num_layers=draft_layers, extra=dict(draft_extra or {}), **sizes), root / "draft"
        ),
    }


@torch.no_grad()
def stock_greedy(path_or_model, inputs, max_new_tokens: int, model_type: str | None = None, **generate_kwargs) -> list[int]:
    """The new tokens of the stock model's own greedy ``generate()`` (EOS disabled unless ``generate_kwargs`` name
    one) for ``inputs``."""
    model = path_or_model
    if not isinstance(model, torch.nn.Module):
        model = AutoModelForImageTextToText.from_pretrained(path_or_model).eval()
    if model_type is not None:
        assert model.config.model_type == model_type
    settings = {"eos_token_id": None, **generate_kwargs}
    ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **settings)
    return ids[0, inputs["input_ids"].shape[1] :].tolist()


def inputs_digest(inputs) -> str:
    """A digest of processed inputs (every key and value), so equal inputs share one stock reference."""
    digest = hashlib.sha256()
    for key in sorted(inputs):
        value = inputs[key]
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def eos_free_engine(target, draft=None, **settings):
    """``SpecVLM.from_pretrained(target, draft=draft, **settings)`` with EOS disabled, so every run spans several
    steps."""
    from specvlm import SpecVLM

    engine = SpecVLM.from_pretrained(target, draft=draft, **settings)
    engine.target.generation_config.eos_token_id = None
    return engine


def pictures() -> tuple[np.ndarray, np.ndarray]:
    """A wide (60 x 90) and a square (40 x 40) random picture."""
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (60, 90, 3), dtype=np.uint8), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)


def image_media(prompt: str, frames) -> dict:
    """``build_inputs`` arguments of the image prompts: one image, two images, an image and a 4-frame video."""
    wide, square = pictures()
    return {
        "image": {"images": [wide]},
        "multi": {"images": [wide, square]},
        "image+video": {"images": [square], "video": frames[:4]},
    }[prompt]


#: the prompts at the edges of a family's inputs (tests/models/test_edges.py), the families they run on, in a
#: ``EDGE_CONTEXT``-position context (the Gemma 4 pair there: 2 + 2 plain layers)
EDGE_PROMPTS = ("one_frame", "odd_frames", "one_image", "one_char_prompt", "no_text")
EDGE_FAMILIES = (
    "llava_onevision", "qwen2_5_vl", "qwen2_vl", "qwen3_vl", "internvl", "llava_onevision1_5", "glm4v", "glm46v",
    "qwen3_5", "gemma4",
)  # fmt: skip
EDGE_CONTEXT = 320
EDGE_LAYERS = {"gemma4": (2, 2)}
#: families whose stock video processor refuses a video shorter than one temporal patch (2 frames)
PAIRS_REQUIRED = ("qwen3_vl", "glm4v", "glm46v", "qwen3_5")
#: the prompts holding images as visual runs (tests/inputs/test_images.py)
IMAGE_PROMPTS = ("image", "multi", "image+video")


def build_prompt(engine, prompt: str, frames):
    """Processed inputs of a named prompt: "video" (8 frames, a question), the edges (one frame, three frames, one
    image, a one-character prompt, a user turn holding only the video) and the image prompts."""
    if prompt == "video":
        return engine.build_inputs(frames, VIDEO_PROMPT)
    if prompt == "one_frame":
        return engine.build_inputs(frames[:1], VIDEO_PROMPT)
    if prompt == "odd_frames":
        return engine.build_inputs(frames[:3], VIDEO_PROMPT)
    if prompt == "one_image":
        return engine.build_inputs(images=frames[0], prompt="Describe the image.")
    if prompt == "one_char_prompt":
        return engine.build_inputs(frames[:2], "?")
    if prompt == "no_text":  # a user turn holding only the video
        return engine.build_inputs(frames[:2], messages=[{"role": "user", "content": [{"type": "video"}]}])
    if prompt in IMAGE_PROMPTS:
        return engine.build_inputs(prompt=IMAGE_QUESTION, **image_media(prompt, frames))
    raise AssertionError(prompt)


def expected_kept(method: str, drop_rate: float, n: int) -> int:
    """Visual tokens the draft keeps: none without a draft model ("ar", "lookup"), all for "sd", else
    floor(N x (1 - drop_rate)) and at least 1 (exact in fractions)."""
    if method in ("ar", "lookup"):
        return 0
    if method == "sd":
        return n
    return max(1, math.floor(n * (1 - Fraction(str(drop_rate)))))


def check_chain(engine, inputs, expected: list[int], method: str, drop_rate: float):
    """``engine``'s chain decoding of ``inputs`` gives ``expected`` (stock greedy, EOS disabled) with the
    kept video tokens and KV sizes of ``method`` at ``drop_rate``; returns the result."""
    max_new = len(expected)
    result = engine.generate(inputs=inputs, max_new_tokens=max_new, method=method, drop_rate=drop_rate, tree="chain")
    assert result.token_ids == expected, (method, drop_rate)
    stats = result.stats
    n = stats.video_tokens
    kept = expected_kept(method, drop_rate, n)
    assert stats.kept_video_tokens == kept
    assert stats.new_tokens == max_new and stats.stopped_by == "max_new_tokens"
    assert sum(stats.accepted_lengths) == max_new - 1  # the first token is the prefill's
    if method not in ("ar", "lookup"):  # those have no draft model
        assert stats.draft_kv_tokens == stats.target_kv_tokens - n + kept
    return result


class Lazy(dict):
    """A dict that builds a missing entry on first use with ``build(key)``."""

    def __init__(self, build):
        super().__init__()
        self._build = build

    def __missing__(self, key):
        value = self[key] = self._build(key)
        return value
