"""The statistics a result carries (specvlm/stats.py): tau and its SpecVLM convention, the time and KV metrics on
hand-set values, and their honesty on tiny models: what the engine reports is what its loop did (steps, drafts
proposed, kept video tokens, draft KV), and it stops where stock ``generate()`` stops."""

from __future__ import annotations

import pytest
import torch

import specvlm_pruning as pruning
from specvlm import SpecVLM
from specvlm.stats import GenerationStats
from tiny_pairs import CORE_FAMILIES

PROMPT = "Describe the video."


def test_tau_definitions():
    stats = GenerationStats(method="sd", accepted_lengths=[3, 1, 2, 6])
    assert stats.mean_accepted_tokens == 3.0
    assert stats.mean_accepted_draft_tokens == 2.0
    ar = GenerationStats(method="ar", accepted_lengths=[1] * 7)
    assert ar.mean_accepted_tokens == 1.0 and ar.mean_accepted_draft_tokens == 0.0
    empty = GenerationStats(method="ar")
    assert empty.mean_accepted_tokens is None and empty.mean_accepted_draft_tokens is None  # no step: no tau


def test_time_and_kv_metrics():
    stats = GenerationStats(method="specvlm", new_tokens=5, prefill_s=0.5, decode_s=2.0, draft_kv_tokens=37, target_kv_tokens=102)
    assert stats.tpot_s == 0.5  # decode seconds per token after the first
    assert stats.ttft_s == 0.5 and stats.e2e_s == 2.5
    assert stats.draft_kv_fraction == 37 / 102
    assert GenerationStats(method="ar", new_tokens=1, decode_s=3.0).tpot_s == 0.0
    assert GenerationStats(method="ar", new_tokens=0, decode_s=3.0).tpot_s == 0.0
    assert GenerationStats(method="ar").draft_kv_fraction == 0.0
    d = stats.to_dict()
    for name in ("mean_accepted_tokens", "mean_accepted_draft_tokens", "e2e_s", "ttft_s", "tpot_s", "draft_kv_fraction"):
        assert d[name] == getattr(stats, name)
    assert d["draft_kv_tokens"] == 37


# ----------------------------------------------------------------------- engine stats honesty


@pytest.fixture(scope="module")
def engines(checkpoints):
    """{family: (engine with separate draft, self-drafting engine)} with EOS disabled."""
    out = {}
    for family, paths in checkpoints.items():
        # short answers here: the draft starts with the target (lazy_draft_after=0) so its stats are checked
        pair = SpecVLM.from_pretrained(paths["target"], draft=paths["draft"], lazy_draft_after=0)
        alone = SpecVLM.from_pretrained(paths["target"], draft=None, self_draft_layers="all", lazy_draft_after=0)
        for engine in (pair, alone):
            engine.target.generation_config.eos_token_id = None  # stock generate() then never stops early
        out[family] = (pair, alone)
    return out


@pytest.fixture(scope="module")
def inputs(engines, frames):
    return {family: pair.build_inputs(frames, PROMPT) for family, (pair, _) in engines.items()}


def _expected_gammas(accepted_lengths, max_new_tokens, k):
    """Draft tokens proposed at each step by the loop's rule gamma = min(k, remaining - 1)."""
    committed, gammas = 1, []
    for length in accepted_lengths:
        gammas.append(max(0, min(k, max_new_tokens - committed - 1)))
        committed += length
    return gammas


def _check_common(result, max_new_tokens):
    stats = result.stats
    assert stats.new_tokens == len(result.token_ids) == max_new_tokens
    assert stats.stopped_by == "max_new_tokens"
    assert sum(stats.accepted_lengths) == stats.new_tokens - 1  # the first token is the prefill's
    assert stats.target_steps == len(stats.accepted_lengths)
    assert all(length >= 1 for length in stats.accepted_lengths)
    assert stats.target_kv_tokens == stats.prompt_tokens
    assert stats.prefill_s > 0 and stats.decode_s > 0


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_ar_stats(engines, inputs, family):
    for engine in engines[family]:
        result = engine.generate(inputs=inputs[family], max_new_tokens=7, method="ar")
        stats = result.stats
        _check_common(result, 7)
        assert stats.accepted_lengths == [1] * 6
        assert stats.target_steps == stats.new_tokens - 1
        assert stats.mean_accepted_tokens == 1.0 and stats.mean_accepted_draft_tokens == 0.0
        assert stats.draft_steps == 0 and stats.kept_video_tokens == 0 and stats.draft_kv_tokens == 0
        assert stats.draft_kv_fraction == 0.0
        assert stats.prompt_tokens == inputs[family]["input_ids"].shape[1]
        n_video = int((inputs[family]["input_ids"] == engine.target.config.video_token_id).sum())
        structural = 1 if family == "llava_onevision" else 0  # LLaVA-OV's trailing newline token
        assert stats.video_tokens == n_video - structural


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_self_drafting_without_pruning_accepts_every_draft(engines, inputs, family):
    _, engine = engines[family]
    k, max_new = 3, 14
    ar = engine.generate(inputs=inputs[family], max_new_tokens=max_new, method="ar")
    result = engine.generate(inputs=inputs[family], max_new_tokens=max_new, method="sd", num_draft_tokens=k)
    stats = result.stats
    _check_common(result, max_new)
    assert result.token_ids == ar.token_ids
    # 13 tokens after the prefill's: 4 + 4 + 4 + 1 (the last step has no room left for drafts)
    assert stats.accepted_lengths == [k + 1, k + 1, k + 1, 1]
    assert stats.accepted_lengths[:-1] == [k + 1] * (len(stats.accepted_lengths) - 1)
    assert stats.draft_steps == sum(_expected_gammas(stats.accepted_lengths, max_new, k)) == 3 * k
    assert stats.mean_accepted_tokens == 13 / 4
    assert stats.kept_video_tokens == stats.video_tokens
    assert stats.draft_kv_tokens == stats.target_kv_tokens == stats.prompt_tokens
    assert stats.draft_kv_fraction == 1.0


