"""Measure the embedded pair on held-out synthetic videos: accuracy, caption facts, tau per pruning.

    python -m specvlm.zoo.evaluate [--samples N] [--frames T] [--json FILE] [--checkpoints DIR] [--motion-readout FIT]

``--checkpoints DIR`` measures the pair a training run wrote there (``python -m specvlm.zoo.train
--out DIR``) instead of the embedded one.

Held-out videos use generator seeds at and above 2**30, outside the range training draws from.
Reported, all measured by this command:

* target multiple-choice accuracy over every question of each video (single-turn question right after
  the video, greedy; the option the answer picks, by letter or by naming exactly one option's text),
  overall and per question kind;
* video reliance of those answers: each question is asked again with another held-out video in place
  of its own; the accuracy with the swapped video, and the share of answers the swap leaves
  unchanged (1.0: the answers ignore the video);
* caption fact accuracy: the share of (object, attribute) facts - size, colour, shape, direction,
  speed - that the target's greedy caption states correctly, plus the share of correct object counts;
* tau (tokens committed per target step, bonus included) of chain drafting (5 tokens) while the
  target captions the video: the draft on the full video (``sd``) and on pruned videos (``specvlm``,
  ``uniform``, ``random`` at drop rates 0.9 and 0.95), with every output checked token-identical to
  plain decoding.

``--motion-readout`` measures instead how much motion the target's video tokens carry before its
language model reads them (:func:`motion_readout`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from specvlm.zoo import synthetic
from specvlm.answers import extract_choice
from specvlm.engine import SpecVLM
from specvlm.zoo import CHECKPOINTS, checkpoint

logger = logging.getLogger(__name__)

HELD_OUT_SEED = 1 << 30
MC_NEW_TOKENS = 12  # room for the longest spoken answer ("object that appears second orange") and EOS
FACTS = ("size", "colour", "shape", "direction", "speed")
PRUNING_RUNS = (("verifier_guided", 0.9), ("uniform", 0.9), ("random", 0.9),
                ("verifier_guided", 0.95), ("uniform", 0.95), ("random", 0.95))  # fmt: skip


@dataclass
class Report:
    samples: int
    frames: int
    video_tokens: int = 0
    mc_correct: int = 0
    mc_total: int = 0
    mc_by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [correct, total]
    mc_swapped_correct: int = 0  # correct with another video in place of the question's own
    mc_unchanged_by_swap: int = 0  # answers (letters) identical with the own and the swapped video
    facts_correct: int = 0
    facts_total: int = 0
    counts_correct: int = 0
    tau: dict[str, list[float]] = field(default_factory=dict)  # run name -> per-sample tau
    identical: dict[str, int] = field(default_factory=dict)  # run name -> samples identical to ar

    def summary(self) -> dict:
        out = {
            "samples": self.samples,
            "frames": self.frames,
            "video_tokens": self.video_tokens,
            "mc_accuracy": self.mc_correct / max(self.mc_total, 1),
            "mc_questions": self.mc_total,
            "mc_accuracy_by_kind": {k: c / t for k, (c, t) in self.mc_by_kind.items()},
            "mc_accuracy_swapped_video": self.mc_swapped_correct / max(self.mc_total, 1),
            "mc_answers_unchanged_by_video_swap": self.mc_unchanged_by_swap / max(self.mc_total, 1),
            "caption_fact_accuracy": self.facts_correct / max(self.facts_total, 1),
            "caption_count_accuracy": self.counts_correct / max(self.samples, 1),
            "tau": {name: sum(v) / len(v) for name, v in self.tau.items()},
            "identical_to_ar": {name: f"{n}/{self.samples}" for name, n in self.identical.items()},
        }
        full = out["tau"].get("sd")
        if full:
            out["tau_drop_vs_full"] = {name: 1 - t / full for name, t in out["tau"].items() if name != "sd"}
        return out


def chosen_letter(text: str, question) -> str | None:
    """The option letter an answer picks (a letter, or the text of exactly one option, as the
    evaluation CLI scores it), or ``None``."""
    return extract_choice(text, len(question.options), tuple(question.options))


def caption_score(caption: str, sample) -> tuple[int, int, bool]:
    """(facts stated correctly, facts in the video, object count correct)."""
    stated = synthetic.caption_facts(caption)
    by_colour = {o["colour"]: o for o in stated["objects"]}
    correct = 0
    for obj in sample.objects:
        said = by_colour.get(obj.colour)
        if said is not None:
            correct += sum(said[k] == getattr(obj, k) for k in FACTS)
    return correct, len(FACTS) * len(sample.objects), stated["count"] == len(sample.objects)


def pair_paths(root: str | Path | None = None) -> tuple[Path, Path]:
    """(target, draft) directories: the embedded pair, or the one a training run wrote under ``root``."""
    if root is None:
        return checkpoint("target"), checkpoint("draft")
    paths = tuple(Path(root) / CHECKPOINTS[name] for name in ("target", "draft"))
    missing = [str(p) for p in paths if not (p / "config.json").exists()]
    if missing:
        raise FileNotFoundError(f"no checkpoint at {', '.join(missing)}; --checkpoints takes the --out of the training command")
    return paths


def evaluate(samples: int, frames: int, max_new_tokens: int = 200, root: str | Path | None = None) -> Report:
    target, draft = pair_paths(root)
    engine = SpecVLM.from_pretrained(target, draft=draft, num_draft_tokens=5)
    side = engine.target.config.vision_config.image_size
    report = Report(samples=samples, frames=frames)
    for i in range(samples):
        sample = synthetic.generate_sample(HELD_OUT_SEED + i, num_frames=frames, height=side, width=side)
        # another held-out video (seeds past the evaluated ones), for the video-reliance check
        other = synthetic.generate_sample(HELD_OUT_SEED + samples + i, num_frames=frames, height=side, width=side)
        for q in sample.questions:  # every question: colour, shape, motion per object, count, order
            prompt = synthetic.question_prompt(q)
            own = engine.generate(video=sample.frames, prompt=prompt, max_new_tokens=MC_NEW_TOKENS, method="ar")
            letter = chosen_letter(own.text, q)
            swapped = chosen_letter(
                engine.generate(video=other.frames, prompt=prompt, max_new_tokens=MC_NEW_TOKENS, method="ar").text, q
            )
            ok = int(letter == q.answer_letter)
            report.mc_swapped_correct += int(swapped == q.answer_letter)
            report.mc_unchanged_by_swap += int(swapped == letter)
            report.mc_correct += ok
            report.mc_total += 1
            kind = report.mc_by_kind.setdefault(q.kind, [0, 0])
            kind[0] += ok
            kind[1] += 1
        inputs = engine.build_inputs(sample.frames, synthetic.CAPTION_PROMPT)
        plain = engine.generate(inputs=inputs, max_new_tokens=max_new_tokens, method="ar")
        report.video_tokens = plain.stats.visual_tokens
        correct, total, count_ok = caption_score(plain.text, sample)
        report.facts_correct += correct
        report.facts_total += total
        report.counts_correct += int(count_ok)
        runs = {"sd": dict(method="sd")}
        runs.update({f"{name}@{rate}": dict(method="specvlm", pruning=name, drop_rate=rate) for name, rate in PRUNING_RUNS})
        for run, kwargs in runs.items():
            result = engine.generate(inputs=inputs, max_new_tokens=max_new_tokens, **kwargs)
            report.tau.setdefault(run, []).append(result.stats.mean_accepted_tokens)
            report.identical[run] = report.identical.get(run, 0) + int(result.token_ids == plain.token_ids)
        logger.info("sample %d/%d: caption %d/%d facts, tau sd %.2f", i + 1, samples, correct, total, report.tau["sd"][-1])
    return report


def _object_cells(model, processor, sample) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
    """(object index, video token, one-hot of its cell in the frame, frame) for each frame an object is
    visible, taking the token of the cell that holds the object's centre."""
    from specvlm.zoo import train

    with torch.no_grad():
        feats = train.video_features(model, train.pixel_values(sample.frames, processor))[0].numpy()
    rows = []
    for j, obj in enumerate(sample.objects):
        for k in range(obj.start, min(obj.end, sample.num_frames)):
            row, col, index = train.centre_cell(obj, k, sample.height, sample.width)
            cell = np.zeros(train.GRID**2)
            cell[row * train.GRID + col] = 1.0
            rows.append((j, feats[index], cell, k))
    return rows


