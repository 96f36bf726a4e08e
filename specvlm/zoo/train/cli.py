"""Train the embedded tiny target/draft pair on the synthetic video-QA task (CPU, fixed seed).

    python -m specvlm.zoo.train [--out DIR] [--steps N] [--vision-steps N] [--single-turn-steps N]
                                [--distill-samples N] [--batch B] [--seed S]
                                [--save-stage2 DIR] [--stage3-from DIR]

The training command; what it trains is described in :mod:`specvlm.zoo.train`.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from specvlm.zoo import CHECKPOINTS, ROOT
from specvlm.zoo.train.config import TrainConfig
from specvlm.zoo.train.distill import distill_stage
from specvlm.zoo.train.pair import save
from specvlm.zoo.train.stages import single_turn_stage, train

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specvlm.zoo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="where to write the checkpoints (default: the package)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--vision-steps", type=int, default=TrainConfig.vision_steps)
    parser.add_argument("--single-turn-steps", type=int, default=TrainConfig.single_turn_steps)
    parser.add_argument("--distill-samples", type=int, default=TrainConfig.distill_samples,
                        help="stage 4: target outputs the draft learns from (0: skip the stage)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=TrainConfig.batch, help="sequences per optimiser step (stages 2-3)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--save-stage2", type=Path, default=None,
                        help="also write the checkpoints after stages 1-2 to this directory (for --stage3-from)")
    parser.add_argument("--stage3-from", type=Path, default=None,
                        help="run only stages 3-4 on the checkpoints saved in this directory by stages 1-2")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig(
        steps=args.steps, vision_steps=args.vision_steps, single_turn_steps=args.single_turn_steps,
        distill_samples=args.distill_samples, batch=args.batch, seed=args.seed,
    )  # fmt: skip
    if args.stage3_from is not None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        start = time.perf_counter()
        target, draft = (
            AutoModelForImageTextToText.from_pretrained(args.stage3_from / CHECKPOINTS[n], dtype=torch.float32) for n in ("target", "draft")
        )
        processor = AutoProcessor.from_pretrained(args.stage3_from / CHECKPOINTS["target"])
        single_turn_stage(target, draft, processor, config)
        distill_stage(target, draft, processor, config)
        save(args.out, target, draft, processor)
        logger.info("stages 3-4 done in %.0f s", time.perf_counter() - start)
        return 0
    report = train(args.out, config, save_stage2=args.save_stage2)
    logger.info("done in %.0f s; final losses %s", report["seconds"], report["final_loss"])
    return 0
