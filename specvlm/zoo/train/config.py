"""The training recipe's settings (:class:`TrainConfig`): steps, batches, learning rates and shares of each stage."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 420  # stage 2 (360 before: docs/zoo.md says what the longer stage changed)
    batch: int = 16  # sequences per optimiser step (stages 2 and 3)
    seed: int = 0
    lr: float = 3e-3
    warmup: int = 50
    frames_choices: tuple[int, ...] = (8, 16)  # drawn uniformly, one per batch
    turns: int = 10  # questions + the caption per sequence
    draft_pruned_share: float = 0.5  # share of sequences where the draft sees a subset of the video tokens
    draft_keep_min: float = 0.05
    draft_keep_max: float = 0.3
    vision_steps: int = 1500  # stage 1: the target's vision tower learns the per-cell probe alone
    vision_batch: int = 4
    vision_lr: float = 1e-3
    aux_weight: float = 0.5  # vision probe loss weight during stage 2
    vision_lr_scale: float = 0.1  # stage 2: the vision towers move slowly, keeping what stage 1 taught them
    probe_every: int = 100  # held-out multiple-choice check interval (0: never)
    single_turn_steps: int = 60  # stage 3
    single_turn_lr: float = 1e-3
    single_turn_frames: tuple[int, ...] = (8, 16, 32, 64)  # stage 3 adds longer videos (64 frames: 1,024 video tokens)
    distill_samples: int = 800  # stage 4: the target's own outputs the draft learns from
    distill_epochs: int = 6
    distill_lr: float = 1e-3
    distill_frames: tuple[int, ...] = (8, 16, 64)
    distill_caption_share: float = 0.7  # the rest are single questions
    distill_new_tokens: tuple[int, int] = (128, 16)  # target tokens per caption / per answer (EOS ignored)
    distill_pruned_share: float = 0.75  # share of sequences where the draft sees what the target's pruning keeps
