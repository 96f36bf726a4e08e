"""`specvlm demo`: the main job on an embedded default, offline, in seconds.

Builds a tiny LLaVA-OneVision target and a smaller draft (random weights, stock classes, stock
processor), writes a synthetic video to a temporary mp4, decodes it through the normal video path,
then runs plain decoding (``ar``) and SpecVLM on it and checks that the token ids are identical.
With random weights the draft rarely agrees with the target, so the demo also runs self-drafting
(the target drafting for itself from its pruned cache), where acceptance is high.

What this module deliberately does not do: claim speedups for random weights.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specvlm.engine import SpecVLM
from specvlm.stats import GenerationResult
from specvlm.tiny import TinySpec, save_tiny
from specvlm.video import write_video

logger = logging.getLogger(__name__)

DEMO_PROMPT = "Describe the video in detail."


def synthetic_frames(num_frames: int = 16, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a coloured square moving right over a gradient background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 96)], axis=-1).astype(np.uint8)
    colour = rng.integers(0, 256, size=3, dtype=np.uint8)
    side = max(height // 4, 2)
    frames = np.repeat(background[None], num_frames, axis=0)
    for t in range(num_frames):
        x0 = (t * (width - side)) // max(num_frames - 1, 1)
        y0 = (height - side) // 2
        frames[t, y0 : y0 + side, x0 : x0 + side] = colour
    return frames


@dataclass
class DemoReport:
    results: dict[str, GenerationResult]
    identical: bool

    def lines(self) -> list[str]:
        ar = self.results["ar"]
        out = [f"answer (token ids {ar.token_ids[:12]}{'...' if len(ar.token_ids) > 12 else ''})"]
        for name, r in self.results.items():
            s = r.stats
            speed = ar.stats.decode_s / s.decode_s if s.decode_s else float("nan")
            out.append(
                f"{name:<22} tau={s.mean_accepted_tokens:5.2f}  kept video tokens={s.kept_video_tokens:>4}/{s.video_tokens:<4} "
                f"draft KV={s.draft_kv_tokens:>4}/{s.target_kv_tokens:<4} decode={s.decode_s * 1000:7.1f} ms  "
                f"decode speedup vs ar={speed:4.2f}x"
            )
        verdict = "identical to" if self.identical else "DIFFERENT FROM"
        out.append(f"every method's output token ids are {verdict} plain decoding")
        return out


def run_demo(workdir: str | Path | None = None, max_new_tokens: int = 48, num_frames: int = 8) -> DemoReport:
    """Build the tiny pair and a synthetic video, run ar / specvlm / self-drafting, compare outputs."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        target = save_tiny(TinySpec(family="llava_onevision", seed=0), root / "target")
        draft = save_tiny(TinySpec(family="llava_onevision", seed=1, num_layers=1), root / "draft")
        video = root / "demo.mp4"
        write_video(video, synthetic_frames(), fps=8.0)
        engine = SpecVLM.from_pretrained(target, draft=draft, drop_rate=0.9)
        inputs = engine.build_inputs(str(video), DEMO_PROMPT, num_frames=num_frames)
        # the tiny models have no stop habit: decode the full budget so several verify steps run
        engine.target.generation_config.eos_token_id = None
        results = {"ar": engine.generate(inputs=inputs, max_new_tokens=max_new_tokens, method="ar")}
        results["specvlm (draft model)"] = engine.generate(inputs=inputs, max_new_tokens=max_new_tokens, method="specvlm")
        self_engine = SpecVLM(engine.target, engine.processor, draft=None, config=engine.config)
        results["specvlm (self-draft)"] = self_engine.generate(
            inputs=inputs, max_new_tokens=max_new_tokens, method="specvlm", drop_rate=0.5
        )
        identical = all(r.token_ids == results["ar"].token_ids for r in results.values())
        return DemoReport(results=results, identical=identical)
