"""The closed world of the synthetic video-QA data: what a scene can hold, and every word that can name it.

* The objects' attributes (:data:`COLOURS`, :data:`SHAPES`, :data:`SIZES`, :data:`DIRECTIONS`,
  :data:`SPEEDS`), the question kinds (:data:`KINDS`), the option letters and the limits of a sample.
* The sentence templates of captions and questions, and :data:`VOCABULARY`: every token that any
  caption, question, option, answer letter or fixed prompt can contain. Punctuation is a separate
  token, so ``text.split()`` is the exact word-level tokenisation; the option letters are the
  upper-case tokens ``A`` ``B`` ``C`` ``D`` (upper case so that they never collide with the article
  ``a``). :func:`check_text` checks a text against it, :func:`word_count` counts its words.

Deliberately not done: text is not natural language beyond a few templates per sentence kind.
"""

from __future__ import annotations

import math
from typing import Iterable

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

#: Circumradius of each shape in units of its radius (how far its pixels reach).
_EXTENT = {"circle": 1.0, "square": 0.85 * math.sqrt(2.0), "triangle": 1.4, "diamond": 1.2}
_DIR_PHRASE = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
#: 3 x 3 grid of frame regions, indexed [row][col].
_LOCATIONS = (
    ("in the top left", "at the top", "in the top right"),
    ("on the left", "in the middle", "on the right"),
    ("in the bottom left", "at the bottom", "in the bottom right"),
)
_ORDINALS = ("first", "second", "third")

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
