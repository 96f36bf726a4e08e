"""Deterministic synthetic video-QA data for training tiny video-language models on CPU.

What this module does
---------------------
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
* :func:`caption_facts` parses a caption written in this module's language back
  into per-object facts and the stated object count, for scoring generated
  captions against :attr:`Sample.objects`.

Scene rules (what makes every stated fact visible in the frames)
-----------------------------------------------------------------
* Objects in one video have distinct colours, so "the red circle" is unambiguous;
  shapes and sizes may repeat.  Colours are saturated, the background is grey
  (R = G = B, 90-140), so an object's pixels are exactly its colour in the
  generated frames.
* Object ``i`` is visible on generated frames ``[start, end)``; ``start_0 = 0`` and
  starts strictly increase with gaps of ~14-22 % of the video, every object is
  visible for at least a third of the video (and at most 80 %), and start/end
  events are kept >= 1/8 of the video apart where feasible (else >= 1/12, else
  1 frame), so the order of events survives uniform frame sampling.
* Speeds are per frame relative to the frame side: "quickly" is 3x "slowly";
  the whole path stays inside the frame.  Placements that overlap an object
  visible at the same time are resampled (the least-overlapping of many
  candidates is kept), so objects are never heavily occluded.
* "large" objects have twice the radius of "small" ones (0.15 vs 0.075 of the
  shorter frame side).

Deliberately not done: no camera motion, lighting, noise over objects, rotation,
scale change, or occlusion reasoning; text is not natural language beyond a few
templates per sentence kind.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from specvlm.video import write_video

logger = logging.getLogger(__name__)

__all__ = [
    "CAPTION_PROMPT",
    "COLOURS",
    "DIRECTIONS",
    "KINDS",
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
    "word_count",
    "write_dataset",
]

# --------------------------------------------------------------------------- closed world

#: Object colours (RGB), saturated and pairwise >= ~100 apart; the background is grey.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 25),
    "green": (30, 180, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 235, 40),
    "purple": (150, 40, 200),
    "orange": (250, 130, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
SPEEDS: tuple[str, ...] = ("slowly", "quickly")
#: Question kinds, in the order questions are listed in a sample.
KINDS: tuple[str, ...] = ("colour", "shape", "motion", "count", "order")
OPTION_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")
PUNCTUATION: tuple[str, ...] = (".", ",", "?", ":")
NUMBER_WORDS: tuple[str, ...] = ("one", "two", "three", "four", "five", "six")

MAX_OBJECTS = 4
MIN_NUM_FRAMES = 8
MIN_SIDE = 32

#: Radius of the shape's defining circle, as a fraction of the shorter frame side.
_SIZE_FRAC = {"small": 0.075, "large": 0.15}
#: Speed in (shorter frame side) per (video length), i.e. px/frame = frac * side / T.
_SPEED_FRAC = {"slowly": 0.2, "quickly": 0.6}
#: Circumradius of each shape in units of its radius (how far its pixels reach).
_EXTENT = {"circle": 1.0, "square": 0.85 * math.sqrt(2.0), "triangle": 1.4, "diamond": 1.2}
_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_DIR_PHRASE = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
#: 3 x 3 grid of frame regions, indexed [row][col].
_LOCATIONS = (
    ("in the top left", "at the top", "in the top right"),
    ("on the left", "in the middle", "on the right"),
    ("in the bottom left", "at the bottom", "in the bottom right"),
)
_ORDINALS = ("first", "second", "third")

_MIN_GAP_FRAC, _MAX_GAP_FRAC = 0.14, 0.22  # gap between consecutive appearances
_MAX_DUR_FRAC = 0.8  # longest visible interval
_OVERLAP_OK = 0.9  # accept a placement when centre distance >= this * (extent_i + extent_j)
_PLACEMENT_TRIES = 200
_POSITION_TRIES = 50  # positions tried per draw of the attributes
_MIN_WORDS, _MAX_WORDS = 60, 150

# --------------------------------------------------------------------------- text templates

CAPTION_PROMPT = "describe the video in detail ."
_ANSWER_SUFFIX = ". answer with the option ."

_INTRO = (
    "the video shows a textured grey background .",
    "the video has a grey textured background .",
    "the background of the video is grey and textured .",
)
_STATIC = ("the camera does not move .", "the camera stays still .", "each object moves in a straight line .")
_CONN_FIRST = ("first ,", "at the start ,", "at the beginning ,")
_CONN_MIDDLE = ("then ,", "next ,", "after that ,")
_CONN_LAST = ("finally ,", "lastly ,")
_APPEAR = (
    "{conn} a {size} {colour} {shape} appears {loc} and moves {speed} {dir} .",
    "{conn} a {size} {colour} {shape} appears {loc} . it moves {speed} {dir} .",
    "{conn} a {size} {colour} {shape} shows up {loc} and {speed} moves {dir} .",
)
_DISAPPEAR = ("the {colour} {shape} disappears {loc} .", "the {colour} {shape} vanishes {loc} .")
_AT_END = (
    "at the end , the {colour} {shape} is still visible {loc} .",
    "the {colour} {shape} remains visible {loc} until the end .",
)
_SUMMARY_PLURAL = (
    "in total , {n} objects appear : {items} .",
    "there are {n} objects in total : {items} .",
    "{n} objects appear in the video : {items} .",
)
_SUMMARY_SINGULAR = (
    "in total , {n} object appears : {items} .",
    "there is {n} object in total : {items} .",
    "{n} object appears in the video : {items} .",
)
#: True statements appended (in order) while a caption is shorter than 60 words.
_FILLERS = (
    "the background does not change .",
    "each object keeps the same size and colour .",
    "no object changes its shape .",
    "the camera does not move .",
    "each object moves in a straight line .",
)

_Q_COLOUR = ("what colour is the {ref} ?", "which colour is the {ref} ?")
_Q_REF = ("{shape}", "{size} {shape}", "object that appears {ordinal}")
_Q_SHAPE = ("what shape is the {colour} object ?", "which shape does the {colour} object have ?")
_Q_MOTION = (
    "which direction does the {colour} {shape} move ?",
    "in which direction does the {colour} {shape} move ?",
)
_Q_COUNT = ("how many objects appear in the video ?", "how many objects are shown in the video ?")
_Q_ORDER = ("which object appears {ordinal} ?", "which object appears {ordinal} in the video ?")


def _template_words(templates: Iterable[str]) -> set[str]:
    return {w for t in templates for w in t.split() if not (w.startswith("{") and w.endswith("}"))}


def _build_vocabulary() -> tuple[str, ...]:
    words: set[str] = set(PUNCTUATION) | set(OPTION_LETTERS)
    words |= set(COLOURS) | set(SHAPES) | set(SIZES) | set(DIRECTIONS) | set(SPEEDS) | set(NUMBER_WORDS)
    words |= set(_ORDINALS) | {"last"}
    words |= _template_words(_DIR_PHRASE.values())
    words |= _template_words(p for row in _LOCATIONS for p in row)
    words |= _template_words(
        (CAPTION_PROMPT, _ANSWER_SUFFIX) + _INTRO + _STATIC + _CONN_FIRST + _CONN_MIDDLE + _CONN_LAST
        + _APPEAR + _DISAPPEAR + _AT_END + _SUMMARY_PLURAL + _SUMMARY_SINGULAR + _FILLERS
        + _Q_COLOUR + _Q_REF + _Q_SHAPE + _Q_MOTION + _Q_COUNT + _Q_ORDER
    )
    words |= {"a", "an", "and", "the"}  # list items ("an orange circle"), joiners and options ("the red circle")
    return tuple(sorted(words))


#: Every token that any caption, question, option, answer letter or fixed prompt can contain; sorted, unique.
VOCABULARY: tuple[str, ...] = _build_vocabulary()
_VOCAB_SET = frozenset(VOCABULARY)


def check_text(text: str, what: str = "text") -> str:
    """Return ``text`` if it is single-space separated tokens all in :data:`VOCABULARY`, else raise ValueError."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{what} must be a non-empty string, got {text!r}")
    tokens = text.split(" ")
    if any(not t for t in tokens) or text != text.strip():
        raise ValueError(f"{what} {text!r} is not single-space separated tokens")
    unknown = sorted({t for t in tokens if t not in _VOCAB_SET})
    if unknown:
        raise ValueError(f"{what} {text!r} has tokens outside VOCABULARY: {unknown}")
    return text


