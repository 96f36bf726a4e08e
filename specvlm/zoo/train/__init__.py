"""Train the embedded tiny target/draft pair on the synthetic video-QA task (CPU, fixed seed).

    python -m specvlm.zoo.train [--out DIR] [--steps N] [--vision-steps N] [--single-turn-steps N]
                                [--distill-samples N] [--batch B] [--seed S]
                                [--save-stage2 DIR] [--stage3-from DIR]

Both models are stock ``LlavaOnevisionForConditionalGeneration`` (SigLIP vision tower, Qwen2 text
model) with a stock ``LlavaOnevisionProcessor`` and a word-level tokenizer over the generator's
closed vocabulary. Four stages:

1. the target's vision tower and projector learn a dense per-cell probe of the scene (which object's
   centre lies in each video-token cell: colour, shape, size, position in the cell; which colours
   cover it) through a training-only head (:class:`Probe`) that scores colour, shape and size against
   the language model's own embeddings of those words, so a video token showing a red square points
   the way the words ``red`` and ``square`` do; the draft then starts from the same vision tower;
2. both models learn language modelling, a batch of packed sequences per optimiser step: one video
   followed by several turns, questions in multiple-choice form (with the lettered options) or open
   form and the caption, where each turn sees only the video and itself, at the positions it would
   have alone (:func:`encode`, :func:`branch_mask`), so that every turn is the single-turn request the
   pair answers at inference and no answer can be read from another turn's text; every answer is the
   question's key followed by the correct option (:func:`synthetic.spoken_answer`: "what shape is the
   red object ?" -> "red square"), so the answer word is looked up in the video from the token just
   written (an answer word right after the question's closing tokens needs a second hop a small model
   does not learn at this budget); the probe loss is kept and the vision towers train at a tenth of
   the learning rate; the draft sees, half the time, only a random, object-biased subset of the video
   tokens at their original positions, as after pruning;
3. a short pass in which half the sequences are the caption request alone, on videos of 8, 16, 32 and
   64 frames: the long ones (1,024 video tokens) teach both models to read a video at the length the
   bench uses, where a pair trained on short clips only loses its captions;
4. the draft alone learns the target's own greedy outputs (captions and answers), matching the
   target's next-token distributions on the video tokens the target's pruning keeps, as it drafts at
   inference (:func:`distill_stage`): acceptance is agreement with the target, right or wrong.

The loss covers the assistant answers only (stage 4: the target's outputs). ``--save-stage2 DIR`` also
writes the checkpoints as they are after stages 1-2; ``--stage3-from DIR`` runs stages 3-4 alone on
such checkpoints (they draw from their own seeded generators, so the result is the same as one full
run's).

One module a job: :mod:`~specvlm.zoo.train.pair` (the two models, the tokenizer, their inputs and
video tokens), :mod:`~specvlm.zoo.train.sequences` (packed sequences and their loss),
:mod:`~specvlm.zoo.train.probe` (the vision probe), :mod:`~specvlm.zoo.train.config` (the settings),
:mod:`~specvlm.zoo.train.stages` (stages 1-3 and the run), :mod:`~specvlm.zoo.train.distill` (stage 4)
and :mod:`~specvlm.zoo.train.cli` (the command).

What this package deliberately does not do: use GPUs, mixed precision or any data besides the
synthetic generator.
"""

from __future__ import annotations

from specvlm.zoo.train.cli import main
from specvlm.zoo.train.config import TrainConfig
from specvlm.zoo.train.distill import distill_stage, record
from specvlm.zoo.train.pair import CHAT_TEMPLATE, DRAFT, GRID, IMAGE_SIZE, PATCH_SIZE, ROLES, SPECIALS, TARGET
from specvlm.zoo.train.pair import build_model, build_tokenizer, pixel_values, save, video_features
from specvlm.zoo.train.probe import PROBE_WORDS, Probe, aux_loss, cell_targets, centre_cell
from specvlm.zoo.train.sequences import (
    branch_mask,
    branch_positions,
    conversation,
    draft_subset,
    encode,
    lm_loss,
    packed_forward,
)
from specvlm.zoo.train.stages import PROBE_SEED, lm_step, probe_accuracy, single_turn_stage, train

__all__ = [
    "CHAT_TEMPLATE",
    "DRAFT",
    "GRID",
    "IMAGE_SIZE",
    "PATCH_SIZE",
    "PROBE_SEED",
    "PROBE_WORDS",
    "ROLES",
    "SPECIALS",
    "TARGET",
    "Probe",
    "TrainConfig",
    "aux_loss",
    "branch_mask",
    "branch_positions",
    "build_model",
    "build_tokenizer",
    "cell_targets",
    "centre_cell",
    "conversation",
    "distill_stage",
    "draft_subset",
    "encode",
    "lm_loss",
    "lm_step",
    "main",
    "packed_forward",
    "pixel_values",
    "probe_accuracy",
    "record",
    "save",
    "single_turn_stage",
    "train",
    "video_features",
]
