"""The text of a synthetic sample: its caption (60-150 words, facts in temporal order) and its
multiple-choice questions, written from the ground truth with the templates of
:mod:`specvlm.zoo.synthetic.world`; and :func:`caption_facts`, which reads the facts back from a
caption to score a generated one."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from specvlm.zoo.synthetic.records import ObjectTrack, Question
from specvlm.zoo.synthetic.world import (
    _APPEAR,
    _AT_END,
    _CONN_FIRST,
    _CONN_LAST,
    _CONN_MIDDLE,
    _DIR_PHRASE,
    _DISAPPEAR,
    _FILLERS,
    _INTRO,
    _LOCATIONS,
    _ORDINALS,
    _Q_COLOUR,
    _Q_COUNT,
    _Q_MOTION,
    _Q_ORDER,
    _Q_SHAPE,
    _STATIC,
    _SUMMARY_PLURAL,
    _SUMMARY_SINGULAR,
    COLOURS,
    DIRECTIONS,
    NUMBER_WORDS,
    SHAPES,
    SIZES,
    SPEEDS,
    check_text,
    word_count,
)

_MIN_WORDS, _MAX_WORDS = 60, 150


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _location(x: float, y: float, height: int, width: int) -> str:
    col = 0 if x < width / 3 else (2 if x > 2 * width / 3 else 1)
    row = 0 if y < height / 3 else (2 if y > 2 * height / 3 else 1)
    return _LOCATIONS[row][col]


def _ordinal(index: int, n: int) -> str:
    return "last" if n > 1 and index == n - 1 else _ORDINALS[index]


def _join_items(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return " , ".join(items[:-1]) + " and " + items[-1]


def _caption(rng: np.random.Generator, objects: Sequence[ObjectTrack], t: int, height: int, width: int) -> str:
    n = len(objects)
    sentences = [_pick(rng, _INTRO), _pick(rng, _STATIC)]
    # events: (frame, rank, index); a disappearance at frame f happens before an appearance at f
    events = [(o.start, 1, i) for i, o in enumerate(objects)] + [
        (o.end, 0, i) for i, o in enumerate(objects) if o.end < t
    ]
    for _, rank, i in sorted(events):
        o = objects[i]
        if rank == 1:
            if i == 0:
                conn = _pick(rng, _CONN_FIRST)
            elif i == n - 1:
                conn = _pick(rng, _CONN_LAST)
            else:
                conn = _pick(rng, _CONN_MIDDLE)
            loc = _location(*o.position(o.start), height, width)
            sentences.append(_pick(rng, _APPEAR).format(
                conn=conn, size=o.size, colour=o.colour, shape=o.shape, loc=loc,
                speed=o.speed, dir=_DIR_PHRASE[o.direction]))
        else:
            loc = _location(*o.position(o.end - 1), height, width)
            sentences.append(_pick(rng, _DISAPPEAR).format(colour=o.colour, shape=o.shape, loc=loc))
    for o in objects:
        if o.end >= t:
            loc = _location(*o.position(t - 1), height, width)
            sentences.append(_pick(rng, _AT_END).format(colour=o.colour, shape=o.shape, loc=loc))
    items = _join_items([f"{'an' if o.colour[0] in 'aeiou' else 'a'} {o.colour} {o.shape}" for o in objects])
    summary = _SUMMARY_SINGULAR if n == 1 else _SUMMARY_PLURAL
    sentences.append(_pick(rng, summary).format(n=NUMBER_WORDS[n - 1], items=items))
    for filler in _FILLERS:
        if word_count(" ".join(sentences)) >= _MIN_WORDS:
            break
        if filler in sentences or (filler.startswith("the camera") and sentences[1].startswith("the camera")):
            continue
        sentences.insert(-1, filler)
    caption = " ".join(sentences)
    words = word_count(caption)
    if not _MIN_WORDS <= words <= _MAX_WORDS:  # cannot happen for 1-4 objects; guard the contract
        raise AssertionError(f"caption has {words} words, outside [{_MIN_WORDS}, {_MAX_WORDS}]: {caption!r}")
    return check_text(caption, "caption")


def _mc(rng: np.random.Generator, kind: str, question: str, correct: str, distractors: Sequence[str]) -> Question:
    pool = [d for d in dict.fromkeys(distractors) if d != correct]
    chosen = [pool[i] for i in rng.permutation(len(pool))[:3]]
    if len(chosen) != 3:
        raise AssertionError(f"not enough distractors for {question!r}: {pool}")
    options = [correct] + chosen
    order = rng.permutation(4)
    shuffled = tuple(options[j] for j in order)
    return Question(kind=kind, question=question, options=shuffled, answer=int(np.flatnonzero(order == 0)[0]))


def _questions(rng: np.random.Generator, objects: Sequence[ObjectTrack]) -> tuple[Question, ...]:
    n = len(objects)
    out: list[Question] = []
    shape_counts = {s: sum(o.shape == s for o in objects) for s in SHAPES}
    size_shape_counts = {(z, s): sum(o.shape == s and o.size == z for o in objects) for z in SIZES for s in SHAPES}
    for i, o in enumerate(objects):  # colour, without naming the colour
        refs = ["object that appears {ordinal}".format(ordinal=_ordinal(i, n))]
        if shape_counts[o.shape] == 1:
            refs.append(o.shape)
        if size_shape_counts[(o.size, o.shape)] == 1:
            refs.append(f"{o.size} {o.shape}")
        q = _pick(rng, _Q_COLOUR).format(ref=_pick(rng, refs))
        out.append(_mc(rng, "colour", q, o.colour, list(COLOURS)))
    for o in objects:
        q = _pick(rng, _Q_SHAPE).format(colour=o.colour)
        out.append(_mc(rng, "shape", q, o.shape, SHAPES))
    for o in objects:
        q = _pick(rng, _Q_MOTION).format(colour=o.colour, shape=o.shape)
        out.append(_mc(rng, "motion", q, o.direction, DIRECTIONS))
    if n >= 2:
        out.append(_mc(rng, "count", _pick(rng, _Q_COUNT), NUMBER_WORDS[n - 1], NUMBER_WORDS))
        present = {o.colour for o in objects}
        absent = [c for c in COLOURS if c not in present]
        fakes = [f"the {absent[j]} {SHAPES[int(rng.integers(len(SHAPES)))]}" for j in rng.permutation(len(absent))]
        for i, o in enumerate(objects):
            q = _pick(rng, _Q_ORDER).format(ordinal=_ordinal(i, n))
            others = [f"the {p.name}" for k, p in enumerate(objects) if k != i]
            distractors = others + fakes[: 3 - len(others)]
            out.append(_mc(rng, "order", q, f"the {o.name}", distractors))
    return tuple(out)


def caption_facts(caption: str) -> dict[str, Any]:
    """Parse a caption in the synthetic language (tolerant of unknown words).

    Returns ``{"objects": [{"size", "colour", "shape", "direction", "speed"}, ...],
    "count": int | None}``: one entry per "a <size> <colour> <shape>" mention in
    order, with the direction/speed of the following "moves ..." phrase (``None``
    where missing), and the number stated as "<number> object(s)".  Compare with
    ``[{k: getattr(o, k) for k in (...)} for o in sample.objects]`` and ``len(objects)``
    to score a generated caption.
    """
    tokens = caption.split()
    objects: list[dict[str, Any]] = []
    count = None
    current: dict[str, Any] | None = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if (tok == "a" and i + 3 < len(tokens) and tokens[i + 1] in SIZES and tokens[i + 2] in COLOURS
                and tokens[i + 3] in SHAPES):
            current = {"size": tokens[i + 1], "colour": tokens[i + 2], "shape": tokens[i + 3],
                       "direction": None, "speed": None}
            objects.append(current)
            i += 4
            continue
        if tok == "moves" and current is not None and current["direction"] is None:
            if i > 0 and tokens[i - 1] in SPEEDS:
                current["speed"] = tokens[i - 1]
            j = i + 1
            if j < len(tokens) and tokens[j] in SPEEDS:
                current["speed"] = tokens[j]
                j += 1
            if j < len(tokens) and tokens[j] in ("up", "down"):
                current["direction"] = tokens[j]
            elif j + 2 < len(tokens) and tokens[j] == "to" and tokens[j + 1] == "the" and tokens[j + 2] in ("left", "right"):
                current["direction"] = tokens[j + 2]
        if tok in NUMBER_WORDS and i + 1 < len(tokens) and tokens[i + 1] in ("object", "objects") and count is None:
            count = NUMBER_WORDS.index(tok) + 1
        i += 1
    return {"objects": objects, "count": count}
