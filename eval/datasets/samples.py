"""From benchmark rows to samples, and from a sample to its frames: the prompt modes (``benchmark``: the
dataset's own question, multiple choice lettered; ``caption``: one fixed description prompt per distinct
video), every configured benchmark's samples in config order, and :func:`load_clip`, which decodes one
sample at run time through :func:`specvlm.video.load_video` (within the row's start/end seconds, or a
folder of frame images).

What this module deliberately does not do: read annotation files (the readers beside it do), or decode
videos while listing samples (decoding happens per sample at run time, so a bad file costs one error row).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from specvlm_eval.config import REFERENCE_CAPTION_PROMPT, BenchmarkConfig
from specvlm_eval.datasets import longvideobench, mlvu, mvbench, synthetic, videodetailcaption, videomme
from specvlm_eval.datasets.annotations import LETTERS, AnnotationError, Item
from specvlm.video import Video, load_video

logger = logging.getLogger(__name__)

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class Sample:
    """One (video, prompt) pair. ``answer`` is the gold letter for multiple choice, else ``None``.

    ``answer_text`` is the gold answer as written in the annotations; ``answer_issue`` says why a
    multiple-choice sample has no gold letter (its answer matches none of its options). ``bounds`` are
    (start, end) seconds to sample frames from; ``frame_fps`` is the frame rate of a frame folder;
    ``error`` marks a malformed annotation row (every method records it as an error row).
    """

    benchmark: str  # the benchmark's label (result group)
    prompt_mode: str  # "benchmark" | "caption"
    sample_id: str  # unique within (benchmark, prompt_mode)
    video: str  # absolute path (may be missing: the run records an error row)
    prompt: str | None
    options: tuple[str, ...] = ()
    answer: str | None = None
    reference: str | None = None  # reference text of open-ended answers
    task: str | None = None
    answer_text: str | None = None
    answer_issue: str | None = None
    bounds: tuple[float, float] | None = None
    frame_fps: float | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.benchmark}/{self.prompt_mode}/{self.sample_id}"


READERS: dict[str, Callable[[BenchmarkConfig, Path], list[Item]]] = {
    "synthetic": synthetic.read,
    "videodetailcaption": videodetailcaption.read,
    "mvbench": mvbench.read,
    "mlvu": mlvu.read,
    "longvideobench": longvideobench.read,
    "videomme": videomme.read,
}


def multiple_choice_prompt(question: str, options: tuple[str, ...]) -> str:
    """The question, its options lettered A., B., ... one per line, and the answer-with-a-letter instruction."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)] + [MC_INSTRUCTION]
    return "\n".join(lines)


def caption_prompt(cfg: BenchmarkConfig) -> str:
    """The configured caption prompt, else the synthetic set's own one, else the reference's."""
    if cfg.caption_prompt:
        return cfg.caption_prompt
    if cfg.name == "synthetic":
        from specvlm.zoo.synthetic import CAPTION_PROMPT

        return CAPTION_PROMPT
    return REFERENCE_CAPTION_PROMPT


def _samples(cfg: BenchmarkConfig, items: list[Item], mode: str) -> list[Sample]:
    out: list[Sample] = []
    if mode == "caption":
        seen: set[str] = set()
        prompt = caption_prompt(cfg)
        for item in items:
            if item.error:
                out.append(Sample(cfg.label, mode, item.sample_id, "", None, task=item.task, error=item.error))
                continue
            if item.video in seen:
                continue
            seen.add(item.video)
            sid = os.path.splitext(os.path.basename(item.video))[0] if cfg.name != "synthetic" else item.sample_id
            if cfg.name == "mvbench" and item.task:
                sid = f"{item.task}/{sid}"
            # the whole video (not one question's bounds): one caption per distinct video
            out.append(Sample(cfg.label, mode, sid, item.video, prompt, task=item.task, frame_fps=item.frame_fps,
                              reference=item.reference if cfg.name in ("synthetic", "videodetailcaption") else None))
        return out
    for item in items:
        if item.error:
            out.append(Sample(cfg.label, mode, item.sample_id, "", None, task=item.task, error=item.error))
            continue
        if cfg.name == "synthetic" and not item.options:
            continue  # the caption row of a synthetic video has no benchmark question
        if item.options:
            prompt = item.prompt or multiple_choice_prompt(item.question, item.options)
            answer = None if item.answer_index is None else LETTERS[item.answer_index]
        else:
            prompt, answer = item.question, None
        out.append(Sample(cfg.label, mode, item.sample_id, item.video, prompt, item.options, answer, item.reference,
                          item.task, answer_text=item.answer_text, answer_issue=item.answer_issue, bounds=item.bounds,
                          frame_fps=item.frame_fps))  # fmt: skip
    return out