@pytest.mark.parametrize("family", CORE_FAMILIES)
@pytest.mark.parametrize("strategy,drop_rate", [("uniform", 0.9), ("uniform", 0.5), ("specvlm", 0.75), ("random", 0.3)])
def test_kept_video_tokens_and_draft_kv(engines, inputs, family, strategy, drop_rate):
    for engine in engines[family]:
        result = engine.generate(
            inputs=inputs[family], max_new_tokens=3, method="specvlm", pruning=strategy, drop_rate=drop_rate
        )
        stats = result.stats
        _check_common(result, 3)
        n = stats.video_tokens
        assert n > 1
        assert stats.kept_video_tokens == pruning.budget(n, drop_rate)
        assert stats.kept_video_tokens < n
        assert stats.draft_kv_tokens == stats.prompt_tokens - n + stats.kept_video_tokens
        assert stats.draft_kv_fraction == stats.draft_kv_tokens / stats.prompt_tokens
        assert stats.draft_steps == sum(_expected_gammas(stats.accepted_lengths, 3, engine.config.num_draft_tokens))


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_separate_draft_stats_are_consistent(engines, inputs, family):
    pair, _ = engines[family]
    ar = pair.generate(inputs=inputs[family], max_new_tokens=8, method="ar")
    for method in ("sd", "specvlm"):
        result = pair.generate(inputs=inputs[family], max_new_tokens=8, method=method)
        stats = result.stats
        _check_common(result, 8)
        assert result.token_ids == ar.token_ids
        assert stats.draft_steps == sum(_expected_gammas(stats.accepted_lengths, 8, pair.config.num_draft_tokens))
        assert stats.mean_accepted_tokens == sum(stats.accepted_lengths) / len(stats.accepted_lengths)
        if method == "sd":
            assert stats.kept_video_tokens == stats.video_tokens
            assert stats.draft_kv_tokens == stats.prompt_tokens
        else:
            assert stats.kept_video_tokens == pruning.budget(stats.video_tokens, pair.config.drop_rate)


def test_no_eos_means_no_early_stop_like_stock_generate(checkpoints, frames):
    """With ``generation_config.eos_token_id = None`` stock greedy ``generate()`` runs to
    ``max_new_tokens`` even past the tokenizer's EOS token; the engine must stop at the same place."""
    from transformers import AutoModelForImageTextToText

    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], draft=None)
    inputs = engine.build_inputs(frames, PROMPT)
    engine.target.generation_config.eos_token_id = []  # certainly no EOS
    free = engine.generate(inputs=inputs, max_new_tokens=8, method="ar").token_ids
    # make the tokenizer's EOS a token the target emits early
    tokenizer = engine.processor.tokenizer
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(free[2])
    assert tokenizer.eos_token_id == free[2]
    engine.target.generation_config.eos_token_id = None
    stock = AutoModelForImageTextToText.from_pretrained(checkpoints["llava_onevision"]["target"]).eval()
    stock.generation_config.eos_token_id = None
    with torch.no_grad():
        ref = stock.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:].tolist()
    assert ref == free
    for method in ("ar", "sd", "specvlm"):
        result = engine.generate(inputs=inputs, max_new_tokens=8, method=method)
        assert result.token_ids == ref, method
        assert result.stats.stopped_by == "max_new_tokens"
    # and a real EOS id still stops it right after that token
    engine.target.generation_config.eos_token_id = free[2]
    assert engine.generate(inputs=inputs, max_new_tokens=8, method="sd").token_ids == free[: free.index(free[2]) + 1]