#: A read-out track whose slopes are both below this (pixels per frame) shows no motion: its sign would
#: be floating-point noise. The slowest synthetic object moves 0.2 x side / frames px per frame (0.05 px
#: at 64 px and 256 frames), fifty times this.
STILL_SLOPE_PX = 1e-3


def track_direction(sx: float, sy: float) -> str:
    """The direction a track's least-squares slopes (pixels per frame, image axes) read: the axis and
    sign of the larger slope, or "none" when neither reaches :data:`STILL_SLOPE_PX`."""
    if max(abs(sx), abs(sy)) < STILL_SLOPE_PX:
        return "none"
    return ("right" if sx > 0 else "left") if abs(sx) >= abs(sy) else ("down" if sy > 0 else "up")


def motion_readout(
    fit_samples: int, test_samples: int, frames: int, root: str | Path | None = None, ridge: float = 1.0
) -> dict:
    """How much of each object's motion the target's video tokens carry, read without its language model.

    A ridge regression maps the video token of the cell holding an object's centre to the object's
    position in the frame, fitted on ``fit_samples`` videos (seeds below the held-out range) and applied
    to ``test_samples`` held-out ones; an object's direction is then the axis and sign of the larger
    slope of its read-out track over the frames it is visible (a least-squares line; a track that does not
    move reads "none", which is never right). Two readouts: from
    the token alone, and from the token plus its cell's place in the frame (which the language model
    has only through the token's position in the sequence). Returns, per readout, the position error
    in pixels (x, y) and the direction accuracy per speed and overall (chance: 0.25).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if min(fit_samples, test_samples) < 1:
        raise ValueError(f"fit_samples and test_samples must be >= 1, got {fit_samples} and {test_samples}")
    path, _ = pair_paths(root)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(path)
    side = model.config.vision_config.image_size

    def collect(seeds):
        feats, cells, xy, tracks = [], [], [], []
        for seed in seeds:
            sample = synthetic.generate_sample(seed, num_frames=frames, height=side, width=side)
            for j, token, cell, k in _object_cells(model, processor, sample):
                obj = sample.objects[j]
                feats.append(token)
                cells.append(cell)
                xy.append(obj.position(k))
                tracks.append((seed, j, k, obj.direction, obj.speed))
        return np.array(feats), np.array(cells), np.array(xy), tracks

    fit = collect(range(fit_samples))
    test = collect(range(HELD_OUT_SEED, HELD_OUT_SEED + test_samples))
    out: dict = {"frames": frames, "fit_samples": fit_samples, "test_samples": test_samples}
    for name, with_cell in (("token", False), ("token_and_cell", True)):
        x_fit = np.concatenate([fit[0], fit[1]], 1) if with_cell else fit[0]
        x_test = np.concatenate([test[0], test[1]], 1) if with_cell else test[0]
        weights = np.linalg.solve(x_fit.T @ x_fit + ridge * np.eye(x_fit.shape[1]), x_fit.T @ fit[2])
        read = x_test @ weights
        objects: dict[tuple, list] = {}
        for (seed, j, k, direction, speed), point in zip(test[3], read):
            objects.setdefault((seed, j), []).append((k, point, direction, speed))
        right: dict[str, list[int]] = {}
        for track in objects.values():
            if len(track) < 2:
                continue
            ks = np.array([t[0] for t in track], dtype=float)
            points = np.array([t[1] for t in track])
            sx, sy = np.polyfit(ks, points[:, 0], 1)[0], np.polyfit(ks, points[:, 1], 1)[0]
            guess = track_direction(sx, sy)
            speed = track[0][3]
            for key in (speed, "all"):
                counts = right.setdefault(key, [0, 0])
                counts[0] += int(guess == track[0][2])
                counts[1] += 1
        out[name] = {
            "position_rmse_px": np.sqrt(((read - test[2]) ** 2).mean(0)).round(2).tolist(),
            "direction_accuracy": {k: c / n for k, (c, n) in right.items()},
            "objects": right.get("all", [0, 0])[1],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specvlm.zoo.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--json", default=None, help="also write the summary to this file")
    parser.add_argument("--checkpoints", default=None, help="the --out directory of a training run (default: the embedded pair)")
    parser.add_argument(
        "--motion-readout", type=int, default=0, metavar="FIT",
        help="measure instead how much motion the target's video tokens carry: a readout fitted on FIT videos, "
        "tested on --samples held-out ones",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.motion_readout < 0:
        parser.error(f"--motion-readout takes the number of videos to fit the readout on (>= 1; 0: off), got {args.motion_readout}")
    if args.motion_readout:
        try:
            summary = motion_readout(args.motion_readout, args.samples, args.frames, root=args.checkpoints)
        except ValueError as error:
            parser.error(str(error))
    else:
        summary = evaluate(args.samples, args.frames, args.max_new_tokens, root=args.checkpoints).summary()
    text = json.dumps(summary, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
