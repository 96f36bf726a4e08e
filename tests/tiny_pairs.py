"""Helpers shared by the families' lossless tests: tiny target / draft checkpoints and stock greedy tokens."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from transformers import AutoModelForImageTextToText

from specvlm.zoo.tiny import TinySpec, save_tiny

#: the two reference families: the session's ``checkpoints`` (tests/conftest.py) hold a pair of each
CORE_FAMILIES = ("llava_onevision", "qwen2_5_vl")


def save_pairs(root, layers: dict[str, tuple[int, int]]) -> dict[str, dict[str, str]]:
    """{family: {"target": path, "draft": path}}: a seed-0 target and a seed-1 draft of each family, with
    ``layers[family]`` = (target, draft) decoder layers, saved under ``root``."""
    out = {}
    for family, (target_layers, draft_layers) in layers.items():
        out[family] = {
            "target": save_tiny(TinySpec(family=family, seed=0, num_layers=target_layers), root / family / "target"),
            "draft": save_tiny(TinySpec(family=family, seed=1, num_layers=draft_layers), root / family / "draft"),
        }
    return out


@torch.no_grad()
def stock_greedy(path_or_model, inputs, max_new_tokens: int, model_type: str | None = None) -> list[int]:
    """The new tokens of the stock model's own greedy ``generate()`` (EOS disabled) for ``inputs``."""
    model = path_or_model
    if not isinstance(model, torch.nn.Module):
        model = AutoModelForImageTextToText.from_pretrained(path_or_model).eval()
    if model_type is not None:
        assert model.config.model_type == model_type
    ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None)
    return ids[0, inputs["input_ids"].shape[1] :].tolist()


def eos_free_engine(target, draft=None):
    """``SpecVLM.from_pretrained(target, draft=draft)`` with EOS disabled, so every run spans several steps."""
    from specvlm import SpecVLM

    engine = SpecVLM.from_pretrained(target, draft=draft)
    engine.target.generation_config.eos_token_id = None
    return engine


def check_chain(engine, inputs, expected: list[int], method: str, drop_rate: float):
    """``engine``'s chain decoding of ``inputs`` gives ``expected`` (stock greedy, EOS disabled) with the
    kept video tokens and KV sizes of ``method`` at ``drop_rate``; returns the result."""
    max_new = len(expected)
    result = engine.generate(inputs=inputs, max_new_tokens=max_new, method=method, drop_rate=drop_rate, tree="chain")
    assert result.token_ids == expected, (method, drop_rate)
    stats = result.stats
    n = stats.video_tokens
    kept = {"ar": 0, "lookup": 0, "sd": n}.get(method, max(1, math.floor(n * (1 - Fraction(str(drop_rate))))))
    assert stats.kept_video_tokens == kept
    assert stats.new_tokens == max_new and stats.stopped_by == "max_new_tokens"
    assert sum(stats.accepted_lengths) == max_new - 1  # the first token is the prefill's
    if method not in ("ar", "lookup"):  # those have no draft model
        assert stats.draft_kv_tokens == stats.target_kv_tokens - n + kept
    return result
