"""The synthetic benchmark (``specvlm.zoo.synthetic``): its reader, and the set-up that generates the set
where the config points (or under the output's parent) when it is not there yet."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from specvlm_eval.config import BenchmarkConfig
from specvlm_eval.datasets.annotations import Item

logger = logging.getLogger(__name__)


def read(cfg: BenchmarkConfig, root: Path) -> list[Item]:
    from specvlm.zoo.synthetic import Question, question_prompt, read_dataset

    per_video = cfg.synthetic.questions_per_video
    items = []
    for i, row in enumerate(read_dataset(root)):
        questions = row["questions"]
        picks = range(len(questions)) if per_video is None else [(i + k) % len(questions) for k in range(min(per_video, len(questions)))]
        caption_item = Item(sample_id=row["sample_id"], video=row["video_path"], question="", reference=row["caption"])
        items.append(caption_item)
        for k in picks:
            q = Question.from_dict(questions[k])
            items.append(Item(
                sample_id=f"{row['sample_id']}-q{k}", video=row["video_path"], question=q.question,
                options=tuple(q.options), answer_index=q.answer, task=q.kind, prompt=question_prompt(q),
                answer_text=q.options[q.answer],
            ))  # fmt: skip
    return items


def synthetic_root(cfg: BenchmarkConfig, output: Path) -> Path:
    """The configured root, or ``<output>/../.data/synthetic-n<N>-seed<S>-<T>f<H>x<W>``."""
    if cfg.root:
        return Path(os.path.expandvars(os.path.expanduser(cfg.root)))
    s = cfg.synthetic
    return output.absolute().parent / ".data" / f"synthetic-n{s.num_samples}-seed{s.seed}-{s.num_frames}f{s.height}x{s.width}"


def ensure_synthetic(cfg: BenchmarkConfig, root: Path) -> Path:
    """Generate the synthetic set into ``root`` if it does not exist (atomically: safe with many ranks)."""
    if (root / "annotations.jsonl").is_file():
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(
            f"synthetic: {str(root)!r} exists but has no annotations.jsonl; remove it or point benchmarks[].root "
            "elsewhere (the harness generates the set only into a missing or empty directory)"
        )
    from specvlm.zoo.synthetic import write_dataset

    s = cfg.synthetic
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    logger.info("generating the synthetic benchmark (%d samples, seed %d) into %s", s.num_samples, s.seed, root)
    write_dataset(tmp, s.num_samples, seed=s.seed, num_frames=s.num_frames, height=s.height, width=s.width)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # os.rename replaces only a missing directory portably
        os.rename(tmp, root)
    except OSError:
        if not (root / "annotations.jsonl").is_file():
            raise
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # another rank finished first; its copy is identical
    return root
