"""Deterministic synthetic video-QA data for training tiny video-language models on CPU.

What this package does
----------------------
* :func:`generate_sample` draws one short video from a seed: a static, low-contrast
  grey textured background and 1-4 (by default 2-4) solid-colour shapes (:data:`COLOURS` x
  :data:`SHAPES`, :data:`SIZES`) that appear one after another, move in a straight
  line (:data:`DIRECTIONS`) at one of two :data:`SPEEDS` and later disappear (or
  stay until the end).  It returns the frames, the ground-truth
  :class:`ObjectTrack` of every object, a templated caption (60-150 words, facts
  in temporal order) and multiple-choice :class:`Question` s of five kinds
  (:data:`KINDS`).
* All text uses a closed, lower-case vocabulary (:data:`VOCABULARY`) in which
  punctuation is a separate token, so ``text.split()`` is the exact word-level
  tokenisation; the option letters are the upper-case tokens ``A`` ``B`` ``C`` ``D``
  (upper case so that they never collide with the article ``a``).
* :func:`write_dataset` writes many samples as mp4 files plus an
  ``annotations.jsonl``; :func:`read_dataset` reads and validates it.
* :func:`caption_facts` parses a caption written in this package's language back
  into per-object facts and the stated object count, for scoring generated
  captions against :attr:`Sample.objects`.

One module a job: :mod:`~specvlm.zoo.synthetic.world` (the closed world, the templates and the
vocabulary), :mod:`~specvlm.zoo.synthetic.records` (tracks, questions, samples),
:mod:`~specvlm.zoo.synthetic.scene` (scene sampling, with the scene rules that make every stated
fact visible in the frames), :mod:`~specvlm.zoo.synthetic.render` (the frames),
:mod:`~specvlm.zoo.synthetic.text` (captions and questions, and reading a caption back),
:mod:`~specvlm.zoo.synthetic.sample` (one sample from a seed) and
:mod:`~specvlm.zoo.synthetic.dataset` (the files on disk).

Deliberately not done: no camera motion, lighting, noise over objects, rotation,
scale change, or occlusion reasoning; text is not natural language beyond a few
templates per sentence kind.
"""

from __future__ import annotations

from specvlm.zoo.synthetic.dataset import read_dataset, sample_annotation, write_dataset
from specvlm.zoo.synthetic.records import ObjectTrack, Question, Sample, question_prompt, spoken_answer
from specvlm.zoo.synthetic.sample import generate_sample
from specvlm.zoo.synthetic.text import caption_facts
from specvlm.zoo.synthetic.world import (
    CAPTION_PROMPT,
    COLOURS,
    DIRECTIONS,
    KINDS,
    MAX_OBJECTS,
    MIN_NUM_FRAMES,
    MIN_SIDE,
    NUMBER_WORDS,
    OPTION_LETTERS,
    PUNCTUATION,
    SHAPES,
    SIZES,
    SPEEDS,
    VOCABULARY,
    check_text,
    word_count,
)

__all__ = [
    "CAPTION_PROMPT",
    "COLOURS",
    "DIRECTIONS",
    "KINDS",
    "MAX_OBJECTS",
    "MIN_NUM_FRAMES",
    "MIN_SIDE",
    "NUMBER_WORDS",
    "OPTION_LETTERS",
    "PUNCTUATION",
    "SHAPES",
    "SIZES",
    "SPEEDS",
    "VOCABULARY",
    "ObjectTrack",
    "Question",
    "Sample",
    "caption_facts",
    "check_text",
    "generate_sample",
    "question_prompt",
    "read_dataset",
    "sample_annotation",
    "spoken_answer",
    "word_count",
    "write_dataset",
]
