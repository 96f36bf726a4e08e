"""Tests for specvlm.zoo.synthetic: determinism, closed vocabulary, ground truth, frames, dataset files.

Every fact in the text is re-derived from ``Sample.objects`` and every object
is re-found in the pixels (its exact colour in generated frames; roughly its
colour after mp4 compression).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from specvlm.zoo import synthetic as S
from specvlm.zoo.synthetic import (
    CAPTION_PROMPT,
    COLOURS,
    DIRECTIONS,
    KINDS,
    NUMBER_WORDS,
    OPTION_LETTERS,
    SHAPES,
    SIZES,
    SPEEDS,
    VOCABULARY,
    ObjectTrack,
    Question,
    caption_facts,
    check_text,
    generate_sample,
    question_prompt,
    spoken_answer,
    read_dataset,
    write_dataset,
)
from specvlm.video import load_video

SMALL = dict(num_frames=16, height=64, width=64)
ORDINALS = {"first": 0, "second": 1, "third": 2}
FACT_KEYS = ("size", "colour", "shape", "direction", "speed")


@pytest.fixture(scope="module")
def samples():
    """A varied set: default size, small videos, and 1-object videos."""
    out = [generate_sample(seed) for seed in range(12)]
    out += [generate_sample(seed, **SMALL) for seed in range(100, 140)]
    out += [generate_sample(seed, num_frames=8, height=32, width=32, min_objects=1, max_objects=4)
            for seed in range(200, 240)]
    return out


def _mask(frame: np.ndarray, rgb) -> np.ndarray:
    return np.all(frame == np.asarray(rgb, dtype=np.uint8), axis=-1)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def _ordinal_index(word: str, n: int) -> int:
    return n - 1 if word == "last" else ORDINALS[word]


# --------------------------------------------------------------------------- vocabulary and text


def test_vocabulary_sorted_unique_and_well_formed():
    assert list(VOCABULARY) == sorted(set(VOCABULARY))
    assert all(tok and " " not in tok for tok in VOCABULARY)
    for tok in VOCABULARY:
        assert tok.islower() or tok in OPTION_LETTERS or tok in S.PUNCTUATION, tok
    for group in (COLOURS, SHAPES, SIZES, DIRECTIONS, SPEEDS, NUMBER_WORDS, OPTION_LETTERS, S.PUNCTUATION):
        assert set(group) <= set(VOCABULARY)
    assert set(CAPTION_PROMPT.split()) <= set(VOCABULARY)


def test_all_text_is_in_vocabulary_and_vocabulary_is_used(samples):
    vocab = set(VOCABULARY)
    used = set(CAPTION_PROMPT.split())
    for s in samples:
        texts = [s.caption] + [question_prompt(q) for q in s.questions]
        texts += [o for q in s.questions for o in q.options] + [q.answer_letter for q in s.questions]
        for text in texts:
            assert text == " ".join(text.split())  # single spaces, no leading/trailing space
            assert set(text.split()) <= vocab, set(text.split()) - vocab
            used |= set(text.split())
    # the vocabulary is closed and tight: (almost) every token is produced by these samples
    assert len(vocab - used) <= 3, vocab - used


def test_caption_length_and_facts(samples):
    for s in samples:
        words = [t for t in s.caption.split() if t not in S.PUNCTUATION]
        assert 60 <= len(words) <= 150, (len(words), s.caption)
        assert S.word_count(s.caption) == len(words)
        facts = caption_facts(s.caption)
        assert facts["objects"] == [{k: getattr(o, k) for k in FACT_KEYS} for o in s.objects], s.caption
        assert facts["count"] == len(s.objects)


def test_caption_is_in_temporal_order(samples):
    """Appearances and disappearances are narrated in frame order."""
    for s in samples:
        toks = s.caption.split()
        t = s.num_frames
        events = []  # (frame, rank, token position)
        for o in s.objects:
            appear = next(i for i in range(len(toks) - 3) if toks[i:i + 4] == ["a", o.size, o.colour, o.shape])
            events.append((o.start, 1, appear))
            if o.end < t:
                gone = next(i for i in range(len(toks) - 3)
                            if toks[i:i + 3] == ["the", o.colour, o.shape] and toks[i + 3] in ("disappears", "vanishes"))
                events.append((o.end, 0, gone))
        positions = [p for _, _, p in sorted(events)]
        assert positions == sorted(positions), s.caption


def test_caption_templates_vary_with_seed():
    openings = {generate_sample(seed, **SMALL).caption.split(" . ")[0] for seed in range(30)}
    assert len(openings) >= 2


def test_question_prompt_format():
    q = Question(kind="colour", question="what colour is the square ?",
                 options=("red", "blue", "green", "yellow"), answer=1)
    assert q.answer_letter == "B" and q.answer_text == "blue"
    assert question_prompt(q) == (
        "what colour is the square ? A : red B : blue C : green D : yellow . answer with the option ."
    )
    with pytest.raises(ValueError, match="distinct"):
        Question(kind="colour", question="what colour is the square ?", options=("red", "red", "green", "blue"), answer=0)
    with pytest.raises(ValueError, match="VOCABULARY"):
        Question(kind="colour", question="what hue is the square ?", options=("red", "blue", "green", "yellow"), answer=0)


@pytest.mark.parametrize(
    "kind, question, options, answer, said",
    [
        ("colour", "what colour is the large square ?", ("red", "blue", "green", "yellow"), 1, "large square blue"),
        ("shape", "which shape does the red object have ?", ("circle", "square", "triangle", "diamond"), 2, "red triangle"),
        ("motion", "in which direction does the red square move ?", ("left", "right", "up", "down"), 3, "red square down"),
        ("order", "which object appears last in the video ?",
         ("the red square", "the blue circle", "the green diamond", "the yellow circle"), 1, "last the blue circle"),
        ("count", "how many objects appear in the video ?", ("two", "three", "four", "one"), 2, "four"),
    ],
)  # fmt: skip
def test_spoken_answer_examples(kind, question, options, answer, said):
    assert spoken_answer(Question(kind=kind, question=question, options=options, answer=answer)) == said


def test_spoken_answer_repeats_the_key_then_names_exactly_the_correct_option():
    q = Question(kind="shape", question="which shape does the object have ?",
                 options=("circle", "square", "triangle", "diamond"), answer=2)  # fmt: skip
    with pytest.raises(ValueError, match="key"):
        spoken_answer(q)  # names no colour to look the object up by
    for seed in range(40):
        for q in generate_sample(seed, **SMALL).questions:
            said = spoken_answer(q)
            assert check_text(said) == said
            named = [o for o in q.options if f" {o} " in f" {said} "]
            assert named == [q.answer_text], (q, said)
            assert said.endswith(q.answer_text)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_sample_different_seed_differs():
    a, b = generate_sample(7, **SMALL), generate_sample(7, **SMALL)
    assert a.caption == b.caption and a.questions == b.questions and a.objects == b.objects
    assert np.array_equal(a.frames, b.frames)
    others = [generate_sample(seed, **SMALL) for seed in (8, 9, 10)]
    assert all(o.caption != a.caption for o in others)
    assert all(not np.array_equal(o.frames, a.frames) for o in others)
    assert all(o.objects != a.objects for o in others)


# --------------------------------------------------------------------------- ground truth


def _expected_answer(q: Question, objects: tuple[ObjectTrack, ...]) -> str:
    toks = q.question.split()
    n = len(objects)
    if q.kind == "colour":
        ref = toks[toks.index("the") + 1: toks.index("?")]
        if ref[:3] == ["object", "that", "appears"]:
            matches = [objects[_ordinal_index(ref[3], n)]]
        elif len(ref) == 2:
            matches = [o for o in objects if [o.size, o.shape] == ref]
        else:
            matches = [o for o in objects if [o.shape] == ref]
        assert len(matches) == 1, (q.question, objects)  # unambiguous reference
        return matches[0].colour
    if q.kind == "shape":
        matches = [o for o in objects if o.colour in toks]
        assert len(matches) == 1
        return matches[0].shape
    if q.kind == "motion":
        matches = [o for o in objects if o.colour in toks and o.shape in toks]
        assert len(matches) == 1
        return matches[0].direction
    if q.kind == "count":
        return NUMBER_WORDS[n - 1]
    if q.kind == "order":
        word = next(t for t in toks if t in ("first", "second", "third", "last"))
        o = objects[_ordinal_index(word, n)]
        return f"the {o.colour} {o.shape}"
    raise AssertionError(q.kind)


def test_questions_match_ground_truth(samples):
    letters = []
    for s in samples:
        n = len(s.objects)
        kinds = [q.kind for q in s.questions]
        assert kinds == sorted(kinds, key=KINDS.index)
        expected_kinds = set(KINDS) if n >= 2 else {"colour", "shape", "motion"}
        assert set(kinds) == expected_kinds
        for q in s.questions:
            assert len(q.options) == 4 and len(set(q.options)) == 4
            assert 0 <= q.answer < 4 and q.answer_letter == OPTION_LETTERS[q.answer]
            assert q.options[q.answer] == _expected_answer(q, s.objects), (q, s.objects)
            category = {
                "colour": set(COLOURS), "shape": set(SHAPES), "motion": set(DIRECTIONS), "count": set(NUMBER_WORDS),
                "order": {f"the {c} {sh}" for c in COLOURS for sh in SHAPES},
            }[q.kind]
            assert set(q.options) <= category  # distractors from the same category
            if q.kind == "order":  # every object of the video is an option (<= 4 objects)
                assert {f"the {o.colour} {o.shape}" for o in s.objects} <= set(q.options)
            letters.append(q.answer_letter)
    counts = [letters.count(x) for x in OPTION_LETTERS]
    assert min(counts) > 0.15 * len(letters), counts  # answers are shuffled over all positions


def test_objects_in_order_distinct_colours_inside_frame(samples):
    for s in samples:
        t, h, w = s.num_frames, s.height, s.width
        objs = s.objects
        assert 1 <= len(objs) <= 4
        assert objs[0].start == 0
        assert all(a.start < b.start for a, b in zip(objs, objs[1:]))
        assert len({o.colour for o in objs}) == len(objs)
        for o in objs:
            assert 0 <= o.start < o.end <= t
            assert o.end - o.start >= t / 3
            for k in (o.start, o.end - 1):
                x, y = o.position(k)
                assert o.extent <= x <= w - 1 - o.extent and o.extent <= y <= h - 1 - o.extent
    sizes = {o.size: o.radius / min(s.height, s.width) for s in samples for o in s.objects}
    assert sizes["large"] >= 1.8 * sizes["small"]


# --------------------------------------------------------------------------- pixels


def test_background_is_low_contrast_grey(samples):
    for s in samples[:15]:
        covered = np.zeros(s.frames.shape[:3], dtype=bool)
        for o in s.objects:
            covered |= np.stack([_mask(f, o.rgb) for f in s.frames])
        bg = s.frames[~covered]
        assert np.all(bg[:, 0] == bg[:, 1]) and np.all(bg[:, 1] == bg[:, 2])
        assert bg.min() >= 90 and bg.max() <= 140 and bg.std() > 2  # textured, not flat
        static = ~covered.any(axis=0)
        assert np.all(s.frames[:, static] == s.frames[0, static])  # background is fixed over time


def test_frames_show_objects_only_in_their_interval(samples):
    for s in samples:
        for o in s.objects:
            for k in range(s.num_frames):
                mask = _mask(s.frames[k], o.rgb)
                if o.visible(k):
                    x, y = o.position(k)
                    assert tuple(s.frames[k, round(y), round(x)]) == o.rgb
                    # mostly unoccluded: at least half of a circle-of-radius area is there
                    assert mask.sum() >= 0.5 * math.pi * o.radius ** 2 * 0.6
                    cx, cy = _centroid(mask)
                    assert abs(cx - x) <= 0.35 * o.radius + 0.5 and abs(cy - y) <= 0.35 * o.radius + 0.5
                else:
                    assert mask.sum() == 0, (o, k)


def test_motion_direction_and_speed_from_frames(samples):
    per_speed = {"slowly": [], "quickly": []}
    for s in samples:
        side = min(s.height, s.width)
        for o in s.objects:
            x0, y0 = _centroid(_mask(s.frames[o.start], o.rgb))
            x1, y1 = _centroid(_mask(s.frames[o.end - 1], o.rgb))
            dx, dy = x1 - x0, y1 - y0
            measured = {"right": dx, "left": -dx, "down": dy, "up": -dy}
            assert max(measured, key=measured.get) == o.direction, (o, dx, dy)
            per_frame = math.hypot(dx, dy) / (o.end - 1 - o.start)
            per_speed[o.speed].append(per_frame * s.num_frames / side)  # in frame sides per video length
    assert max(per_speed["slowly"]) < 0.3 < 0.45 < min(per_speed["quickly"])


# --------------------------------------------------------------------------- dataset files


def test_write_read_dataset_roundtrip(tmp_path):
    kw = dict(num_frames=8, height=64, width=64)
    out = write_dataset(tmp_path / "a", 3, seed=5, **kw)
    assert out == tmp_path / "a"
    rows = read_dataset(out)
    assert [r["sample_id"] for r in rows] == ["000000", "000001", "000002"]
    again = write_dataset(tmp_path / "b", 3, seed=5, **kw)
    assert (out / "annotations.jsonl").read_bytes() == (again / "annotations.jsonl").read_bytes()
    other = write_dataset(tmp_path / "c", 3, seed=6, **kw)
    assert (out / "annotations.jsonl").read_bytes() != (other / "annotations.jsonl").read_bytes()

    for row in rows:
        assert row["video"] == f"videos/{row['sample_id']}.mp4"
        assert (row["num_frames"], row["height"], row["width"], row["fps"]) == (8, 64, 64, 8.0)
        sample = generate_sample(row["seed"], **kw)  # the row is exactly that sample's annotation
        assert row["caption"] == sample.caption
        assert [Question.from_dict(q) for q in row["questions"]] == list(sample.questions)
        assert tuple(ObjectTrack.from_dict(o) for o in row["objects"]) == sample.objects
        for q in row["questions"]:
            assert q["answer_letter"] == OPTION_LETTERS[q["answer"]]

        video = load_video(row["video_path"], num_frames=row["num_frames"])
        assert video.frames.shape == (8, 64, 64, 3) and video.indices == list(range(8))
        assert np.abs(video.frames.astype(int) - sample.frames.astype(int)).mean() < 8
        for o in sample.objects:
            k = (o.start + o.end - 1) // 2
            ys, xs = np.nonzero(_mask(sample.frames[k], o.rgb))
            pixel = video.frames[k, int(round(ys.mean())), int(round(xs.mean()))].astype(float)
            assert np.linalg.norm(pixel - np.array(o.rgb)) < 60, (o.colour, pixel)


def test_read_dataset_rejects_malformed_rows(tmp_path):
    out = write_dataset(tmp_path / "d", 2, seed=0, num_frames=8, height=32, width=32)
    ann = out / "annotations.jsonl"
    good = ann.read_text()
    first = json.loads(good.splitlines()[0])

    def broken(row_or_text):
        text = row_or_text if isinstance(row_or_text, str) else json.dumps(row_or_text)
        ann.write_text(good + text + "\n")
        with pytest.raises(ValueError, match=r"annotations\.jsonl:3"):
            read_dataset(out)

    broken("{not json")
    broken({k: v for k, v in first.items() if k != "caption"})
    broken({**first, "sample_id": "x", "caption": first["caption"] + " banana ."})
    broken({**first, "sample_id": "x", "video": "videos/missing.mp4"})
    bad_q = dict(first["questions"][0], answer=4)
    broken({**first, "sample_id": "x", "questions": [bad_q]})
    bad_letter = dict(first["questions"][0], answer_letter="Z")
    broken({**first, "sample_id": "x", "questions": [bad_letter]})
    broken({**first, "sample_id": "x", "objects": [dict(first["objects"][0], colour="pink")]})
    broken(first)  # duplicate sample_id
    ann.write_text(good + "\n")  # blank lines are fine
    assert len(read_dataset(out)) == 2
    with pytest.raises(ValueError, match="does not exist"):
        read_dataset(tmp_path / "nowhere")


# --------------------------------------------------------------------------- sizes and arguments


def test_long_large_video():
    s = generate_sample(3, num_frames=64, height=128, width=128)
    assert s.frames.shape == (64, 128, 128, 3) and s.frames.dtype == np.uint8
    assert 60 <= S.word_count(s.caption) <= 150
    assert 2 <= len(s.objects) <= 4 and max(o.end for o in s.objects) <= 64


def test_bad_arguments():
    for kw in (dict(height=63), dict(width=30), dict(num_frames=4), dict(max_objects=5),
               dict(min_objects=3, max_objects=2), dict(fps=0.0), dict(min_objects=0)):
        with pytest.raises(ValueError):
            generate_sample(0, **kw)
    with pytest.raises(ValueError):
        generate_sample(-1)
