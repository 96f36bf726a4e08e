"""`specvlm demo`: the main job on the embedded default, offline, in seconds.

Generates a synthetic video (moving shapes, written to a real mp4 and decoded back), then asks the
embedded trained target/draft pair (``specvlm.zoo``) for a detailed description with plain decoding
(``ar``) and with SpecVLM (the draft sees 10% of the video tokens, chosen by the target's attention),
prints the answer, tau, kept video tokens, decode times and the speedup, and checks that the two
outputs are token-identical. If the embedded checkpoints are missing it falls back to tiny random
checkpoints built offline (whose speed numbers mean nothing) and says so.

What this module deliberately does not do: benchmark (see ``specvlm bench`` / the eval CLI).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specvlm import synthetic, zoo
from specvlm.engine import SpecVLM
from specvlm.stats import GenerationResult
from specvlm.tiny import TinySpec, save_tiny
from specvlm.video import write_video

logger = logging.getLogger(__name__)


def synthetic_frames(num_frames: int = 16, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a synthetic video-QA scene (see ``specvlm.synthetic``)."""
    return synthetic.generate_sample(seed, num_frames=num_frames, height=height, width=width).frames


@dataclass
class DemoReport:
    model: str  # "trained" | "random"
    prompt: str
    results: dict[str, GenerationResult]
    identical: bool

    def lines(self) -> list[str]:
        ar = self.results["ar"]
        out = []
        if self.model == "random":
            out.append("embedded checkpoints missing: using tiny RANDOM models (speed numbers are meaningless)")
        out += [f"prompt: {self.prompt}", f"answer: {ar.text}", ""]
        for name, r in self.results.items():
            s = r.stats
            speed = ar.stats.decode_s / s.decode_s if s.decode_s else float("nan")
            out.append(
                f"{name:<8} tau={s.mean_accepted_tokens:5.2f}  kept video tokens={s.kept_video_tokens:>5}/{s.video_tokens:<5} "
                f"new tokens={s.new_tokens:>4}  decode={s.decode_s * 1000:8.1f} ms  decode speedup vs ar={speed:4.2f}x"
            )
        verdict = "identical to" if self.identical else "DIFFERENT FROM"
        out.append(f"SpecVLM output token ids are {verdict} plain decoding")
        return out


def _checkpoints(root: Path) -> tuple[str, Path, Path]:
    if set(zoo.available()) == set(zoo.CHECKPOINTS):
        return "trained", zoo.checkpoint("target"), zoo.checkpoint("draft")
    target = save_tiny(TinySpec(family="llava_onevision", seed=0), root / "target")
    draft = save_tiny(TinySpec(family="llava_onevision", seed=1, num_layers=1), root / "draft")
    return "random", target, draft


def run_demo(num_frames: int = 32, max_new_tokens: int = 160, seed: int = 7, warmup: bool = True) -> DemoReport:
    """Run plain decoding and SpecVLM on one synthetic video and compare their outputs."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, target, draft = _checkpoints(root)
        engine = SpecVLM.from_pretrained(target, draft=draft, drop_rate=0.9)
        side = engine.target.config.vision_config.image_size
        sample = synthetic.generate_sample(seed, num_frames=num_frames, height=side, width=side)
        video = root / "demo.mp4"
        write_video(video, sample.frames, fps=sample.fps)
        prompt = synthetic.CAPTION_PROMPT if model == "trained" else "Describe the video in detail."
        inputs = engine.build_inputs(str(video), prompt, num_frames=num_frames)
        if model == "random":
            engine.target.generation_config.eos_token_id = None  # random weights have no stop habit
        if warmup:
            engine.generate(inputs=inputs, max_new_tokens=8, method="ar")
            engine.generate(inputs=inputs, max_new_tokens=8, method="specvlm")
        results = {
            "ar": engine.generate(inputs=inputs, max_new_tokens=max_new_tokens, method="ar"),
            "specvlm": engine.generate(inputs=inputs, max_new_tokens=max_new_tokens, method="specvlm"),
        }
        identical = results["specvlm"].token_ids == results["ar"].token_ids
        return DemoReport(model=model, prompt=prompt, results=results, identical=identical)