def word_count(text: str) -> int:
    """Number of tokens of ``text`` that are not punctuation."""
    return sum(1 for t in text.split() if t not in PUNCTUATION)


# --------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class ObjectTrack:
    """Ground truth of one object.

    Visible on generated frames ``start <= t < end``; its centre (pixel
    coordinates, x to the right, y downwards, pixel ``(row, col)`` has centre
    ``(col, row)``) is ``(x0 + vx * (t - start), y0 + vy * (t - start))``.
    ``radius`` is the radius of the shape's defining circle in pixels.
    """

    colour: str
    shape: str
    size: str
    direction: str
    speed: str
    start: int
    end: int
    x0: float
    y0: float
    vx: float
    vy: float
    radius: float

    def __post_init__(self) -> None:
        for name, allowed in (("colour", tuple(COLOURS)), ("shape", SHAPES), ("size", SIZES),
                              ("direction", DIRECTIONS), ("speed", SPEEDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ObjectTrack.{name} is {getattr(self, name)!r}; expected one of {allowed}")
        if not (0 <= self.start < self.end):
            raise ValueError(f"ObjectTrack interval [{self.start}, {self.end}) is empty or negative")
        if not self.radius > 0:
            raise ValueError(f"ObjectTrack.radius must be > 0, got {self.radius}")

    @property
    def name(self) -> str:
        """``"<colour> <shape>"``, unique within a sample."""
        return f"{self.colour} {self.shape}"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    @property
    def extent(self) -> float:
        """Largest distance in pixels from the centre to a pixel of the shape."""
        return self.radius * _EXTENT[self.shape]

    def visible(self, t: int) -> bool:
        return self.start <= t < self.end

    def position(self, t: float) -> tuple[float, float]:
        """Centre ``(x, y)`` at frame ``t`` (extrapolated outside the visible interval)."""
        dt = t - self.start
        return (self.x0 + self.vx * dt, self.y0 + self.vy * dt)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ObjectTrack":
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"object is missing {missing}")
        return cls(**{n: data[n] for n in names})


@dataclass(frozen=True)
class Question:
    """A four-option multiple-choice question; ``answer`` indexes the correct option."""

    kind: str
    question: str
    options: tuple[str, str, str, str]
    answer: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Question.kind is {self.kind!r}; expected one of {KINDS}")
        check_text(self.question, "question")
        if len(self.options) != 4:
            raise ValueError(f"a question needs exactly 4 options, got {len(self.options)}")
        for option in self.options:
            check_text(option, "option")
        if len(set(self.options)) != 4:
            raise ValueError(f"options must be distinct, got {self.options}")
        if isinstance(self.answer, bool) or not isinstance(self.answer, int) or not 0 <= self.answer < 4:
            raise ValueError(f"Question.answer must be an int in 0..3, got {self.answer!r}")

    @property
    def answer_letter(self) -> str:
        return OPTION_LETTERS[self.answer]

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "question": self.question,
            "options": list(self.options),
            "answer": self.answer,
            "answer_letter": self.answer_letter,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Question":
        q = cls(kind=data["kind"], question=data["question"], options=tuple(data["options"]),
                answer=data["answer"])
        if "answer_letter" in data and data["answer_letter"] != q.answer_letter:
            raise ValueError(f"answer_letter {data['answer_letter']!r} does not match answer {q.answer}")
        return q


def question_prompt(question: Question) -> str:
    """The question followed by its lettered options and the answer instruction, all in :data:`VOCABULARY`."""
    opts = " ".join(f"{letter} : {option}" for letter, option in zip(OPTION_LETTERS, question.options))
    return f"{question.question} {opts} {_ANSWER_SUFFIX}"


def spoken_answer(question: Question) -> str:
    """The answer in words, as the trained pair gives it: the question's key, then the correct option.

    ``what shape is the red object ?`` -> ``red square``; ``what colour is the large square ?`` ->
    ``large square red``; ``which direction does the red square move ?`` -> ``red square left``;
    ``which object appears second ?`` -> ``second the blue circle``; counts -> ``three``. Repeating
    the key right before the answer lets a small model look the answer up in the video from the token
    it has just written. The answer names exactly one option (score it with the option text).
    """
    words = question.question.split()
    if question.kind == "colour":  # "... is the {ref} ?"
        key = words[words.index("the") + 1 : words.index("?")]
    elif question.kind == "shape":
        key = [w for w in words if w in COLOURS]
    elif question.kind == "motion":  # "... the {colour} {shape} move ?"
        key = words[words.index("the") + 1 : words.index("move")]
    elif question.kind == "order":
        key = [w for w in words if w in _ORDINALS or w == "last"]
    else:
        key = []
    if question.kind in ("colour", "shape", "motion", "order") and not key:
        raise ValueError(f"cannot find the key of the {question.kind} question {question.question!r}")
    return " ".join(key + [question.answer_text])


@dataclass
class Sample:
    """One generated video with its ground truth, caption and questions."""

    sample_id: str
    frames: np.ndarray
    fps: float
    objects: tuple[ObjectTrack, ...]
    caption: str
    questions: tuple[Question, ...]
    seed: int | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


# --------------------------------------------------------------------------- scene sampling


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _sample_timeline(rng: np.random.Generator, n: int, t: int) -> list[tuple[int, int]]:
    """``n`` intervals ``[start, end)`` with increasing starts (``start_0 = 0``)."""
    min_dur = math.ceil(t / 3)
    max_dur = max(min_dur, math.ceil(_MAX_DUR_FRAC * t))
    gap_lo = max(1, round(_MIN_GAP_FRAC * t))
    gap_hi = max(gap_lo, round(_MAX_GAP_FRAC * t))
    for sep in (max(1, t // 8), max(1, t // 12), 1, 0):
        for _ in range(300):
            starts = [0]
            for _ in range(n - 1):
                starts.append(starts[-1] + int(rng.integers(gap_lo, gap_hi + 1)))
            if starts[-1] + min_dur > t:
                continue
            ends = [s + int(rng.integers(min_dur, min(max_dur, t - s) + 1)) for s in starts]
            events = sorted(starts + [e for e in ends if e < t])
            if all(b - a >= sep for a, b in zip(events, events[1:])):
                return list(zip(starts, ends))
    # deterministic fallback: tightest spacing, everything visible to the end
    starts = [i * gap_lo for i in range(n)]
    if starts[-1] + min_dur > t:
        raise ValueError(f"num_frames={t} is too short for {n} objects")
    return [(s, t) for s in starts]


def _attributes(rng: np.random.Generator) -> tuple[str, str, str, str]:
    """Uniform random (shape, size, direction, speed)."""
    return (
        SHAPES[int(rng.integers(len(SHAPES)))],
        SIZES[int(rng.integers(len(SIZES)))],
        DIRECTIONS[int(rng.integers(len(DIRECTIONS)))],
        SPEEDS[int(rng.integers(len(SPEEDS)))],
    )


def _place(
    rng: np.random.Generator, colour: str, attributes: tuple[str, str, str, str],
    start: int, end: int, t: int, height: int, width: int,
) -> ObjectTrack | None:
    """A random start position for an object whose whole path fits in the frame (None if it cannot fit)."""
    shape, size, direction, speed = attributes
    side = min(height, width)
    radius = _SIZE_FRAC[size] * side
    ext = radius * _EXTENT[shape]
    v = _SPEED_FRAC[speed] * side / t
    disp = v * (end - start - 1)
    ux, uy = _UNIT[direction]
    margin = 1.0
    lo_x, hi_x = ext + margin, width - 1 - ext - margin
    lo_y, hi_y = ext + margin, height - 1 - ext - margin
    # the coordinate along the motion axis must leave room for the displacement
    if ux:
        if hi_x - lo_x < disp or hi_y < lo_y:
            return None
        x0 = rng.uniform(lo_x, hi_x - disp) if ux > 0 else rng.uniform(lo_x + disp, hi_x)
        y0 = rng.uniform(lo_y, hi_y)
    else:
        if hi_y - lo_y < disp or hi_x < lo_x:
            return None
        x0 = rng.uniform(lo_x, hi_x)
        y0 = rng.uniform(lo_y, hi_y - disp) if uy > 0 else rng.uniform(lo_y + disp, hi_y)
    return ObjectTrack(colour=colour, shape=shape, size=size, direction=direction, speed=speed,
                       start=start, end=end, x0=float(x0), y0=float(y0),
                       vx=float(ux * v), vy=float(uy * v), radius=float(radius))


def _clearance(a: ObjectTrack, b: ObjectTrack) -> float:
    """min over co-visible frames of centre distance / (extent_a + extent_b); inf if never co-visible."""
    lo, hi = max(a.start, b.start), min(a.end, b.end)
    if lo >= hi:
        return math.inf
    ts = np.arange(lo, hi, dtype=np.float64)
    ax, ay = a.position(ts)
    bx, by = b.position(ts)
    return float(np.min(np.hypot(ax - bx, ay - by)) / (a.extent + b.extent))


def _sample_objects(rng: np.random.Generator, n: int, t: int, height: int, width: int) -> tuple[ObjectTrack, ...]:
    timeline = _sample_timeline(rng, n, t)
    colour_names = list(COLOURS)
    colours = [colour_names[i] for i in rng.permutation(len(colour_names))[:n]]
    tracks: list[ObjectTrack] = []
    for (start, end), colour in zip(timeline, colours):
        best, best_score = None, -math.inf
        for k in range(_PLACEMENT_TRIES):
            # attributes are redrawn only after many failed positions, so the placement
            # constraints barely bias them (e.g. towards small objects)
            if k % _POSITION_TRIES == 0:
                attributes = _attributes(rng)
            cand = _place(rng, colour, attributes, start, end, t, height, width)
            if cand is None:
                continue
            score = min((_clearance(cand, other) for other in tracks), default=math.inf)
            if score > best_score:
                best, best_score = cand, score
            if score >= _OVERLAP_OK:
                break
        if best is None:
            raise ValueError(f"frame size {width}x{height} is too small to fit the object paths")
        if best_score < _OVERLAP_OK:
            logger.debug("object %s placed with clearance %.2f < %.2f", best.name, best_score, _OVERLAP_OK)
        tracks.append(best)
    return tuple(tracks)


# --------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Static low-contrast grey texture, values in [90, 140], R = G = B."""
    base = rng.uniform(105.0, 125.0)
    gh, gw = 6, 6
    coarse = rng.normal(0.0, 9.0, size=(gh, gw))
    ys = np.linspace(0, gh - 1, height)
    xs = np.linspace(0, gw - 1, width)
    y0 = np.clip(np.floor(ys).astype(int), 0, gh - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    c00 = coarse[y0][:, x0]
    c01 = coarse[y0][:, x0 + 1]
    c10 = coarse[y0 + 1][:, x0]
    c11 = coarse[y0 + 1][:, x0 + 1]
    smooth = (c00 * (1 - fx) + c01 * fx) * (1 - fy) + (c10 * (1 - fx) + c11 * fx) * fy
    grey = np.clip(np.rint(base + smooth + rng.normal(0.0, 4.0, size=(height, width))), 90, 140).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = 0.85 * r
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.2 * r
    if shape == "triangle":  # equilateral, apex up, centroid at the centre, circumradius 1.4 r
        big = 1.4 * r
        return (dy <= big / 2) & (dy >= -big + math.sqrt(3.0) * np.abs(dx))
    raise ValueError(f"unknown shape {shape!r}")


def _render(background: np.ndarray, objects: Sequence[ObjectTrack], t: int) -> np.ndarray:
    height, width, _ = background.shape
    frames = np.repeat(background[None], t, axis=0)
    for obj in objects:  # appearance order: later objects are drawn on top
        reach = int(math.ceil(obj.extent)) + 1
        for k in range(obj.start, min(obj.end, t)):
            x, y = obj.position(k)
            r0, r1 = max(0, int(math.floor(y)) - reach), min(height, int(math.ceil(y)) + reach + 1)
            c0, c1 = max(0, int(math.floor(x)) - reach), min(width, int(math.ceil(x)) + reach + 1)
            dy = np.arange(r0, r1, dtype=np.float64)[:, None] - y
            dx = np.arange(c0, c1, dtype=np.float64)[None, :] - x
            mask = _shape_mask(obj.shape, dx, dy, obj.radius)
            frames[k, r0:r1, c0:c1][mask] = obj.rgb
    return frames


# --------------------------------------------------------------------------- text


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


# --------------------------------------------------------------------------- public API


def generate_sample(
    seed: int,
    *,
    num_frames: int = 32,
    height: int = 96,
    width: int = 96,
    fps: float = 8.0,
    min_objects: int = 2,
    max_objects: int = 4,
) -> Sample:
    """Generate one sample deterministically from ``seed`` (a non-negative integer).

    ``height`` and ``width`` must be even and >= 32, ``num_frames >= 8``,
    ``1 <= min_objects <= max_objects <= 4``.  Questions: one colour, shape and
    motion question per object, then (with >= 2 objects) one count question and
    one order question per appearance position.
    """
    seed = _check_int("seed", seed, 0)
    t = _check_int("num_frames", num_frames, MIN_NUM_FRAMES)
    height = _check_int("height", height, MIN_SIDE)
    width = _check_int("width", width, MIN_SIDE)
    if height % 2 or width % 2:
        raise ValueError(f"height and width must be even (mp4/yuv420p), got {width}x{height} (WxH)")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not (
        math.isfinite(fps) and fps > 0
    ):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    lo = _check_int("min_objects", min_objects, 1)
    hi = _check_int("max_objects", max_objects, 1)
    if not lo <= hi <= MAX_OBJECTS:
        raise ValueError(f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {lo} and {hi}")

    rng = np.random.default_rng(seed)
    n = int(rng.integers(lo, hi + 1))
    objects = _sample_objects(rng, n, t, height, width)
    frames = _render(_background(rng, height, width), objects, t)
    caption = _caption(rng, objects, t, height, width)
    questions = _questions(rng, objects)
    return Sample(sample_id=f"synth-{seed}", frames=frames, fps=float(fps), objects=objects,
                  caption=caption, questions=questions, seed=seed)


def sample_annotation(sample: Sample, video: str) -> dict[str, Any]:
    """The JSON-serialisable annotation row of ``sample`` whose video is at relative path ``video``."""
    return {
        "sample_id": sample.sample_id,
        "seed": sample.seed,
        "video": video,
        "fps": sample.fps,
        "num_frames": sample.num_frames,
        "height": sample.height,
        "width": sample.width,
        "caption": sample.caption,
        "questions": [q.to_dict() for q in sample.questions],
        "objects": [o.to_dict() for o in sample.objects],
    }


def _dataset_seed(seed: int, index: int) -> int:
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def write_dataset(out_dir: str | os.PathLike, num_samples: int, *, seed: int = 0, **sample_kwargs: Any) -> Path:
    """Write ``num_samples`` samples to ``out_dir/videos/<sample_id>.mp4`` and ``out_dir/annotations.jsonl``.

    Sample ``i`` is ``generate_sample(derived_seed(seed, i), **sample_kwargs)`` with
    ``sample_id = "<i:06d>"``, so the same arguments give identical annotations and
    frames.  Existing files of the same names are overwritten; the annotations
    file is written last (via a temporary file), so a complete
    ``annotations.jsonl`` means all its videos were written.  Returns ``out_dir``.
    """
    num_samples = _check_int("num_samples", num_samples, 1)
    seed = _check_int("seed", seed, 0)
    out = Path(out_dir)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_samples):
        sample = replace(generate_sample(_dataset_seed(seed, i), **sample_kwargs), sample_id=f"{i:06d}")
        rel = f"videos/{sample.sample_id}.mp4"
        write_video(out / rel, sample.frames, fps=sample.fps)
        rows.append(sample_annotation(sample, rel))
        if (i + 1) % 100 == 0 or i + 1 == num_samples:
            logger.info("wrote %d/%d synthetic samples to %s", i + 1, num_samples, out)
    tmp = out / "annotations.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    os.replace(tmp, out / "annotations.jsonl")
    return out


_ROW_TYPES = {
    "sample_id": str, "video": str, "fps": (int, float), "num_frames": int, "height": int, "width": int,
    "caption": str, "questions": list, "objects": list,
}


def _validate_row(row: Any, root: Path) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    for key, typ in _ROW_TYPES.items():
        if key not in row:
            raise ValueError(f"missing key {key!r}")
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, typ):
            raise ValueError(f"{key!r} has type {type(value).__name__}")
    if not row["sample_id"]:
        raise ValueError("empty sample_id")
    if row["fps"] <= 0 or row["num_frames"] < 1 or row["height"] < 2 or row["width"] < 2:
        raise ValueError("fps, num_frames, height and width must be positive")
    video = Path(row["video"])
    if video.is_absolute() or ".." in video.parts:
        raise ValueError(f"video {row['video']!r} must be a relative path inside the dataset")
    if not (root / video).is_file():
        raise ValueError(f"video file {str(root / video)!r} does not exist")
    check_text(row["caption"], "caption")
    if not row["questions"]:
        raise ValueError("no questions")
    for q in row["questions"]:
        if not isinstance(q, dict):
            raise ValueError("a question is not a JSON object")
        try:
            Question.from_dict(q)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed question {q!r}: {exc!r}") from exc
    if not row["objects"]:
        raise ValueError("no objects")
    for o in row["objects"]:
        if not isinstance(o, dict):
            raise ValueError("an object is not a JSON object")
        try:
            ObjectTrack.from_dict(o)
        except TypeError as exc:
            raise ValueError(f"malformed object {o!r}: {exc}") from exc
    return row


def read_dataset(out_dir: str | os.PathLike) -> list[dict]:
    """Read and validate ``out_dir/annotations.jsonl``.

    Returns the rows in file order, each as written by :func:`write_dataset`
    plus ``"video_path"``: the absolute path of its mp4.  Blank lines are
    skipped.  A malformed row (bad JSON, missing or mistyped key, text outside
    :data:`VOCABULARY`, a bad question or object, a missing video file, a
    duplicate sample_id) raises ``ValueError`` naming the file and line.
    """
    root = Path(out_dir)
    path = root / "annotations.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    rows: list[dict] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = _validate_row(json.loads(line), root)
                if row["sample_id"] in seen:
                    raise ValueError(f"duplicate sample_id {row['sample_id']!r}")
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise ValueError(f"{path}:{lineno}: malformed annotation: {exc}") from exc
            seen.add(row["sample_id"])
            row["video_path"] = str((root / row["video"]).resolve())
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} has no annotation rows")
    return rows


def caption_facts(caption: str) -> dict[str, Any]:
    """Parse a caption in this module's language (tolerant of unknown words).

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
