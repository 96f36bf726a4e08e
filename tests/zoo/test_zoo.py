"""The embedded trained pair loads, stays lossless, keeps its acceptance rates on held-out videos and
keeps a floor of grounded multiple-choice answers.

The full quality report (accuracy per question kind, caption facts, tau per pruning strategy) is
``python -m specvlm.zoo.evaluate``, quoted in docs/zoo.md.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from specvlm import SpecVLM, zoo
from specvlm.zoo import synthetic
from specvlm.zoo.evaluate import HELD_OUT_SEED, MC_NEW_TOKENS, chosen_letter

MC_FLOOR = 0.45  # multiple-choice accuracy floor on the first held-out videos (chance: 0.25)
SHAPE_FLOOR = 0.8  # shape questions name the object by its colour: the lookup the word-aligned probe teaches

pytestmark = pytest.mark.skipif(
    set(zoo.available()) != set(zoo.CHECKPOINTS), reason="embedded checkpoints are not built"
)


@pytest.fixture(scope="module")
def engine():
    return SpecVLM.from_pretrained(zoo.checkpoint("target"), draft=zoo.checkpoint("draft"))


def _sample(engine, i, frames=16):
    side = engine.target.config.vision_config.image_size
    return synthetic.generate_sample(HELD_OUT_SEED + i, num_frames=frames, height=side, width=side)


def test_checkpoints_load_with_stock_classes():
    for name in ("target", "draft"):
        model = AutoModelForImageTextToText.from_pretrained(zoo.checkpoint(name))
        assert type(model).__name__ == "LlavaOnevisionForConditionalGeneration"
    with pytest.raises(ValueError, match="available"):
        zoo.checkpoint("huge")


def test_draft_is_much_cheaper_than_target():
    params = {}
    for name in ("target", "draft"):
        model = AutoModelForImageTextToText.from_pretrained(zoo.checkpoint(name))
        params[name] = sum(p.numel() for p in model.model.language_model.parameters())
    assert params["draft"] * 4 <= params["target"]


def test_trained_pair_is_lossless_against_stock_generate(engine):
    sample = _sample(engine, 0)
    inputs = engine.build_inputs(sample.frames, synthetic.CAPTION_PROMPT)
    stock = AutoModelForImageTextToText.from_pretrained(zoo.checkpoint("target")).eval()
    with torch.no_grad():
        ref = stock.generate(**inputs, max_new_tokens=120, do_sample=False)
    ref = ref[0, inputs["input_ids"].shape[1] :].tolist()
    for kwargs in (dict(method="ar"), dict(method="sd"), dict(method="specvlm"), dict(method="specvlm", tree="specvlm-25")):
        assert engine.generate(inputs=inputs, max_new_tokens=120, **kwargs).token_ids == ref, kwargs


@pytest.mark.slow
def test_acceptance_floor_on_held_out_videos(engine):
    """Chain drafting (5 tokens) on the full video and on the pruned video keeps a tau floor."""
    taus = {"sd": [], "specvlm": []}
    for i in range(2):
        inputs = engine.build_inputs(_sample(engine, i).frames, synthetic.CAPTION_PROMPT)
        for method in taus:
            result = engine.generate(inputs=inputs, max_new_tokens=200, method=method, drop_rate=0.9)
            assert result.stats.new_tokens > 40  # a caption, not a one-word answer
            taus[method].append(result.stats.mean_accepted_tokens)
    mean = {m: sum(v) / len(v) for m, v in taus.items()}
    assert mean["sd"] >= 3.0, taus
    assert mean["specvlm"] >= 0.85 * mean["sd"], taus


@pytest.mark.slow
def test_acceptance_floor_on_a_long_held_out_video(engine):
    """At the bench's length (64 frames, 1,024 video tokens) the caption still drafts well, pruned or not."""
    inputs = engine.build_inputs(_sample(engine, 0, frames=64).frames, synthetic.CAPTION_PROMPT, num_frames=64)
    assert int((inputs["input_ids"] == engine.target.config.video_token_id).sum()) >= 1024
    for method in ("sd", "specvlm"):
        result = engine.generate(inputs=inputs, max_new_tokens=128, method=method, drop_rate=0.9)
        assert result.stats.new_tokens > 40
        assert result.stats.mean_accepted_tokens >= 3.0, (method, result.stats.mean_accepted_tokens)


@pytest.mark.slow
def test_multiple_choice_answers_beat_chance_and_follow_the_video(engine):
    """On a few held-out videos the target picks the right option well above chance (25%), finds the
    object a shape question names, and asking the same questions about another video changes many of
    its answers."""
    correct = changed = total = 0
    shapes = [0, 0]
    for i in range(3):
        sample, other = _sample(engine, i), _sample(engine, 100 + i)
        for q in sample.questions:
            prompt = synthetic.question_prompt(q)
            own = engine.generate(video=sample.frames, prompt=prompt, max_new_tokens=MC_NEW_TOKENS, method="ar")
            swapped = engine.generate(video=other.frames, prompt=prompt, max_new_tokens=MC_NEW_TOKENS, method="ar")
            letter = chosen_letter(own.text, q)
            correct += letter == q.answer_letter
            changed += chosen_letter(swapped.text, q) != letter
            total += 1
            if q.kind == "shape":
                shapes[0] += letter == q.answer_letter
                shapes[1] += 1
    assert correct / total >= MC_FLOOR, (correct, total)
    assert shapes[1] >= 6 and shapes[0] / shapes[1] >= SHAPE_FLOOR, shapes
    assert changed / total >= 0.25, (changed, total)


def test_single_turn_answers_have_the_expected_form(engine):
    """Multiple-choice questions get an answer naming exactly one option; open questions get words of
    the closed vocabulary."""
    sample = _sample(engine, 0)
    q = sample.questions[0]
    prompt = synthetic.question_prompt(q)
    answer = engine.generate(video=sample.frames, prompt=prompt, max_new_tokens=MC_NEW_TOKENS, method="ar")
    assert chosen_letter(answer.text, q) in synthetic.OPTION_LETTERS, answer.text
    open_answer = engine.generate(video=sample.frames, prompt=q.question, max_new_tokens=6, method="ar").text
    assert open_answer.split() and all(w in synthetic.VOCABULARY for w in open_answer.split())


def test_target_video_tokens_carry_the_motion():
    """With the cell each token stands for, a linear readout of the target's video tokens tracks the
    objects well enough to tell their direction: the motion the answers miss is in the tokens."""
    from specvlm.zoo.evaluate import motion_readout

    summary = motion_readout(fit_samples=12, test_samples=8, frames=16)
    readout = summary["token_and_cell"]
    assert readout["objects"] >= 15
    assert max(readout["position_rmse_px"]) < 6.0
    assert readout["direction_accuracy"]["all"] >= 0.6  # chance: 0.25
