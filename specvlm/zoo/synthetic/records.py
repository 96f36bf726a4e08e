"""What a synthetic sample is made of: the ground truth of its objects (:class:`ObjectTrack`), its
multiple-choice questions (:class:`Question`, with :func:`question_prompt` and :func:`spoken_answer`,
the prompt and the answer in words) and the sample itself (:class:`Sample`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from specvlm.zoo.synthetic.world import (
    _ANSWER_SUFFIX,
    _EXTENT,
    _ORDINALS,
    COLOURS,
    DIRECTIONS,
    KINDS,
    OPTION_LETTERS,
    SHAPES,
    SIZES,
    SPEEDS,
    check_text,
)


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
