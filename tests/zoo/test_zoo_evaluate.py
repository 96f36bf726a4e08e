"""The embedded pair's evaluation counts what it claims: accuracy, video reliance, identity with ar.

The engine is replaced by scripted stand-ins whose answers are known, so the report's numbers can be
checked exactly without the trained checkpoints.
"""

from __future__ import annotations

import hashlib
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from specvlm.zoo import synthetic
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
        stats = SimpleNamespace(visual_tokens=7, mean_accepted_tokens=2.0)
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


# --------------------------------------------------------------------------- motion readout

READOUT_SIDE = 64  # the trained pair's frame size: train.GRID cells of 16 x 16 pixels per side


def _readout(monkeypatch, features, fit=6, test=6, frames=FRAMES):
    """``motion_readout`` with the model's video tokens replaced by ``features(frames) -> (T * GRID**2, d)``."""
    from specvlm.zoo import train

    config = SimpleNamespace(vision_config=SimpleNamespace(image_size=READOUT_SIDE))
    model = SimpleNamespace(config=config, eval=lambda: model)
    monkeypatch.setattr("transformers.AutoModelForImageTextToText.from_pretrained", lambda *a, **k: model)
    monkeypatch.setattr("transformers.AutoProcessor.from_pretrained", lambda *a, **k: None)
    monkeypatch.setattr(ev, "checkpoint", lambda name: name)
    monkeypatch.setattr(train, "pixel_values", lambda frames, processor: frames)
    monkeypatch.setattr(train, "video_features", lambda m, frames: torch.as_tensor(features(frames))[None])
    return ev.motion_readout(fit, test, frames)


def _centroids(frames: np.ndarray) -> np.ndarray:
    """A stand-in encoder that sees where the objects are: per cell, the mean (x, y) of its coloured
    (non-grey) pixels in the frame, and a flag for whether it has any; one trailing newline token."""
    from specvlm.zoo.train import GRID

    t, h, w, _ = frames.shape
    coloured = (frames.max(-1).astype(int) - frames.min(-1).astype(int)) > 0
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.zeros((t, GRID, GRID, 3))
    ch, cw = h // GRID, w // GRID
    for k in range(t):
        for r in range(GRID):
            for c in range(GRID):
                m = coloured[k, r * ch : (r + 1) * ch, c * cw : (c + 1) * cw]
                if m.any():
                    out[k, r, c] = (xs[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw][m].mean(),
                                    ys[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw][m].mean(), 1.0)  # fmt: skip
    return np.concatenate([out.reshape(-1, 3), np.zeros((1, 3))])


def test_motion_readout_reads_tokens_that_carry_positions(monkeypatch):
    summary = _readout(monkeypatch, _centroids, frames=16)
    token = summary["token"]
    # a coloured pixel's centroid is where the object is, up to occlusion and the edge of its cell
    assert max(token["position_rmse_px"]) < 4.0
    assert token["direction_accuracy"]["all"] >= 0.9
    assert set(token["direction_accuracy"]) == {"all", "slowly", "quickly"}
    assert token["objects"] == sum(
        len(synthetic.generate_sample(ev.HELD_OUT_SEED + i, num_frames=16, height=READOUT_SIDE, width=READOUT_SIDE).objects)
        for i in range(6)
    )


def test_motion_readout_of_tokens_without_positions_is_blind(monkeypatch):
    from specvlm.zoo.train import GRID

    summary = _readout(monkeypatch, lambda frames: np.ones((frames.shape[0] * GRID * GRID + 1, 4)))
    token = summary["token"]
    # constant tokens read out one position for every object: no motion, so no direction is right
    assert token["direction_accuracy"]["all"] == 0.0
    assert token["objects"] > 0
    # the cell's place alone (where the object's centre is, to a cell) is a coarse track
    assert max(summary["token_and_cell"]["position_rmse_px"]) < max(token["position_rmse_px"])


@pytest.mark.parametrize(
    ("sx", "sy", "direction"),
    [(0.8, 0.1, "right"), (-0.8, 0.1, "left"), (0.1, 0.9, "down"), (0.1, -0.9, "up"), (1e-13, -1e-14, "none"), (0.0, 0.0, "none")],
)
def test_track_direction_reads_the_larger_slope_and_calls_noise_still(sx, sy, direction):
    assert ev.track_direction(sx, sy) == direction


def test_motion_readout_rejects_empty_sample_counts():
    with pytest.raises(ValueError, match="fit_samples and test_samples must be >= 1, got 0 and 3"):
        ev.motion_readout(0, 3, FRAMES)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--motion-readout", "-2"], "--motion-readout takes the number of videos .* got -2"),
        (["--motion-readout", "4", "--samples", "0"], "fit_samples and test_samples must be >= 1, got 4 and 0"),
    ],
)
def test_motion_readout_cli_rejects_bad_counts(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ev.main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
