"""The embedded trained pair loads, stays lossless, and keeps its acceptance rates on held-out videos.

Its answer quality (multiple-choice accuracy, caption facts) is measured by ``python -m
specvlm.zoo.evaluate`` and reported in the README; it is not asserted here because the pair does not
yet ground its answers in the video (see the README).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from specvlm import SpecVLM, synthetic, zoo
from specvlm.zoo.evaluate import HELD_OUT_SEED, letter_of

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


def test_single_turn_answers_have_the_expected_form(engine):
    """Questions get one option letter; open questions get words of the closed vocabulary."""
    sample = _sample(engine, 0)
    q = sample.questions[0]
    answer = engine.generate(video=sample.frames, prompt=synthetic.question_prompt(q), max_new_tokens=3, method="ar")
    assert letter_of(answer.text) in synthetic.OPTION_LETTERS
    open_answer = engine.generate(video=sample.frames, prompt=q.question, max_new_tokens=6, method="ar").text
    assert open_answer.split() and all(w in synthetic.VOCABULARY for w in open_answer.split())
