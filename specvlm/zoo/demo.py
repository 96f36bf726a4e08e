"""`specvlm demo`: the main job on the embedded default, offline, in seconds.

Generates a synthetic video (moving shapes, written to a real mp4 and decoded back), then asks the
embedded trained target/draft pair (``specvlm.zoo``) for a detailed description with plain decoding
(``ar``) and with SpecVLM (the draft sees 10% of the video tokens, chosen by the target's attention),
prints the answer, tau, kept video tokens, decode times and the speedup, and checks that the two
outputs are token-identical. If the embedded checkpoints are missing it falls back to tiny random
checkpoints built offline (whose speed numbers mean nothing) and says so.

Timing: each method first runs once over the full length (``max_new_tokens``) untimed, so neither
pays the cold-start costs (first kernels of each shape, cache growth) in its timed runs; then the timed
runs alternate (ar, specvlm, ar, specvlm, ...) and each method reports its fastest run, so the
speedup does not depend on which method ran first.

What this module deliberately does not do: benchmark (see ``specvlm bench`` / the eval CLI).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from specvlm import zoo
from specvlm.zoo import synthetic
from specvlm.audit import Divergence
from specvlm.engine import SpecVLM
from specvlm.stats import GenerationResult
from specvlm.zoo.tiny import TinySpec, save_tiny
from specvlm.video import write_video

logger = logging.getLogger(__name__)


def synthetic_frames(num_frames: int = 16, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a synthetic video-QA scene (see ``specvlm.zoo.synthetic``)."""
    return synthetic.generate_sample(seed, num_frames=num_frames, height=height, width=width).frames


@dataclass
class DemoReport:
    model: str  # "trained" | "random"
    prompt: str
    results: dict[str, GenerationResult]  # per method: its fastest timed run
    identical: bool  # every run of every method produced the same token ids as the first ar run
    decode_s: dict[str, list[float]] = field(default_factory=dict)  # per method: decode seconds of each timed run, in order
    warmed_up: bool = False  # each method ran once over the full length, untimed, before the timed runs
    divergence: Divergence | None = None  # the first differing run, classified (near-tie or mismatch)

    @property
    def timed_runs(self) -> int:
        return min((len(v) for v in self.decode_s.values()), default=1)

    def speedup(self, method: str) -> float:
        """Decode speedup of ``method`` over ``ar``: fastest ar run / fastest ``method`` run."""
        s = self.results[method].stats.decode_s
        return self.results["ar"].stats.decode_s / s if s else float("nan")

    def lines(self) -> list[str]:
        ar = self.results["ar"]
        n = self.timed_runs
        runs = f"best of {n} runs each" if n > 1 else "1 run each"
        out = []
        if self.model == "random":
            out.append("embedded checkpoints missing: using tiny RANDOM models (speed numbers are meaningless)")
        out += [f"prompt: {self.prompt}", f"answer: {ar.text}", ""]
        for name, r in self.results.items():
            s = r.stats
            tau = "    -" if s.mean_accepted_tokens is None else f"{s.mean_accepted_tokens:5.2f}"  # None: no verify step ran
            out.append(
                f"{name:<8} tau={tau}  kept video tokens={s.kept_visual_tokens:>5}/{s.visual_tokens:<5} "
                f"new tokens={s.new_tokens:>4}  decode={s.decode_s * 1000:8.1f} ms  "
                f"decode speedup vs ar={self.speedup(name):4.2f}x ({runs})"
            )
        if n > 1:
            warm = ", after one untimed full-length run of each" if self.warmed_up else ""
            out.append(f"decode times: fastest of {n} alternating timed runs per method{warm}")
        if self.identical:
            out.append("SpecVLM output token ids are identical to plain decoding")
        else:
            out.append(f"SpecVLM output token ids are DIFFERENT FROM plain decoding: {self.divergence}")
        return out


def _checkpoints(root: Path) -> tuple[str, Path, Path]:
    if set(zoo.available()) == set(zoo.CHECKPOINTS):
        return "trained", zoo.checkpoint("target"), zoo.checkpoint("draft")
    target = save_tiny(TinySpec(family="llava_onevision", seed=0), root / "target")
    draft = save_tiny(TinySpec(family="llava_onevision", seed=1, num_layers=1), root / "draft")
    return "random", target, draft


def run_demo(
    num_frames: int = 32, max_new_tokens: int = 160, seed: int = 7, warmup: bool = True, timed_runs: int = 2
) -> DemoReport:
    """Run plain decoding and SpecVLM on one synthetic video and compare their outputs.

    With ``warmup`` each method first decodes the full ``max_new_tokens`` once, untimed; then
    ``timed_runs`` rounds of (ar, specvlm) run alternately and each method keeps its fastest run.
    """
    if timed_runs < 1:
        raise ValueError(f"timed_runs={timed_runs!r} must be >= 1")
    methods = ("ar", "specvlm")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, target, draft = _checkpoints(root)
        engine = SpecVLM.from_pretrained(target, draft=draft, drop_rate=0.9)  # too few answers for compile="auto" to compile
        side = engine.target.config.vision_config.image_size
        sample = synthetic.generate_sample(seed, num_frames=num_frames, height=side, width=side)
        video = root / "demo.mp4"
        write_video(video, sample.frames, fps=sample.fps)
        prompt = synthetic.CAPTION_PROMPT if model == "trained" else "Describe the video in detail."
        inputs = engine.build_inputs(str(video), prompt, num_frames=num_frames)
        if model == "random":
            engine.target.generation_config.eos_token_id = None  # random weights have no stop habit
        runs: dict[str, list[GenerationResult]] = {m: [] for m in methods}
        warm = [engine.generate(inputs=inputs, max_new_tokens=max_new_tokens, method=m) for m in methods] if warmup else []
        for _ in range(timed_runs):
            for m in methods:
                runs[m].append(engine.generate(inputs=inputs, max_new_tokens=max_new_tokens, method=m))
        results = {m: min(rs, key=lambda r: r.stats.decode_s) for m, rs in runs.items()}
        reference = runs["ar"][0].token_ids
        every = warm + [r for rs in runs.values() for r in rs]
        identical = all(r.token_ids == reference for r in every)
        divergence = None
        if not identical:
            first = next(r for r in every if r.token_ids != reference)
            divergence = engine.audit(inputs, reference, first.token_ids, max_new_tokens=max_new_tokens)
        return DemoReport(
            model=model,
            prompt=prompt,
            results=results,
            identical=identical,
            decode_s={m: [r.stats.decode_s for r in rs] for m, rs in runs.items()},
            warmed_up=warmup,
            divergence=divergence,
        )