def _unique_ids(samples: list[Sample]) -> list[Sample]:
    counts: dict[str, int] = {}
    out = []
    for s in samples:
        n = counts.get(s.sample_id, 0)
        counts[s.sample_id] = n + 1
        out.append(s if n == 0 else Sample(**{**s.__dict__, "sample_id": f"{s.sample_id}#{n}"}))
    return out


def load_benchmark(cfg: BenchmarkConfig, root: Path, limit: int | None = None) -> list[Sample]:
    """All samples of one benchmark entry, per prompt mode in config order, each mode cut to ``limit``."""
    items = READERS[cfg.name](cfg, root)
    if cfg.tasks is not None:
        items = [i for i in items if i.task in cfg.tasks or (i.sample_id.split("/")[0] in cfg.tasks)]
    caps = [n for n in (limit, cfg.limit) if n is not None]
    samples: list[Sample] = []
    for mode in cfg.prompt_modes:
        mode_samples = _unique_ids(_samples(cfg, items, mode))
        samples.extend(mode_samples[: min(caps)] if caps else mode_samples)
    if not samples:
        raise ValueError(f"{cfg.label}: no samples in {str(root)!r} (tasks={cfg.tasks}, prompt_modes={cfg.prompt_modes})")
    errors = sum(1 for s in samples if s.error)
    logger.info("%s: %d samples from %s (%d malformed rows)", cfg.label, len(samples), root, errors)
    return samples


def load_clip(sample: Sample, *, num_frames: int | None = None, fps: float | None = None,
              max_frames: int | None = None) -> Video:  # fmt: skip
    """The sample's frames as a ``specvlm.Video``: ``num_frames`` uniform or ``fps`` (capped by
    ``max_frames``) over the video file, the frame folder (at ``sample.frame_fps``, else MVBench's
    3 fps), or only the frames within ``sample.bounds`` seconds. Raises :class:`AnnotationError` for a
    malformed row and ``VideoDecodeError`` for a video that cannot be read (each becomes error rows)."""
    if sample.error:
        raise AnnotationError(sample.error)
    start, end = sample.bounds if sample.bounds is not None else (None, None)
    folder_fps = (sample.frame_fps or mvbench.MVBENCH_FRAME_FPS) if os.path.isdir(sample.video) else None
    return load_video(sample.video, num_frames=num_frames, fps=fps, max_frames=max_frames, start=start, end=end,
                      frame_fps=folder_fps)  # fmt: skip


def _frame_folder(path: str, fps: float, bounds, sampling: dict) -> Video:
    """A folder of frame images as a video at ``fps`` (``sampling``: num_frames | fps [+ max_frames]), for
    ``specvlm_eval.lmms``; new code calls ``specvlm.video.load_video(path, frame_fps=...)`` itself."""
    start, end = bounds if bounds is not None else (None, None)
    return load_video(path, frame_fps=fps, start=start, end=end, **sampling)


def benchmark_root(cfg: BenchmarkConfig, output: Path) -> Path:
    """Where the benchmark's files are (generating the synthetic set if needed)."""
    if cfg.name == "synthetic":
        return synthetic.ensure_synthetic(cfg, synthetic.synthetic_root(cfg, output))
    return Path(os.path.expandvars(os.path.expanduser(cfg.root)))


def load_all(benchmarks, output: Path, limit: int | None = None) -> list[Sample]:
    """Every sample of every configured benchmark, in config order (deterministic)."""
    samples: list[Sample] = []
    for cfg in benchmarks:
        samples.extend(load_benchmark(cfg, benchmark_root(cfg, output), limit))
    return samples
