"""Low precision: every divergence from the target's own ``generate()`` is classified, and none is a bug.

In bfloat16 on CPU, verifying k drafted tokens in one forward rounds differently from k one-token
forwards, so a run may leave the reference where the reference's own two best tokens are within rounding
of each other (a near-tie). The tests require zero mismatches and report every near-tie with its margin.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForImageTextToText

from specvlm import SpecVLM
from specvlm.audit import NEAR_TIE_ULPS, Divergence, classify, extend_inputs, first_difference, tolerance

logger = logging.getLogger(__name__)

FAMILIES = ("llava_onevision", "qwen2_5_vl")
MAX_NEW = 40
DTYPE = torch.bfloat16


# ---- the classification itself -------------------------------------------------------------------------------


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2


def test_tolerance_is_units_in_the_last_place_at_the_scores_magnitude():
    scores = torch.tensor([5.0, -1.0, float("-inf")])  # largest finite |score| 5: bf16 spacing there is 4 * 2^-7
    assert tolerance(scores, torch.bfloat16) == NEAR_TIE_ULPS * 4 * 2**-7
    assert tolerance(scores, torch.float32) == NEAR_TIE_ULPS * 4 * 2**-23
    with pytest.raises(ValueError, match="not a floating-point dtype"):
        tolerance(scores, torch.int64)


def _scores(values: dict[int, float], vocab: int = 8) -> torch.Tensor:
    out = torch.full((vocab,), -3.0)
    for token, value in values.items():
        out[token] = value
    return out


def test_identical_runs():
    verdict = classify([1, 2, 3], [1, 2, 3], lambda i: pytest.fail("no scores are needed"), DTYPE)
    assert verdict == Divergence("identical") and verdict.acceptable


def test_a_divergence_within_rounding_is_a_near_tie_with_its_margin():
    unit = 4 * 2**-7  # bf16 spacing at magnitude 4..8
    scores = [None, _scores({2: 5.0, 6: 5.0 - unit})]
    verdict = classify([1, 2, 3], [1, 6, 3], scores, DTYPE)
    assert (verdict.verdict, verdict.position, verdict.expected, verdict.got) == ("near-tie", 1, 2, 6)
    assert verdict.margin == unit and verdict.tolerance == NEAR_TIE_ULPS * unit
    assert verdict.acceptable and "margin" in str(verdict)


def test_a_clear_preference_is_a_mismatch():
    scores = [_scores({1: 5.0, 4: 3.0})]  # the reference preferred 1 by 2.0: far beyond bf16 rounding
    verdict = classify([1, 2], [4, 2], scores, DTYPE)
    assert verdict.verdict == "mismatch" and verdict.margin == 2.0 and not verdict.acceptable
    # the same margin in float32 terms, and a token the reference scored higher than its own choice
    assert classify([1], [4], [_scores({1: 5.0, 4: 5.0 - 1e-3})], torch.float32).verdict == "mismatch"


def test_runs_of_different_lengths_are_a_mismatch():
    verdict = classify([1, 2, 3], [1, 2], lambda i: pytest.fail("no scores at a missing token"), DTYPE)
    assert (verdict.verdict, verdict.position, verdict.expected, verdict.got) == ("mismatch", 2, 3, None)


def test_extend_inputs_appends_text():
    inputs = {
        "input_ids": torch.tensor([[5, 6, 7]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
        "mm_token_type_ids": torch.tensor([[0, 2, 0]]),
        "pixel_values_videos": torch.zeros(2, 3),
    }
    out = extend_inputs(inputs, [8, 9])
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1]]
    assert out["mm_token_type_ids"].tolist() == [[0, 2, 0, 0, 0]]
    assert out["pixel_values_videos"] is inputs["pixel_values_videos"]
    with pytest.raises(ValueError, match="per-token tensor of unknown meaning"):
        extend_inputs({**inputs, "odd": torch.zeros(1, 3)}, [8])


# ---- bfloat16 runs against the stock generate() ---------------------------------------------------------------


@pytest.fixture(scope="module")
def stock_bf16(checkpoints, frames):
    """{family: (inputs, stock greedy tokens, stock scores per position)} in bfloat16."""
    out = {}
    for family in FAMILIES:
        path = checkpoints[family]["target"]
        engine = SpecVLM.from_pretrained(path, torch_dtype=DTYPE)
        inputs = engine.build_inputs(frames, "Describe the video.")
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=DTYPE).eval()
        with torch.no_grad():
            run = model.generate(
                **inputs, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=None,
                output_scores=True, return_dict_in_generate=True,
            )  # fmt: skip
        out[family] = (inputs, run.sequences[0, inputs["input_ids"].shape[1] :].tolist(), [s[0] for s in run.scores])
    return out


def _audit(stock_bf16, family, engine, method, tree, drop_rate) -> Divergence:
    inputs, expected, scores = stock_bf16[family]
    result = engine.generate(inputs=inputs, method=method, tree=tree, drop_rate=drop_rate, max_new_tokens=MAX_NEW, ignore_eos=True)
    verdict = classify(expected, result.token_ids, scores, DTYPE)
    if not verdict.identical:
        logger.warning("%s %s %s drop %.1f: %s", family, method, tree, drop_rate, verdict)
    assert verdict.acceptable, (family, method, tree, drop_rate, str(verdict))
    return verdict


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_has_no_mismatch(checkpoints, stock_bf16, family):
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"], draft=checkpoints[family]["draft"], torch_dtype=DTYPE)
    for method, tree, drop_rate in (("ar", "chain", 0.0), ("sd", "chain", 0.0), ("specvlm", "specvlm-25", 0.9)):
        _audit(stock_bf16, family, engine, method, tree, drop_rate)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("draft", ["separate", "self"])
def test_bfloat16_has_no_mismatch_in_any_configuration(checkpoints, stock_bf16, family, draft):
    engine = SpecVLM.from_pretrained(
        checkpoints[family]["target"], draft=checkpoints[family]["draft"] if draft == "separate" else None, torch_dtype=DTYPE
    )
    for method in ("sd", "specvlm"):
        for tree in ("chain", "specvlm-25", "dynamic"):
            for drop_rate in (0.0,) if method == "sd" else (0.0, 0.9):
                _audit(stock_bf16, family, engine, method, tree, drop_rate)


def test_the_engines_audit_finds_the_reference_scores_itself(checkpoints, stock_bf16):
    """``engine.audit`` recomputes the reference's scores at the first difference (one forward) and
    classifies as the stock scores do: identical runs, a near-tie, and a fabricated clear mismatch."""
    family = "llava_onevision"
    inputs, expected, scores = stock_bf16[family]
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"], torch_dtype=DTYPE)
    assert engine.audit(inputs, expected, expected).identical
    # the stock run's own closest call and its clearest one, at positions where the runs agree before
    margins = [float(s.topk(2).values[0] - s.topk(2).values[1]) for s in scores]
    close, clear = min(range(len(margins)), key=margins.__getitem__), max(range(len(margins)), key=margins.__getitem__)
    for i in (close, clear):
        other = int(scores[i].topk(2).indices[1])
        got = expected[:i] + [other]
        reference = classify(expected, got, scores, DTYPE)
        audited = engine.audit(inputs, expected, got)
        assert (audited.position, audited.expected, audited.got) == (i, expected[i], other)
        # one forward over the whole prefix rounds differently from the stock incremental run: the margins
        # agree within the tolerance, which is all a near-tie verdict relies on
        assert audited.margin == pytest.approx(reference.margin, abs=audited.tolerance)
    assert margins[clear] > 10 * audited.tolerance  # the clearest call is far from a tie ...
    assert audited.verdict == reference.verdict == "mismatch"  # ... so taking the other token is a bug
