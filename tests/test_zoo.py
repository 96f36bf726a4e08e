"""The embedded trained pair loads, stays lossless, and still does its job on held-out videos."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from specvlm import SpecVLM, synthetic, zoo
from specvlm.zoo.evaluate import HELD_OUT_SEED, caption_score, letter_of

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


def test_quality_floor_on_held_out_videos(engine):
    correct = total = facts = facts_total = 0
    taus = []
    for i in range(2):
        sample = _sample(engine, i)
        for q in sample.questions[:4]:
            answer = engine.generate(video=sample.frames, prompt=synthetic.question_prompt(q), max_new_tokens=3, method="ar")
            correct += int(letter_of(answer.text) == q.answer_letter)
            total += 1
        caption = engine.generate(video=sample.frames, prompt=synthetic.CAPTION_PROMPT, max_new_tokens=200, method="specvlm")
        c, t, _ = caption_score(caption.text, sample)
        facts, facts_total = facts + c, facts_total + t
        taus.append(caption.stats.mean_accepted_tokens)
    assert correct / total >= 0.75, (correct, total)
    assert facts / facts_total >= 0.75, (facts, facts_total)
    assert sum(taus) / len(taus) >= 2.5, taus
