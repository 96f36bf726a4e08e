"""The embedded pair's evaluation counts what it claims: accuracy, video reliance, identity with ar.

The engine is replaced by scripted stand-ins whose answers are known, so the report's numbers can be
checked exactly without the trained checkpoints.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from specvlm import synthetic
from specvlm.zoo import evaluate as ev

SIDE = 32
FRAMES = 8


def _key(frames, prompt: str) -> tuple[str, str]:
    return hashlib.sha1(frames.tobytes()).hexdigest(), prompt


class ScriptedEngine:
    """Answers each question of the evaluated videos with its correct letter when ``grounded``, and
    with ``fixed`` for every other (video, question) pair; captions are a fixed text."""

    def __init__(self, samples: int, grounded: bool, fixed: str = "A"):
        self.target = SimpleNamespace(config=SimpleNamespace(vision_config=SimpleNamespace(image_size=SIDE)))
        self.fixed = fixed
        self.answers = {}
        if grounded:
            for i in range(samples):
                s = synthetic.generate_sample(ev.HELD_OUT_SEED + i, num_frames=FRAMES, height=SIDE, width=SIDE)
                for q in s.questions:
                    self.answers[_key(s.frames, synthetic.question_prompt(q))] = q.answer_letter

    def build_inputs(self, video, prompt):
        return ("inputs", prompt)

    def generate(self, video=None, prompt=None, inputs=None, **kwargs):
        if inputs is None:
            return SimpleNamespace(text=self.answers.get(_key(video, prompt), self.fixed))
        stats = SimpleNamespace(video_tokens=7, mean_accepted_tokens=2.0)
        return SimpleNamespace(text="the video shows a grey background .", token_ids=[1, 2, 3], stats=stats)


def _run(monkeypatch, engine, samples=2):
    monkeypatch.setattr(ev.SpecVLM, "from_pretrained", classmethod(lambda cls, *a, **k: engine))
    monkeypatch.setattr(ev, "checkpoint", lambda name: name)
    return ev.evaluate(samples, FRAMES, max_new_tokens=4).summary()


def _questions(samples):
    return [
        q
        for i in range(samples)
        for q in synthetic.generate_sample(ev.HELD_OUT_SEED + i, num_frames=FRAMES, height=SIDE, width=SIDE).questions
    ]


def test_grounded_answers_change_with_the_video(monkeypatch):
    summary = _run(monkeypatch, ScriptedEngine(2, grounded=True, fixed="A"))
    questions = _questions(2)
    share_a = sum(q.answer_letter == "A" for q in questions) / len(questions)
    assert summary["mc_questions"] == len(questions)
    assert summary["mc_accuracy"] == 1.0
    # with another video every answer falls back to "A": right exactly where "A" is the answer
    assert summary["mc_accuracy_swapped_video"] == pytest.approx(share_a)
    assert summary["mc_answers_unchanged_by_video_swap"] == pytest.approx(share_a)


def test_answers_that_ignore_the_video_are_flagged(monkeypatch):
    summary = _run(monkeypatch, ScriptedEngine(2, grounded=False, fixed="C"))
    questions = _questions(2)
    share_c = sum(q.answer_letter == "C" for q in questions) / len(questions)
    assert summary["mc_answers_unchanged_by_video_swap"] == 1.0
    assert summary["mc_accuracy"] == pytest.approx(share_c)
    assert summary["mc_accuracy_swapped_video"] == pytest.approx(share_c)
    assert summary["tau"]["sd"] == 2.0
    assert summary["identical_to_ar"]["sd"] == "2/2"


def test_checkpoints_option_measures_a_training_runs_output(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="specvlm-tiny-target.*--out of the training command"):
        ev.pair_paths(tmp_path)
    for name in ev.CHECKPOINTS.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    assert ev.pair_paths(tmp_path) == (tmp_path / "specvlm-tiny-target", tmp_path / "specvlm-tiny-draft")
    assert ev.pair_paths(None) == (ev.checkpoint("target"), ev.checkpoint("draft"))
    loaded = []

    def load(cls, target, draft=None, **kwargs):
        loaded.append((target, draft))
        return ScriptedEngine(1, grounded=True)

    monkeypatch.setattr(ev.SpecVLM, "from_pretrained", classmethod(load))
    assert ev.main(["--checkpoints", str(tmp_path), "--samples", "1", "--frames", str(FRAMES)]) == 0
    assert loaded == [(tmp_path / "specvlm-tiny-target", tmp_path / "specvlm-tiny-draft")]
