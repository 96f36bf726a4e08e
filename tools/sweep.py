"""Bad-input sweep: odd and bad inputs through the Python API and both command lines, on the embedded
tiny models, each outcome classified.

    python tools/sweep.py                 # every case (~2-3 minutes on 2 CPU cores)
    python tools/sweep.py --only cli      # the cases whose name matches a regular expression
    python tools/sweep.py --list          # the case names only

Outcomes:

* ``handled``: a refusal with a message that names what is wrong (the case's needles), on the command
  line exit status 2 (130 for Ctrl-C) and one line on stderr; or an odd but valid input accepted with a
  result the case checks.
* ``traceback``: an exception escaped that is not a ``ValueError`` / ``TypeError`` refusal (API), or a
  traceback / an uncaught exception on the command line.
* ``unclear message``: refused, but the message misses what the case expects it to name, is more than
  one line, or the exit status is wrong; or a valid input was refused.
* ``silent alteration``: a bad input accepted without a word, or an odd input read differently from
  what it holds.
* ``lost row``: an evaluation run whose results hold fewer rows than its annotations have samples.

This is a script, not a test: it is kept out of ``tests/`` (pytest collects ``tests/`` only), prints a
table and a summary, and exits 1 when any case is not handled. It imports the project the way a user
does, so run it in the project's environment (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HANDLED, TRACEBACK, UNCLEAR, ALTERED, LOST = "handled", "traceback", "unclear message", "silent alteration", "lost row"
OUTCOMES = (HANDLED, TRACEBACK, UNCLEAR, ALTERED, LOST)
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Case:
    name: str
    run: Callable[[], tuple[str, str]]  # -> (outcome, detail)


@dataclass
class Env:
    """What the cases share: a scratch directory, media files and (lazily) the engine."""

    tmp: Path
    files: dict[str, Path] = field(default_factory=dict)
    _engine: object = None

    @property
    def engine(self):
        if self._engine is None:
            from specvlm import SpecVLM, zoo

            self._engine = SpecVLM.from_pretrained(zoo.checkpoint("target"), draft=zoo.checkpoint("draft"))
        return self._engine


# --------------------------------------------------------------------------- classification


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _needles_in(message: str, needles) -> list[str]:
    low = message.lower()
    return [n for n in needles if n.lower() not in low]


def api_refuses(fn: Callable[[], object], *needles: str, kinds=(ValueError, TypeError)) -> tuple[str, str]:
    """A refusal is expected: a ValueError / TypeError whose message names every needle."""
    try:
        result = fn()
    except kinds as err:
        missing = _needles_in(str(err), needles)
        message = f"{type(err).__name__}: {_one_line(err)}"
        return (UNCLEAR, f"{message} (does not name {missing})") if missing else (HANDLED, message)
    except BaseException as err:  # noqa: BLE001 - classifying is the point
        return TRACEBACK, f"{type(err).__name__}: {_one_line(err)[:300]}"
    return ALTERED, f"accepted without a word: {str(result)[:120]!r}"


def api_accepts(fn: Callable[[], object], check: Callable[[object], str | None] = lambda r: None) -> tuple[str, str]:
    """An odd but valid input: accepted, and ``check(result)`` (None or what is wrong) agrees."""
    try:
        result = fn()
    except (ValueError, TypeError) as err:
        return UNCLEAR, f"refused a valid input: {type(err).__name__}: {_one_line(err)[:300]}"
    except BaseException as err:  # noqa: BLE001
        return TRACEBACK, f"{type(err).__name__}: {_one_line(err)[:300]}"
    problem = check(result)
    return (ALTERED, problem) if problem else (HANDLED, "accepted, read faithfully")


@dataclass
class CliRun:
    code: int | None
    out: str
    err: str
    escaped: str | None = None


def run_cli(main, argv: list[str]) -> CliRun:
    """``main(argv)`` in this process, stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            err.write(exit_.code + "\n")
    except BaseException:  # noqa: BLE001
        return CliRun(None, out.getvalue(), err.getvalue(), traceback.format_exc())
    return CliRun(code, out.getvalue(), err.getvalue())


_NOISE = re.compile(r"it/s\]|Loading weights|^\s*$|^WARNING |^INFO ")


def _message_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if not _NOISE.search(line)]


def cli_refuses(run: CliRun, *needles: str, code: int = 2) -> tuple[str, str]:
    if run.escaped is not None or "Traceback" in run.err:
        return TRACEBACK, (run.escaped or run.err).strip().splitlines()[-1][:300]
    lines = _message_lines(run.err)
    if run.code == 0:
        return ALTERED, f"exit 0: accepted without a word ({_one_line(run.out)[:100]!r})"
    text = " | ".join(lines)
    if run.code != code:
        return UNCLEAR, f"exit {run.code} (expected {code}): {text[:300]}"
    if len(lines) != 1:
        return UNCLEAR, f"{len(lines)} lines on stderr: {text[:300]}"
    missing = _needles_in(lines[0], needles)
    return (UNCLEAR, f"{lines[0][:300]} (does not name {missing})") if missing else (HANDLED, lines[0][:300])


def cli_accepts(run: CliRun, check: Callable[[CliRun], str | None] = lambda r: None) -> tuple[str, str]:
    if run.escaped is not None or "Traceback" in run.err:
        return TRACEBACK, (run.escaped or run.err).strip().splitlines()[-1][:300]
    if run.code != 0:
        return UNCLEAR, f"refused a valid input (exit {run.code}): {' | '.join(_message_lines(run.err))[:300]}"
    problem = check(run)
    return (ALTERED, problem) if problem else (HANDLED, "exit 0")


# --------------------------------------------------------------------------- files


def make_files(env: Env) -> None:
    from PIL import Image

    from specvlm.video import write_video
    from specvlm.zoo.demo import synthetic_frames

    t = env.tmp
    f = env.files
    f["video"] = t / "clip.mp4"
    write_video(f["video"], synthetic_frames(16, 64, 64, seed=1), fps=8.0)
    f["png16"] = t / "grey16.png"
    Image.fromarray(np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)).save(f["png16"])
    f["pgm16"] = t / "grey16.pgm"
    Image.new("I;16", (32, 32), 40000).save(f["pgm16"])
    f["png"] = t / "picture.png"
    Image.new("RGB", (48, 32), (200, 30, 30)).save(f["png"])
    f["rgba"] = t / "transparent.png"
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(f["rgba"])
    f["palette"] = t / "palette.png"
    p = Image.new("P", (8, 8))
    p.putpalette([255, 0, 0] + [0] * 765)
    p.info["transparency"] = 0
    p.save(f["palette"])
    f["empty"] = t / "empty.png"
    f["empty"].write_bytes(b"")
    f["text_png"] = t / "notes.png"
    f["text_png"].write_text("not an image")
    f["gif"] = t / "anim.gif"
    Image.new("L", (8, 8), 0).save(f["gif"], save_all=True, append_images=[Image.new("L", (8, 8), 255)])
    f["truncated_png"] = t / "truncated.png"
    f["truncated_png"].write_bytes(f["png16"].read_bytes()[:200])
    f["jpeg_rotated"] = t / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (60, 20), (0, 200, 0)).save(f["jpeg_rotated"], exif=exif)
    f["empty_video"] = t / "empty.mp4"
    f["empty_video"].write_bytes(b"")
    f["text_video"] = t / "notes.mp4"
    f["text_video"].write_text("not a video")
    f["truncated_video"] = t / "truncated.mp4"
    f["truncated_video"].write_bytes(f["video"].read_bytes()[: f["video"].stat().st_size // 3])
    f["a_file"] = t / "a_file"
    f["a_file"].write_text("x")
    f["dir"] = t / "a_dir"
    f["dir"].mkdir()
    f["odd_name_video"] = t / os.fsdecode(b"clip-\xff.mp4")
    f["odd_name_video"].write_bytes(f["video"].read_bytes())


def _grey_mean(lo: float, hi: float):
    def check(rgb) -> str | None:
        mean = float(np.asarray(rgb).mean())
        return None if lo <= mean <= hi else f"mean pixel {mean:.1f}, expected {lo}-{hi} (altered)"

    return check


def _pixel(expected):
    def check(rgb) -> str | None:
        got = tuple(int(v) for v in np.asarray(rgb)[0, 0])
        return None if got == tuple(expected) else f"first pixel {got}, expected {tuple(expected)}"

    return check


# --------------------------------------------------------------------------- the cases


def image_cases(env: Env) -> list[Case]:
    from PIL import Image

    from specvlm.images import load_image

    f = env.files

    def img(mode, value, size=(4, 4)):
        return Image.new(mode, size, value)

    cases = [
        ("image: 16-bit PNG file", lambda: api_accepts(lambda: load_image(str(f["png16"])), _grey_mean(115, 140))),
        ("image: 16-bit PGM file (PIL mode I)", lambda: api_accepts(lambda: load_image(str(f["pgm16"])), _pixel((156, 156, 156)))),
        ("image: PIL I;16B", lambda: api_accepts(lambda: load_image(img("I;16B", 65535)), _pixel((255, 255, 255)))),
        ("image: PIL I;16 mid-grey", lambda: api_accepts(lambda: load_image(img("I;16", 32768)), _pixel((128, 128, 128)))),
        ("image: PIL I outside 16 bits", lambda: api_refuses(lambda: load_image(Image.fromarray(np.array([[-5, 9]], dtype=np.int32))), "mode 'I'", "-5")),
        ("image: PIL F", lambda: api_refuses(lambda: load_image(img("F", 0.5)), "mode 'F'")),
        ("image: PIL La", lambda: api_refuses(lambda: load_image(img("La", (0, 0))), "mode 'La'")),
        ("image: PIL 1", lambda: api_accepts(lambda: load_image(img("1", 1)), _pixel((255, 255, 255)))),
        ("image: PIL L", lambda: api_accepts(lambda: load_image(img("L", 90)), _pixel((90, 90, 90)))),
        ("image: PIL P", lambda: api_accepts(lambda: load_image(img("P", 0)), _pixel((0, 0, 0)))),
        ("image: palette PNG with a transparent entry", lambda: api_accepts(lambda: load_image(str(f["palette"])), _pixel((255, 255, 255)))),
        ("image: transparent RGBA PNG", lambda: api_accepts(lambda: load_image(str(f["rgba"])), _pixel((255, 255, 255)))),
        ("image: PIL LA half alpha", lambda: api_accepts(lambda: load_image(img("LA", (0, 128))), _pixel((127, 127, 127)))),
        ("image: PIL RGBa", lambda: api_accepts(lambda: load_image(img("RGBa", (64, 0, 0, 128))), _pixel((191, 127, 127)))),
        ("image: PIL PA", lambda: api_accepts(lambda: load_image(img("PA", (0, 0))), _pixel((255, 255, 255)))),
        ("image: PIL CMYK no ink", lambda: api_accepts(lambda: load_image(img("CMYK", (0, 0, 0, 0))), _pixel((255, 255, 255)))),
        ("image: PIL YCbCr grey", lambda: api_accepts(lambda: load_image(img("YCbCr", (128, 128, 128))), _pixel((128, 128, 128)))),
        ("image: PIL LAB white", lambda: api_accepts(lambda: load_image(img("LAB", (255, 128, 128))), _pixel((254, 255, 254)))),
        ("image: PIL HSV red", lambda: api_accepts(lambda: load_image(img("HSV", (0, 255, 255))), _pixel((255, 0, 0)))),
        ("image: PIL RGBX", lambda: api_accepts(lambda: load_image(img("RGBX", (1, 2, 3, 0))), _pixel((1, 2, 3)))),
        ("image: uint16 array", lambda: api_accepts(lambda: load_image(np.full((4, 4, 3), 65535, np.uint16)), _pixel((255, 255, 255)))),
        ("image: grey 2-D array", lambda: api_accepts(lambda: load_image(np.full((4, 4), 7, np.uint8)), _pixel((7, 7, 7)))),
        ("image: RGBA array", lambda: api_accepts(lambda: load_image(np.zeros((4, 4, 4), np.uint8)), _pixel((255, 255, 255)))),
        ("image: float32 array", lambda: api_refuses(lambda: load_image(np.zeros((4, 4, 3), np.float32)), "float32")),
        ("image: int64 array", lambda: api_refuses(lambda: load_image(np.zeros((4, 4, 3), np.int64)), "int64")),
        ("image: bool array", lambda: api_refuses(lambda: load_image(np.zeros((4, 4, 3), bool)), "bool")),
        ("image: 2-channel array", lambda: api_refuses(lambda: load_image(np.zeros((4, 4, 2), np.uint8)), "(4, 4, 2)")),
        ("image: channels-first tensor", lambda: api_refuses(lambda: load_image(__import__("torch").zeros(3, 8, 8, dtype=__import__("torch").uint8)), "(3, 8, 8)")),
        ("image: empty array", lambda: api_refuses(lambda: load_image(np.zeros((0, 4, 3), np.uint8)), "(0, 4, 3)")),
        ("image: missing file", lambda: api_refuses(lambda: load_image(str(env.tmp / "missing.png")), "missing.png", "does not exist")),
        ("image: a directory", lambda: api_refuses(lambda: load_image(str(f["dir"])), "a_dir", "is a directory")),
        ("image: empty file", lambda: api_refuses(lambda: load_image(str(f["empty"])), "empty.png", "empty")),
        ("image: text file named .png", lambda: api_refuses(lambda: load_image(str(f["text_png"])), "notes.png", "not a readable image")),
        ("image: truncated PNG", lambda: api_refuses(lambda: load_image(str(f["truncated_png"])), "truncated.png")),
        ("image: animated GIF", lambda: api_refuses(lambda: load_image(str(f["gif"])), "anim.gif", "2 frames")),
        ("image: URL", lambda: api_refuses(lambda: load_image("https://example.com/cat.png"), "URL")),
        ("image: path with a NUL", lambda: api_refuses(lambda: load_image("a\x00b.png"), "NUL")),
        ("image: bytes", lambda: api_refuses(lambda: load_image(b"\x89PNG"), "bytes")),
        ("image: None", lambda: api_refuses(lambda: load_image(None), "NoneType")),
        ("image: EXIF-rotated JPEG", lambda: api_accepts(lambda: load_image(str(f["jpeg_rotated"])),
                                                         lambda r: None if r.shape[:2] == (60, 20) else f"shape {r.shape}, not rotated as shown")),
        ("image: base64 data URI", lambda: api_accepts(lambda: load_image("data:image/png;base64," + base64.b64encode(f["png"].read_bytes()).decode()),
                                                       _pixel((200, 30, 30)))),
        ("image: bad base64 data URI", lambda: api_refuses(lambda: load_image("data:image/png;base64,@@@"), "base64")),
        ("image: images=[] to the engine", lambda: api_refuses(lambda: env.engine.build_inputs(prompt="what is it?", images=[]), "empty list")),
        ("image: 16-bit PNG through generate", lambda: api_accepts(
            lambda: env.engine.generate(images=[str(f["png16"])], prompt="describe it .", max_new_tokens=2),
            lambda r: None if len(r.token_ids) == 2 else f"{len(r.token_ids)} tokens")),
    ]
    return [Case(n, fn) for n, fn in cases]


def frame_cases(env: Env) -> list[Case]:
    from PIL import Image

    from specvlm.video import from_frames, load_video

    f = env.files
    cases = [
        ("frames: uint16 array", lambda: api_accepts(lambda: from_frames(np.full((2, 4, 4, 3), 32768, np.uint16)).frames, _frame_pixel(128))),
        ("frames: float32 array", lambda: api_refuses(lambda: from_frames(np.zeros((2, 4, 4, 3), np.float32)), "float32")),
        ("frames: int64 array", lambda: api_refuses(lambda: from_frames(np.zeros((2, 4, 4, 3), np.int64)), "int64")),
        ("frames: 3-D array", lambda: api_refuses(lambda: from_frames(np.zeros((2, 4, 4), np.uint8)), "(2, 4, 4)")),
        ("frames: 4 channels", lambda: api_refuses(lambda: from_frames(np.zeros((2, 4, 4, 4), np.uint8)), "(2, 4, 4, 4)")),
        ("frames: zero frames", lambda: api_refuses(lambda: from_frames(np.zeros((0, 4, 4, 3), np.uint8)), "zero frames")),
        ("frames: PIL I;16 list", lambda: api_accepts(lambda: from_frames([Image.new("I;16", (4, 4), 65535)] * 2).frames, _frame_pixel(255))),
        ("frames: PIL F in a list", lambda: api_refuses(lambda: from_frames([Image.new("L", (4, 4)), Image.new("F", (4, 4))]), "frame 1", "'F'")),
        ("frames: mixed sizes", lambda: api_refuses(lambda: from_frames([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)]), "different shapes")),
        ("frames: fps 0", lambda: api_refuses(lambda: from_frames(np.zeros((2, 4, 4, 3), np.uint8), fps=0), "fps")),
        ("video: missing file", lambda: api_refuses(lambda: load_video(env.tmp / "missing.mp4"), "missing.mp4", "does not exist")),
        ("video: a directory", lambda: api_refuses(lambda: load_video(f["dir"]), "a_dir", "directory")),
        ("video: empty file", lambda: api_refuses(lambda: load_video(f["empty_video"]), "empty.mp4", "empty")),
        ("video: text file named .mp4", lambda: api_refuses(lambda: load_video(f["text_video"]), "notes.mp4")),
        ("video: truncated mp4", lambda: api_refuses(lambda: load_video(f["truncated_video"]), "truncated.mp4")),
        ("video: num_frames 0", lambda: api_refuses(lambda: load_video(f["video"], num_frames=0), "num_frames")),
        ("video: num_frames 2.5", lambda: api_refuses(lambda: load_video(f["video"], num_frames=2.5), "num_frames", "2.5")),
        ("video: num_frames as text", lambda: api_refuses(lambda: load_video(f["video"], num_frames="8"), "num_frames", "'8'")),
        ("video: fps nan", lambda: api_refuses(lambda: load_video(f["video"], fps=float("nan")), "fps", "nan")),
        ("video: num_frames and fps", lambda: api_refuses(lambda: load_video(f["video"], num_frames=4, fps=1.0), "num_frames", "fps")),
        ("video: max_frames 0", lambda: api_refuses(lambda: load_video(f["video"], fps=1.0, max_frames=0), "max_frames")),
        ("video: more frames than the file has", lambda: api_refuses_or_keeps(lambda: load_video(f["video"], num_frames=1000), "1000")),
        ("video: file name that is not UTF-8", lambda: api_accepts(lambda: load_video(f["odd_name_video"], num_frames=4).frames,
                                                                   lambda fr: None if fr.shape[0] == 4 else f"{fr.shape[0]} frames")),
        ("video: URL", lambda: api_refuses(lambda: env.engine.load("https://example.com/clip.mp4", num_frames=4), "https://example.com/clip.mp4")),
    ]
    return [Case(n, fn) for n, fn in cases]


def api_refuses_or_keeps(fn, *needles) -> tuple[str, str]:
    """Either refused naming the needles, or every frame that exists kept without duplicates."""
    try:
        video = fn()
    except ValueError as err:
        missing = _needles_in(str(err), needles)
        return (UNCLEAR, f"{_one_line(err)} (does not name {missing})") if missing else (HANDLED, _one_line(err))
    except BaseException as err:  # noqa: BLE001
        return TRACEBACK, f"{type(err).__name__}: {_one_line(err)}"
    if len(set(video.indices)) != len(video.indices):
        return ALTERED, f"frames duplicated: {video.indices}"
    return HANDLED, f"kept the {len(video.indices)} frames the file has (no duplicates)"


def _frame_pixel(value: int):
    def check(frames) -> str | None:
        got = int(np.asarray(frames)[0, 0, 0, 0])
        return None if got == value else f"pixel {got}, expected {value}"

    return check


def conversation_cases(env: Env) -> list[Case]:
    f = env.files
    v = {"type": "video", "video": str(f["video"])}
    t = {"type": "text", "text": "describe the video ."}

    def gen(messages, **kw):
        return lambda: env.engine.generate(messages=messages, max_new_tokens=2, num_frames=4, **kw)

    def user(*entries):
        return [{"role": "user", "content": list(entries)}]

    cases = [
        ("messages: nested one level too deep (content)", lambda: api_refuses(gen(user([v, t])), "nested one level too deep", "['content'][0]")),
        ("messages: batch of conversations", lambda: api_refuses(gen([user(v, t)]), "nested one level too deep", "messages[0]")),
        ("messages: bare string entry", lambda: api_refuses(gen(user(v, "hello")), "bare string", "'hello'")),
        ("messages: audio entry", lambda: api_refuses(gen(user(v, {"type": "audio", "audio": "a.wav"}, t)), "'audio'", "['content'][1]")),
        ("messages: entry without a type", lambda: api_refuses(gen(user(v, {"text": "hi"})), "no 'type'")),
        ("messages: text that is not a string", lambda: api_refuses(gen(user(v, {"type": "text", "text": 42})), "'text' of type int", "42")),
        ("messages: text entry without text", lambda: api_refuses(gen(user(v, {"type": "text"})), "no 'text'")),
        ("messages: role that is not a string", lambda: api_refuses(gen([{"role": None, "content": [v, t]}]), "role")),
        ("messages: content None", lambda: api_refuses(gen([{"role": "user", "content": None}]), "content")),
        ("messages: a dict, not a list", lambda: api_refuses(gen({"role": "user", "content": [v, t]}), "messages must be a non-empty list")),
        ("messages: empty list", lambda: api_refuses(gen([]), "non-empty")),
        ("messages: two videos", lambda: api_refuses(gen(user(v, v, t)), "2 video entries")),
        ("messages: no media", lambda: api_refuses(gen(user(t)), "no video or image entry")),
        ("messages: unnamed video and no video=", lambda: api_refuses(gen(user({"type": "video"}, t)), "1 video entries, 0 of them naming")),
        ("messages: with prompt too", lambda: api_refuses(lambda: env.engine.generate(messages=user(v, t), prompt="x", max_new_tokens=2), "not both")),
        ("messages: placeholder in text", lambda: api_refuses(gen(user(v, {"type": "text", "text": "look <video> here"})), "<video>")),
        ("messages: text not UTF-8 (lone surrogates)",
         lambda: api_refuses(gen(user(v, {"type": "text", "text": "hi \udcff"})), "not valid unicode", "['content'][1]")),
        ("messages: image_url entry (OpenAI form)", lambda: api_accepts(
            gen(user({"type": "image_url", "image_url": {"url": str(f["png"])}}, t)),
            lambda r: None if len(r.token_ids) == 2 else f"{len(r.token_ids)} tokens")),
        ("messages: image_url without url", lambda: api_refuses(gen(user({"type": "image_url", "image_url": {}}, t)), "no 'url'")),
        ("messages: video entry with float frames", lambda: api_refuses(gen(user({"type": "video", "video": np.zeros((4, 8, 8, 3), np.float32)}, t)), "float32")),
        ("prompt: empty", lambda: api_refuses(lambda: env.engine.generate(video=str(f["video"]), prompt="  ", max_new_tokens=2), "prompt")),
        ("prompt: a number", lambda: api_refuses(lambda: env.engine.generate(video=str(f["video"]), prompt=5, max_new_tokens=2), "prompt", "5")),
        ("prompt: None with a video", lambda: api_refuses(lambda: env.engine.generate(video=str(f["video"]), max_new_tokens=2), "prompt")),
        ("prompt: holds the video placeholder", lambda: api_refuses(lambda: env.engine.generate(video=str(f["video"]), prompt="a <video> b", max_new_tokens=2), "<video>")),
        ("prompt: lone surrogates", lambda: api_refuses(lambda: env.engine.generate(video=str(f["video"]), prompt="hi \udcff", max_new_tokens=2, num_frames=4), "prompt")),
        ("prompt: far over the context", lambda: api_refuses(lambda: env.engine.generate(video=str(f["video"]), prompt="the video " * 20000, max_new_tokens=2, num_frames=4), "max_position_embeddings")),
    ]
    return [Case(n, fn) for n, fn in cases]


def settings_cases(env: Env) -> list[Case]:
    f = env.files

    def gen(**kw):
        base = {"video": str(f["video"]), "prompt": "describe the video .", "max_new_tokens": 2, "num_frames": 4}
        return lambda: env.engine.generate(**{**base, **kw})

    cases = [
        ("setting: drop_rate 1.0", gen(drop_rate=1.0), ("drop_rate", "1.0")),
        ("setting: drop_rate -0.1", gen(drop_rate=-0.1), ("drop_rate", "-0.1")),
        ("setting: drop_rate as text", gen(drop_rate="0.9"), ("drop_rate", "'0.9'")),
        ("setting: drop_rate nan", gen(drop_rate=float("nan")), ("drop_rate", "nan")),
        ("setting: method foo", gen(method="foo"), ("method", "foo")),
        ("setting: pruning foo", gen(pruning="foo"), ("pruning", "foo")),
        ("setting: num_draft_tokens 0", gen(num_draft_tokens=0), ("num_draft_tokens", "0")),
        ("setting: tree foo", gen(tree="foo"), ("tree", "foo")),
        ("setting: stage1_mass 2", gen(stage1_mass=2.0), ("stage1_mass", "2")),
        ("setting: positions foo", gen(positions="foo"), ("positions", "foo")),
        ("setting: seed as text", gen(seed="x"), ("seed", "'x'")),
        ("setting: max_new_tokens 0", gen(max_new_tokens=0), ("max_new_tokens", "0")),
        ("setting: max_new_tokens -5", gen(max_new_tokens=-5), ("max_new_tokens", "-5")),
        ("setting: max_new_tokens 2.5", gen(max_new_tokens=2.5), ("max_new_tokens", "2.5")),
        ("setting: misspelt keyword", gen(drop_ratee=0.9), ("drop_ratee",)),
        ("setting: num_beams 2", gen(num_beams=2), ("num_beams",)),
        ("setting: temperature -1 with sampling", gen(do_sample=True, temperature=-1.0), ("temperature",)),
        ("setting: top_p 2 with sampling", gen(do_sample=True, top_p=2.0), ("top_p",)),
        ("setting: inputs and a prompt", lambda: env.engine.generate(inputs={"input_ids": None}, prompt="x", max_new_tokens=2), ("inputs",)),
        ("setting: inputs that are not processor output", lambda: env.engine.generate(inputs={"foo": 1}, max_new_tokens=2), ("inputs",)),
    ]
    return [Case(n, (lambda fn=fn, needles=needles: api_refuses(fn, *needles))) for n, fn, needles in cases]


def drafting_cases(env: Env) -> list[Case]:
    """The drafter pipeline's surfaces: prepare() / decode(), prompt lookup, the guard, compile, the generation
    contract's new keywords."""
    f = env.files
    base = {"video": str(f["video"]), "prompt": "describe the video .", "max_new_tokens": 4, "num_frames": 4}

    def gen(**kw):
        return lambda: env.engine.generate(**{**base, **kw})

    def prepared(**kw):
        return env.engine.prepare(**{**base, **kw})

    def decode_twice():
        p = prepared(method="ar")
        env.engine.decode(p)
        return env.engine.decode(p)

    def foreign_drafter():
        p = prepared(method="ar")
        p.drafter = "a string"
        return env.engine.decode(p)

    def not_prepared():
        return env.engine.decode({"inputs": None})

    from transformers import GenerationConfig, MaxLengthCriteria

    refusals = [
        ("drafting: never_slower as text", gen(never_slower="yes"), ("never_slower", "'yes'")),
        ("drafting: compile foo", gen(compile="sometimes"), ("compile", "sometimes", "auto")),
        ("drafting: method lookup with a tree", gen(method="lookup", tree="foo"), ("tree", "foo")),
        ("drafting: decode a prepared answer twice", decode_twice, ("decoded already", "prepare")),
        ("drafting: decode a drafter that is not one", foreign_drafter, ("prepared.drafter", "str")),
        ("drafting: decode something not prepared", not_prepared, ("prepare()", "dict")),
        ("generation: stopping_criteria", gen(stopping_criteria=[MaxLengthCriteria(3)]), ("stopping_criteria",)),
        ("generation: logits_processor not a list", gen(logits_processor="x"), ("logits_processor",)),
        ("generation: logits_processor of non-callables", gen(logits_processor=[1, 2]), ("logits_processor",)),
        ("tp: tp_size without torchrun", lambda: type(env.engine).from_pretrained(
            str(env.engine.target.name_or_path), tp_size=2), ("tp_size=2", "torchrun --nproc_per_node 2")),
        ("tp: tp_size as text", lambda: type(env.engine).from_pretrained(
            str(env.engine.target.name_or_path), tp_size="2"), ("tp_size='2'",)),
        ("overlap: an unknown mode", gen(overlap="sometimes"), ("overlap", "sometimes", "auto")),
        ("overlap: on with a tree", gen(overlap="on", tree="reference-25"), ("overlap='on'", "only a chain")),
        ("overlap: on with sampling", gen(overlap="on", tree="chain", do_sample=True), ("overlap='on'", "only greedy")),
        ("overlap: on with a prefix-reading processor", gen(overlap="on", tree="chain", repetition_penalty=1.2),
         ("overlap='on'", "read the prefix")),
        ("overlap: on for a self-draft", lambda: type(env.engine)(env.engine.target, env.engine.processor).generate(
            **base, overlap="on", tree="chain"), ("overlap='on'", "separate draft model")),
        ("overlap: a worker on no runner", lambda: _overlap_drafter(env, base, runner="gpu"), ("runner='gpu'", "'process'")),
        ("overlap: a worker with no threads", lambda: _overlap_drafter(env, base, worker_threads=0), ("worker_threads=0",)),
        ("generation: dtype and torch_dtype disagree", lambda: type(env.engine).from_pretrained(
            env.engine.target, processor=env.engine.processor, dtype="float32", torch_dtype="bfloat16"), ("dtype",)),
    ]
    cases = [Case(n, (lambda fn=fn, needles=needles: api_refuses(fn, *needles))) for n, fn, needles in refusals]

    def lookup_is_plain_decodings_answer():
        ar = env.engine.generate(**base, method="ar").token_ids
        got = env.engine.generate(**base, method="lookup").token_ids
        return api_accepts(lambda: got, lambda r: None if r == ar else f"lookup gave {r}, ar {ar}")

    def config_length_counts():
        result = env.engine.generate(**{**base, "max_new_tokens": None}, generation_config=GenerationConfig(max_new_tokens=3),
                                     ignore_eos=True)  # fmt: skip
        return api_accepts(lambda: result, lambda r: None if len(r.token_ids) == 3 else f"{len(r.token_ids)} tokens, not 3")

    def overlap_is_plain_decodings_answer():
        ar = env.engine.generate(**{**base, "max_new_tokens": 24}, method="ar", ignore_eos=True).token_ids
        got = env.engine.generate(**{**base, "max_new_tokens": 24}, overlap="on", tree="chain", lazy_draft_after=0,
                                  ignore_eos=True)  # fmt: skip
        env.engine.close()
        return api_accepts(lambda: got, lambda r: None if r.token_ids == ar and r.stats.overlap else f"overlap gave {r.token_ids}, ar {ar}")

    def overlap_after_close_and_a_dead_worker():
        """close() twice, an answer after it, and an answer after its worker was killed: each overlapped answer
        equals ar's (a dead worker is replaced, not reported as an error)."""
        kw = dict(**{**base, "max_new_tokens": 16}, overlap="on", tree="chain", lazy_draft_after=0, ignore_eos=True)
        ar = env.engine.generate(**{**base, "max_new_tokens": 16}, method="ar", ignore_eos=True).token_ids
        env.engine.close()
        env.engine.close()
        first = env.engine.generate(**kw).token_ids
        worker = env.engine.draft_worker
        if worker is not None and worker.runner == "process":
            worker._worker.kill()
            worker._worker.join()
        second = env.engine.generate(**kw).token_ids
        env.engine.close()
        return api_accepts(lambda: (first, second), lambda r: None if r == (ar, ar) else f"overlap gave {r}, ar {ar}")

    def trusted_steps_after_a_reset_and_under_a_stance():
        """compile="draft" answers (their graphs trusted) after torch._dynamo.reset() dropped every graph, and
        under a caller's own stance ("force_eager"): each equals ar's (a refused trusted call runs guarded)."""
        import torch

        kw = dict(**{**base, "max_new_tokens": 16}, compile="draft", tree="chain", lazy_draft_after=0, ignore_eos=True)
        ar = env.engine.generate(**{**base, "max_new_tokens": 16}, method="ar", ignore_eos=True).token_ids
        first = env.engine.generate(**kw).token_ids
        torch._dynamo.reset()  # the warmed graphs are gone; the engine still holds them as built and trusted
        after_reset = env.engine.generate(**kw).token_ids
        with torch.compiler.set_stance("force_eager"):
            eager = env.engine.generate(**kw).token_ids
        got = (first, after_reset, eager)
        return api_accepts(lambda: got, lambda r: None if r == (ar, ar, ar) else f"compiled answers {r}, ar {ar}")

    cases += [
        Case("compile: trusted draft steps after a dynamo reset and under force_eager", trusted_steps_after_a_reset_and_under_a_stance),
        Case("drafting: method lookup equals ar", lookup_is_plain_decodings_answer),
        Case("overlap: on equals ar", overlap_is_plain_decodings_answer),
        Case("overlap: after close() and after its worker died", overlap_after_close_and_a_dead_worker),
        Case("generation: a per-call config's max_new_tokens", config_length_counts),
    ]
    return cases


def _overlap_drafter(env: Env, base: dict, **kw):
    """An overlapped drafter built by hand around a prepared answer's draft model."""
    from specvlm.decoding.drafters.overlap import OverlapDrafter

    prepared = env.engine.prepare(**base, tree="chain", lazy_draft_after=0, never_slower=False)
    return OverlapDrafter(prepared.drafter, **kw)


def loading_cases(env: Env) -> list[Case]:
    from specvlm import SpecVLM, zoo

    f = env.files
    cases = [
        ("load: missing checkpoint", lambda: api_refuses(lambda: SpecVLM.from_pretrained(str(env.tmp / "nope")), "nope")),
        ("load: a file as checkpoint", lambda: api_refuses(lambda: SpecVLM.from_pretrained(str(f["a_file"])), "a_file")),
        ("load: an empty directory", lambda: api_refuses(lambda: SpecVLM.from_pretrained(str(f["dir"])), "a_dir")),
        ("load: device_map cuda without a GPU", lambda: api_refuses(lambda: SpecVLM.from_pretrained(zoo.checkpoint("target"), device_map="cuda"), "cuda")),
        ("load: drop_rate 5 as a default", lambda: api_refuses(lambda: SpecVLM.from_pretrained(zoo.checkpoint("target"), drop_rate=5), "drop_rate")),
        ("load: zoo name through the API", lambda: api_refuses(lambda: SpecVLM.from_pretrained("zoo:nope"), "zoo:nope")),
    ]
    return [Case(n, fn) for n, fn in cases]


def bench_cli_cases(env: Env) -> list[Case]:
    """``specvlm bench``'s flags, refused before any model loads."""
    from specvlm import cli

    def bench(*argv):
        return run_cli(cli.main, ["bench", "--workloads", "caption", "--no-hf-assisted", *argv])

    cases = [
        ("cli bench: --contention -1", lambda: cli_refuses(bench("--contention", "-1"), "-1", ">= 0")),
        ("cli bench: --contention x", lambda: cli_refuses(bench("--contention", "x"), "'x'", "integer")),
        ("cli bench: --compile sometimes", lambda: cli_refuses(bench("--compile", "sometimes"), "sometimes")),
        ("cli bench: --target zoo:nope", lambda: cli_refuses(bench("--target", "zoo:nope", "--draft", "zoo:draft"), "nope")),
        ("cli generate: --tp 0", lambda: cli_refuses(run_cli(cli.main, ["generate", "--target", "zoo:target", "--video", "x.mp4",
                                                                        "--prompt", "hi", "--tp", "0"]), "--tp", ">= 1")),
        ("cli generate: --tp 2 without torchrun", lambda: cli_refuses(run_cli(cli.main, ["generate", "--target", "zoo:target",
            "--video", str(env.files["video"]), "--prompt", "hi", "--tp", "2"]), "torchrun --nproc_per_node 2")),
        ("cli bench: --workloads nope", lambda: cli_refuses(bench("--workloads", "nope"), "nope")),
    ]
    return [Case(n, fn) for n, fn in cases]


def memory_cli_cases(env: Env) -> list[Case]:
    """``specvlm memory``'s arguments: refused before anything is read from a hub, or estimated."""
    from specvlm import cli

    def mem(*argv):
        return run_cli(cli.main, ["memory", *argv])

    def estimated(frames: str):
        def check(run: CliRun) -> str | None:
            if f"{frames} frames" not in run.out or "GPUs needed" not in run.out:
                return f"no estimate for {frames} frames in the output: {_one_line(run.out)[:120]!r}"
            return None

        return check

    f = env.files
    cases = [
        ("cli memory: --frames 0", lambda: cli_refuses(mem("llava_ov_72b_7b", "--frames", "0"), "--frames", ">= 1")),
        ("cli memory: --frames -5", lambda: cli_refuses(mem("llava_ov_72b_7b", "--frames", "-5"), "--frames", ">= 1")),
        ("cli memory: --frames x", lambda: cli_refuses(mem("llava_ov_72b_7b", "--frames", "x"), "'x'", "integer")),
        ("cli memory: no --frames", lambda: cli_refuses(mem("llava_ov_72b_7b"), "--frames")),
        ("cli memory: --dtype int8", lambda: cli_refuses(mem("llava_ov_72b_7b", "--frames", "64", "--dtype", "int8"), "int8")),
        ("cli memory: --gpu-memory -1", lambda: cli_refuses(mem("llava_ov_72b_7b", "--frames", "64", "--gpu-memory", "-1"),
                                                             "--gpu-memory", "> 0")),
        ("cli memory: --gpu-memory inf", lambda: cli_refuses(mem("llava_ov_72b_7b", "--frames", "64", "--gpu-memory", "inf"),
                                                              "--gpu-memory")),
        ("cli memory: --drop-rate 1", lambda: cli_refuses(mem("llava_ov_72b_7b", "--frames", "64", "--drop-rate", "1"), "drop_rate")),
        ("cli memory: unknown pair", lambda: cli_refuses(mem("no_such_pair", "--frames", "64"), "no_such_pair", "llava_ov_72b_7b")),
        ("cli memory: neither a config nor --target", lambda: cli_refuses(mem("--frames", "64"), "CONFIG", "--target")),
        ("cli memory: a hub id without known shapes", lambda: cli_refuses(mem("--target", "org/unknown", "--frames", "8"),
                                                                          "org/unknown", "config.json")),
        ("cli memory: a config whose checkpoints have no known shapes", lambda: cli_refuses(mem("qwen3_vl_8b_2b", "--frames", "8"),
                                                                                           "qwen3-vl-8b", "config.json")),
        ("cli memory: a family without arithmetic", lambda: cli_refuses(mem("--target", "tiny:qwen3_vl", "--frames", "8"),
                                                                        "qwen3_vl", "llava_onevision")),
        ("cli memory: --target a directory without config.json", lambda: cli_refuses(mem("--target", str(f["dir"]), "--frames", "8"),
                                                                                     "a_dir", "config.json")),
        ("cli memory: pair of two layouts", lambda: cli_refuses(mem("--target", "llava-hf/llava-onevision-qwen2-7b-ov-hf", "--draft",
                                                                    "Qwen/Qwen2.5-VL-7B-Instruct", "--frames", "8"), "family", "qwen2_5_vl")),
        ("cli memory: --json into a directory", lambda: cli_refuses(mem("llava_ov_72b_7b", "--frames", "64", "--json", str(f["dir"])),
                                                                    "--json", "directory")),
        ("cli memory: 72B + 7B at 128 frames", lambda: cli_accepts(mem("llava_ov_72b_7b", "--frames", "128"), estimated("128"))),
        ("cli memory: one frame of a 2-frame-patch family", lambda: cli_accepts(mem("qwen2_5_vl_32b_7b", "--frames", "1"),
                                                                                estimated("1"))),
        ("cli memory: the embedded pair", lambda: cli_accepts(mem("--target", "zoo:target", "--draft", "zoo:draft", "--frames", "8"),
                                                               estimated("8"))),
    ]  # fmt: skip
    return [Case(n, fn) for n, fn in cases]


def specvlm_cli_cases(env: Env) -> list[Case]:
    from specvlm import cli

    f = env.files
    base = ["generate", "--target", "zoo:target", "--draft", "zoo:draft", "--video", str(f["video"]), "--prompt",
            "describe the video .", "--max-new-tokens", "2", "--num-frames", "4"]  # fmt: skip

    def gen(*extra, drop=()):
        argv = list(base)
        for flag in drop:
            i = argv.index(flag)
            del argv[i : i + 2]
        return run_cli(cli.main, argv + list(extra))

    def replace(flag, value):
        argv = list(base)
        argv[argv.index(flag) + 1] = value
        return run_cli(cli.main, argv)

    def json_ok(run: CliRun) -> str | None:
        try:
            payload = json.loads(run.out)
        except json.JSONDecodeError:
            return f"stdout is not the JSON: {run.out[:100]!r}"
        return None if len(payload["token_ids"]) == 2 else f"{len(payload['token_ids'])} tokens"

    cases = [
        ("cli generate: zoo names", lambda: cli_accepts(gen("--json"), json_ok)),
        ("cli generate: tiny name", lambda: cli_accepts(run_cli(cli.main, ["generate", "--target", "tiny:llava_onevision:0:1", "--video", str(f["video"]),
                                                                            "--prompt", "hi", "--max-new-tokens", "2", "--num-frames", "4", "--json"]), json_ok)),
        ("cli generate: unknown zoo name", lambda: cli_refuses(replace("--target", "zoo:nope"), "--target", "zoo:nope")),
        ("cli generate: bad tiny name", lambda: cli_refuses(replace("--target", "tiny:nofamily"), "--target", "tiny:nofamily")),
        ("cli generate: empty target", lambda: cli_refuses(replace("--target", ""), "--target")),
        ("cli generate: missing target dir", lambda: cli_refuses(replace("--target", str(env.tmp / "nope")), "nope")),
        ("cli generate: missing video", lambda: cli_refuses(replace("--video", str(env.tmp / "missing.mp4")), "missing.mp4")),
        ("cli generate: video is a directory", lambda: cli_refuses(replace("--video", str(f["dir"])), "a_dir", "directory")),
        ("cli generate: video file not UTF-8 named", lambda: cli_accepts(replace("--video", str(f["odd_name_video"])))),
        ("cli generate: target dir not UTF-8 named", lambda: cli_refuses(replace("--target", str(_odd_checkpoint(env))), "--target", "utf-8",
                                                                         "rename")),  # safetensors opens UTF-8 paths only
        ("cli generate: json file not UTF-8 named", lambda: cli_accepts(gen("--json", str(env.tmp / os.fsdecode(b"out-\xff.json"))),
                                                                        lambda r: None if (env.tmp / os.fsdecode(b"out-\xff.json")).is_file() else "no file")),
        ("cli generate: missing image", lambda: cli_refuses(gen("--image", str(env.tmp / "missing.png")), "missing.png", "does not exist")),
        ("cli generate: image is a directory", lambda: cli_refuses(gen("--image", str(f["dir"])), "a_dir", "is a directory")),
        ("cli generate: 16-bit image", lambda: cli_accepts(gen("--image", str(f["png16"])))),
        ("cli generate: neither video nor image", lambda: cli_refuses(gen(drop=("--video",)), "--video", "--image")),
        ("cli generate: empty prompt", lambda: cli_refuses(replace("--prompt", ""), "prompt")),
        ("cli generate: prompt not UTF-8", lambda: cli_refuses(replace("--prompt", "hi " + os.fsdecode(b"\xff")), "--prompt", "utf-8")),
        ("cli generate: system not UTF-8", lambda: cli_refuses(gen("--system", os.fsdecode(b"\xfe\xff")), "--system", "utf-8")),
        ("cli generate: prompt with the placeholder", lambda: cli_refuses(replace("--prompt", "see <video>"), "<video>")),
        ("cli generate: max-new-tokens 0", lambda: cli_refuses(replace("--max-new-tokens", "0"), "max_new_tokens", "0")),
        ("cli generate: max-new-tokens abc", lambda: cli_refuses(replace("--max-new-tokens", "abc"), "--max-new-tokens", "abc")),
        ("cli generate: num-frames 0", lambda: cli_refuses(replace("--num-frames", "0"), "num_frames", "0")),
        ("cli generate: fps -1", lambda: cli_refuses(gen("--fps", "-1", drop=("--num-frames",)), "fps", "-1")),
        ("cli generate: fps nan", lambda: cli_refuses(gen("--fps", "nan", drop=("--num-frames",)), "fps", "nan")),
        ("cli generate: max-frames 0", lambda: cli_refuses(gen("--max-frames", "0"), "--max-frames", "0")),
        ("cli generate: drop-rate 2", lambda: cli_refuses(gen("--drop-rate", "2"), "drop_rate", "2")),
        ("cli generate: drop-rate abc", lambda: cli_refuses(gen("--drop-rate", "abc"), "--drop-rate", "abc")),
        ("cli generate: malformed tree", lambda: cli_refuses(gen("--tree", "[[0"), "--tree")),
        ("cli generate: method foo", lambda: cli_refuses(gen("--method", "foo"), "--method", "foo")),
        ("cli generate: dtype float64", lambda: cli_refuses(gen("--dtype", "float64"), "--dtype", "float64")),
        ("cli generate: device-map cuda", lambda: cli_refuses(gen("--device-map", "cuda"), "cuda")),
        ("cli generate: temperature -1", lambda: cli_refuses(gen("--do-sample", "--temperature", "-1"), "temperature")),
        ("cli generate: top-p 5", lambda: cli_refuses(gen("--do-sample", "--top-p", "5"), "top_p")),
        ("cli generate: top-k -3", lambda: cli_refuses(gen("--do-sample", "--top-k", "-3"), "top_k")),
        ("cli generate: json under /proc", lambda: cli_refuses(gen("--json", "/proc/specvlm-sweep.json"), "--json", "/proc/specvlm-sweep.json")),
        ("cli generate: json is a directory", lambda: cli_refuses(gen("--json", str(f["dir"])), "--json", "a_dir", "directory")),
        ("cli generate: json under a file", lambda: cli_refuses(gen("--json", str(f["a_file"] / "x.json")), "--json", "a_file")),
        ("cli generate: json empty path", lambda: cli_refuses(gen("--json", ""), "--json", "empty")),
        ("cli generate: stream with json on stdout", lambda: cli_refuses(gen("--stream", "--json"), "--stream")),
        ("cli: log-level LOUD", lambda: cli_refuses(run_cli(cli.main, ["--log-level", "LOUD", "demo"]), "--log-level", "LOUD")),
        ("cli: unknown flag", lambda: cli_refuses(gen("--frobnicate"), "--frobnicate")),
        ("cli: no command", lambda: cli_refuses(run_cli(cli.main, []), "command")),
        ("cli: unknown command", lambda: cli_refuses(run_cli(cli.main, ["frobnicate"]), "frobnicate")),
        ("cli demo: num-frames 0", lambda: cli_refuses(run_cli(cli.main, ["demo", "--num-frames", "0"]), "--num-frames", "0")),
        ("cli demo: max-new-tokens -1", lambda: cli_refuses(run_cli(cli.main, ["demo", "--max-new-tokens", "-1"]), "--max-new-tokens", "-1")),
        ("cli demo: json under a file", lambda: cli_refuses(run_cli(cli.main, ["demo", "--json", str(f["a_file"] / "x.json")]), "--json", "a_file")),
        ("cli generate: Ctrl-C", lambda: _ctrl_c_generate(base)),
    ]
    return [Case(n, fn) for n, fn in cases]


def _odd_checkpoint(env: Env) -> Path:
    """The embedded target copied under a directory name that is not UTF-8."""
    import shutil

    from specvlm import zoo

    path = env.tmp / os.fsdecode(b"target-\xff")
    if not path.exists():
        shutil.copytree(zoo.checkpoint("target"), path)
    return path


def _ctrl_c_generate(base) -> tuple[str, str]:
    from specvlm import SpecVLM, cli

    real = SpecVLM.generate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    SpecVLM.generate = interrupted
    try:
        run = run_cli(cli.main, base)
    finally:
        SpecVLM.generate = real
    return cli_refuses(run, "interrupted", code=130)


# --------------------------------------------------------------------------- specvlm-eval


def _eval_config(env: Env, name: str, benchmarks: list, methods=("ar",), **extra) -> Path:
    import yaml

    data = {"name": name, "model": {"target": "zoo:target", "torch_dtype": "float32"},
            "generation": {"max_new_tokens": 2, "ignore_eos": True, "warmup": 0},
            "benchmarks": benchmarks, "methods": list(methods), **extra}  # fmt: skip
    path = env.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _caption_layout(env: Env, name: str, lines: list[bytes], videos: int = 2) -> Path:
    """A videodetailcaption-style directory: test.jsonl written byte for byte, and the videos v_0.. ."""
    root = env.tmp / name
    (root / "Test_Videos").mkdir(parents=True)
    for i in range(videos):
        (root / "Test_Videos" / f"v_{i}.mp4").write_bytes(env.files["video"].read_bytes())
    (root / "test.jsonl").write_bytes(b"".join(lines))
    return root


def _row(i: int) -> bytes:
    return json.dumps({"video_name": f"v_{i}", "question": "describe the video .", "answer": "a video ."}).encode()


def _eval_rows(env: Env, name: str, lines: list[bytes], expect_errors: int, videos: int = 2) -> tuple[str, str]:
    """Run specvlm-eval over an annotation file; every line must come back as exactly one row."""
    from specvlm_eval import cli as eval_cli

    root = _caption_layout(env, name, lines, videos)
    cfg = _eval_config(env, name, [{"name": "videodetailcaption", "root": str(root), "num_frames": 4}])
    out = env.tmp / f"{name}-run"
    run = run_cli(eval_cli.main, [str(cfg), "--output", str(out), "--no-progress", "--no-plots"])
    if run.escaped or "Traceback" in run.err:
        return TRACEBACK, (run.escaped or run.err).strip().splitlines()[-1][:300]
    if run.code != 0:
        return UNCLEAR, f"exit {run.code}: {' | '.join(_message_lines(run.err))[:300]}"
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    samples = sum(1 for line in lines if line.strip())
    errors = [r for r in rows if r.get("status") == "error"]
    if len(rows) < samples:
        return LOST, f"{len(rows)} rows for {samples} annotation rows"
    if len(errors) != expect_errors:
        return ALTERED, f"{len(errors)} error rows, expected {expect_errors}: {[r.get('error') for r in errors][:2]}"
    return HANDLED, f"{len(rows)} rows ({len(errors)} error rows, each naming its problem)"


def _eval_interrupted(env: Env) -> tuple[str, str]:
    """Ctrl-C after two rows: exit 130, one line, both rows kept; the same command resumes."""
    from specvlm_eval import cli as eval_cli
    from specvlm_eval import runner

    root = _caption_layout(env, "interrupt", [_row(i) + b"\n" for i in range(3)], videos=3)
    cfg = _eval_config(env, "interrupt", [{"name": "videodetailcaption", "root": str(root), "num_frames": 4}])
    out = env.tmp / "interrupt-run"
    argv = [str(cfg), "--output", str(out), "--no-progress", "--no-plots"]
    real, done = runner._run_one, []

    def stop_after_two(*args, **kwargs):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(real(*args, **kwargs))
        return done[-1]

    runner._run_one = stop_after_two
    try:
        run = run_cli(eval_cli.main, argv)
    finally:
        runner._run_one = real
    outcome = cli_refuses(run, "interrupted", str(out), code=130)
    if outcome[0] != HANDLED:
        return outcome
    kept = (out / "results.jsonl").read_text().splitlines()
    if len(kept) != 2:
        return LOST, f"{len(kept)} rows kept of 2 finished"
    again = run_cli(eval_cli.main, argv)
    rows = (out / "results.jsonl").read_text().splitlines()
    if again.code != 0 or len(rows) != 3:
        return LOST, f"resume: exit {again.code}, {len(rows)} rows"
    return HANDLED, outcome[1]


def eval_cli_cases(env: Env) -> list[Case]:
    from specvlm_eval import cli as eval_cli

    f = env.files
    ok_bench = [{"name": "synthetic", "root": str(env.tmp / "synth"), "num_frames": 8,
                 "synthetic": {"num_samples": 1, "num_frames": 8, "height": 64, "width": 64}}]  # fmt: skip

    def ev(*argv):
        return run_cli(eval_cli.main, list(argv))

    def cfg(name, **extra):
        return str(_eval_config(env, name, ok_bench, **extra))

    not_yaml = env.tmp / "broken.yaml"
    not_yaml.write_text("model: [unclosed\n")
    a_list = env.tmp / "a_list.yaml"
    a_list.write_text("- 1\n- 2\n")
    bom_yaml = env.tmp / "bom.yaml"
    bom_yaml.write_bytes(b"\xef\xbb\xbf" + Path(cfg("bom-src")).read_bytes().replace(b"\n", b"\r\n"))

    cases = [
        ("eval: unknown config name", lambda: cli_refuses(ev("nope"), "nope")),
        ("eval: --output not UTF-8 named", lambda: cli_accepts(ev(cfg("odd-out"), "--output", str(env.tmp / os.fsdecode(b"run-\xff")),
                                                                  "--no-progress", "--no-plots"))),
        ("eval: config is a directory", lambda: cli_refuses(ev(str(f["dir"])), "a_dir", "directory")),
        ("eval: config is not YAML", lambda: cli_refuses(ev(str(not_yaml)), "broken.yaml", "YAML")),
        ("eval: config is a YAML list", lambda: cli_refuses(ev(str(a_list)), "a_list.yaml", "mapping")),
        ("eval: config with BOM and CRLF", lambda: cli_accepts(ev(str(bom_yaml), "--output", str(env.tmp / "bom-run"), "--no-progress", "--no-plots"))),
        ("eval: packaged config from elsewhere", lambda: _in_dir(env.tmp, lambda: cli_refuses(ev("tiny", "--set", "nonsense=1"), "nonsense"))),
        ("eval: --set without =", lambda: cli_refuses(ev(cfg("s1"), "--set", "generation.max_new_tokens"), "key=value")),
        ("eval: --set unknown key", lambda: cli_refuses(ev(cfg("s2"), "--set", "generation.max_new_tokenz=3"), "max_new_tokenz")),
        ("eval: --set bad value", lambda: cli_refuses(ev(cfg("s3"), "--set", "generation.max_new_tokens=-3"), "max_new_tokens", "-3")),
        ("eval: --set not UTF-8", lambda: cli_refuses(ev(cfg("s4"), "--set", "name=" + os.fsdecode(b"\xff")), "--set", "utf-8")),
        ("eval: --set index out of range", lambda: cli_refuses(ev(cfg("s5"), "--set", "benchmarks.7.num_frames=2"), "index 7")),
        ("eval: --limit -1", lambda: cli_refuses(ev(cfg("s6"), "--limit", "-1"), "limit", "-1")),
        ("eval: --limit abc", lambda: cli_refuses(ev(cfg("s7"), "--limit", "abc"), "--limit", "abc")),
        ("eval: --benchmarks unknown", lambda: cli_refuses(ev(cfg("s8"), "--benchmarks", "nope"), "nope")),
        ("eval: --benchmarks not UTF-8", lambda: cli_refuses(ev(cfg("s9"), "--benchmarks", os.fsdecode(b"\xff")), "--benchmarks", "utf-8")),
        ("eval: --output is a file", lambda: cli_refuses(ev(cfg("s10"), "--output", str(f["a_file"])), "a_file")),
        ("eval: --output under a file", lambda: cli_refuses(ev(cfg("s11"), "--output", str(f["a_file"] / "run")), "a_file")),
        ("eval: --summarize missing", lambda: cli_refuses(ev("--summarize", str(env.tmp / "nope-run")), "nope-run")),
        ("eval: --summarize a file", lambda: cli_refuses(ev("--summarize", str(f["a_file"])), "a_file")),
        ("eval: --summarize a dir without a run", lambda: cli_refuses(ev("--summarize", str(f["dir"])), "a_dir")),
        ("eval: --log-level LOUD", lambda: cli_refuses(ev(cfg("s12"), "--log-level", "LOUD"), "--log-level", "LOUD")),
        ("eval: no config", lambda: cli_refuses(ev(), "config")),
        ("eval: unknown flag", lambda: cli_refuses(ev(cfg("s13"), "--frobnicate"), "--frobnicate")),
        ("eval: unknown zoo model", lambda: cli_refuses(ev(cfg("s14"), "--set", "model.target=zoo:nope", "--output", str(env.tmp / "s14-run")), "zoo:nope")),
        ("eval: unknown method", lambda: cli_refuses(ev(cfg("s15"), "--set", "methods.0=frob"), "frob")),
        ("eval: dataset root missing", lambda: cli_refuses(ev(str(_eval_config(env, "s16", [{"name": "mvbench", "root": str(env.tmp / "no-data")}])),
                                                              "--output", str(env.tmp / "s16-run")), "no-data")),
        ("eval rows: annotations with a BOM and CRLF", lambda: _eval_rows(env, "bom", [b"\xef\xbb\xbf" + _row(0) + b"\r\n", _row(1) + b"\r\n"], 0)),
        ("eval rows: a line that is not JSON", lambda: _eval_rows(env, "badline", [_row(0) + b"\n", b"{not json\n", _row(1) + b"\n"], 1)),
        ("eval rows: a row that is not an object", lambda: _eval_rows(env, "notobj", [_row(0) + b"\n", b"[1, 2]\n", _row(1) + b"\n"], 1)),
        ("eval rows: a missing video", lambda: _eval_rows(env, "novideo", [_row(0) + b"\n", _row(5) + b"\n"], 1, videos=1)),
        ("eval rows: a line that is not UTF-8", lambda: _eval_rows(env, "latin1", [_row(0) + b"\n", b'{"video_name": "v_1", "question": "caf\xe9"}\n'], 1)),
        ("eval rows: a row missing its question", lambda: _eval_rows(env, "noquestion", [_row(0) + b"\n", b'{"video_name": "v_1"}\n'], 1)),
        ("eval: Ctrl-C keeps every finished row", lambda: _eval_interrupted(env)),
    ]
    tp_out = ["--output", str(env.tmp / "tp-run")]  # each refusal comes before the directory is made
    torchrun_4 = {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"}
    accelerate_1 = {"ACCELERATE_MIXED_PRECISION": "no", "MASTER_ADDR": "127.0.0.1"}  # asked for several, started one
    cases += [
        ("eval: --tp 0", lambda: cli_refuses(ev(cfg("tp1"), *tp_out, "--tp", "0"), "--tp", ">= 1")),
        ("eval: --tp -2", lambda: cli_refuses(ev(cfg("tp2"), *tp_out, "--tp", "-2"), "--tp", ">= 1")),
        ("eval: --tp 1.5", lambda: cli_refuses(ev(cfg("tp3"), *tp_out, "--tp", "1.5"), "--tp", "'1.5'", "integer")),
        ("eval: --tp 2 without torchrun", lambda: cli_refuses(ev(cfg("tp4"), *tp_out, "--tp", "2"), "--tp 2", "one process",
                                                              "torchrun --nproc_per_node 2")),
        ("eval: --tp 3 of WORLD_SIZE=4", lambda: _with_env(torchrun_4, lambda: cli_refuses(
            ev(cfg("tp5"), *tp_out, "--tp", "3"), "--tp 3", "WORLD_SIZE=4", "1, 2, 4"))),
        ("eval: --tp 2 under accelerate's one process", lambda: _with_env(accelerate_1, lambda: cli_refuses(
            ev(cfg("tp6"), *tp_out, "--tp", "2"), "accelerate", "torchrun --nproc_per_node 2"))),
        ("eval: model.tp_size=0", lambda: cli_refuses(ev(cfg("tp7"), *tp_out, "--set", "model.tp_size=0"), "model.tp_size=0")),
        ("eval: model.tp_size=two", lambda: cli_refuses(ev(cfg("tp8"), *tp_out, "--set", "model.tp_size=two"), "model.tp_size='two'")),
        ("eval: model.tp_size beside device_map", lambda: cli_refuses(ev(cfg("tp9"), *tp_out, "--set", "model.tp_size=2", "--set",
                                                                        "model.device_map=auto"), "model.tp_size=2", "device_map")),
        ("eval: --tp 2 beside --set device_map", lambda: cli_refuses(ev(cfg("tp10"), *tp_out, "--tp", "2", "--set",
                                                                       "model.device_map=auto"), "model.tp_size=2", "device_map")),
    ]
    return [Case(n, fn) for n, fn in cases]


def _with_env(values: dict, fn):
    """``fn()`` with these environment variables set and the launchers' others unset (then as before)."""
    names = set(values) | {"WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "ACCELERATE_MIXED_PRECISION"}
    saved = {k: os.environ.get(k) for k in names}
    for k in names:
        os.environ.pop(k, None)
    os.environ.update(values)
    try:
        return fn()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _in_dir(path: Path, fn):
    old = os.getcwd()
    os.chdir(path)
    try:
        return fn()
    finally:
        os.chdir(old)


# --------------------------------------------------------------------------- real processes


def process_cases(env: Env) -> list[Case]:
    """Real command lines: bytes in argv as the shell passes them, and SIGINT."""
    python = sys.executable
    f = env.files

    def proc(argv: list, timeout=120, interrupt_when: Callable[[], bool] | None = None) -> CliRun:
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, cwd=env.tmp)
        if interrupt_when is not None:
            deadline = time.time() + timeout
            while p.poll() is None and not interrupt_when() and time.time() < deadline:
                time.sleep(0.05)
            p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=timeout)
        return CliRun(p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    gen = [python, "-m", "specvlm.cli", "generate", "--target", "zoo:target", "--video", os.fsencode(str(f["video"])),
           "--max-new-tokens", "2", "--num-frames", "4"]  # fmt: skip
    root = _caption_layout(env, "sigint", [_row(i) + b"\n" for i in range(40)], videos=40)
    cfg = _eval_config(env, "sigint", [{"name": "videodetailcaption", "root": str(root), "num_frames": 4}],
                       methods=("ar", {"name": "specvlm", "drop_rate": 0.5}))  # fmt: skip
    out = env.tmp / "sigint-run"

    def rows() -> int:
        path = out / "results.jsonl"
        return len(path.read_bytes().splitlines()) if path.is_file() else 0

    def sigint_eval() -> tuple[str, str]:
        run = proc([python, "-m", "eval", str(cfg), "--output", str(out), "--no-progress", "--no-plots"], timeout=300,
                   interrupt_when=lambda: rows() >= 3)  # fmt: skip
        outcome = cli_refuses(run, "interrupted", code=130)
        lines = (out / "results.jsonl").read_text().splitlines()
        if outcome[0] == HANDLED and (len(lines) < 3 or not all(json.loads(x)["status"] for x in lines)):
            return LOST, f"{len(lines)} rows on disk after the interrupt"
        return outcome

    cases = [
        ("process: prompt bytes not UTF-8", lambda: cli_refuses(proc(gen + ["--prompt", b"caf\xe9 ?"]), "--prompt", "utf-8")),
        ("process: system bytes not UTF-8", lambda: cli_refuses(proc(gen + ["--prompt", "hi", "--system", b"\xff"]), "--system", "utf-8")),
        ("process: SIGINT during specvlm-eval", sigint_eval),
    ]
    return [Case(n, fn) for n, fn in cases]


def names_cases(env: Env) -> list[Case]:
    """Old spellings of renamed values (pruning ``specvlm``, tree ``specvlm-25``, answer mode ``specvlm``) are
    accepted everywhere and read as the new names; unknown names are refused with the new names listed."""
    from specvlm_eval import cli as eval_cli
    from specvlm import DecodingConfig, cli

    f = env.files
    base = {"video": str(f["video"]), "prompt": "describe the video .", "max_new_tokens": 4, "num_frames": 4,
            "ignore_eos": True, "lazy_draft_after": 0}  # fmt: skip
    argv = ["generate", "--target", "zoo:target", "--draft", "zoo:draft", "--video", str(f["video"]), "--prompt",
            "describe the video .", "--max-new-tokens", "2", "--num-frames", "4"]  # fmt: skip
    ok_bench = [{"name": "synthetic", "root": str(env.tmp / "synth"), "num_frames": 8, "prompt_modes": ["benchmark"],
                 "synthetic": {"num_samples": 1, "num_frames": 8, "height": 64, "width": 64}}]  # fmt: skip

    def same_answer(old: dict, new: dict):
        return lambda: api_accepts(lambda: env.engine.generate(**base, **old).token_ids,
                                   lambda r: None if r == env.engine.generate(**base, **new).token_ids else "another answer")

    def old_config_rows():
        cfg = _eval_config(env, "old-names", ok_bench, methods=("ar", {"name": "specvlm", "pruning": "specvlm", "tree": "specvlm-25"}),
                           answer_extraction="specvlm")  # fmt: skip
        out = env.tmp / "old-names-run"
        run = run_cli(eval_cli.main, [str(cfg), "--output", str(out), "--no-progress", "--no-plots"])

        def check(_run) -> str | None:
            rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
            text = json.dumps(rows)
            if "specvlm-25" in text or "pruning=specvlm" in text or "video_tokens" in text:
                return "an old spelling in the results"
            return None if all(r.get("answer_extraction") == "strict" for r in rows) else "answer_extraction is not 'strict'"

        return cli_accepts(run, check)

    cases = [
        ("names: pruning 'specvlm' is verifier_guided", lambda: api_accepts(lambda: DecodingConfig(pruning="specvlm").pruning,
                                                                           lambda r: None if r == "verifier_guided" else repr(r))),
        ("names: tree 'specvlm-25' is reference-25", lambda: api_accepts(lambda: DecodingConfig(tree="specvlm-25").tree,
                                                                        lambda r: None if r == "reference-25" else repr(r))),
        ("names: generate with the old spellings", same_answer({"pruning": "specvlm", "tree": "specvlm-25"},
                                                               {"pruning": "verifier_guided", "tree": "reference-25"})),
        ("names: unknown pruning lists the new names", lambda: api_refuses(lambda: env.engine.generate(**base, pruning="specvlm-2"),
                                                                          "specvlm-2", "verifier_guided")),
        ("names: unknown tree lists the new names", lambda: api_refuses(lambda: env.engine.generate(**base, tree="specvlm-26"),
                                                                       "specvlm-26", "reference-25")),
        ("names: cli generate --pruning specvlm --tree specvlm-25", lambda: cli_accepts(
            run_cli(cli.main, argv + ["--pruning", "specvlm", "--tree", "specvlm-25"]))),
        ("names: cli generate --pruning nope", lambda: cli_refuses(run_cli(cli.main, argv + ["--pruning", "nope"]), "--pruning",
                                                                   "nope", "verifier_guided")),
        ("names: eval config in the old spellings", old_config_rows),
        ("names: eval unknown answer_extraction", lambda: cli_refuses(run_cli(eval_cli.main, [
            str(_eval_config(env, "bad-mode", ok_bench)), "--set", "answer_extraction=specvlm2"]), "answer_extraction", "strict")),
        ("names: eval unknown pruning", lambda: cli_refuses(run_cli(eval_cli.main, [
            str(_eval_config(env, "bad-pruning", ok_bench)), "--set", "methods.0={name: specvlm, pruning: nope}"]), "nope",
            "verifier_guided")),
    ]
    return [Case(n, fn) for n, fn in cases]


# --------------------------------------------------------------------------- main


GROUPS = (image_cases, frame_cases, conversation_cases, settings_cases, drafting_cases, loading_cases, specvlm_cli_cases,
          bench_cli_cases, memory_cli_cases, eval_cli_cases, process_cases, names_cases)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, metavar="REGEX", help="run only the cases whose name matches")
    parser.add_argument("--list", action="store_true", help="list the case names and exit")
    parser.add_argument("--quiet", action="store_true", help="print only the cases not handled and the summary")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the cases' own warnings are not outcomes
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="specvlm-sweep-") as tmp:
        env = Env(Path(tmp))
        make_files(env)
        from specvlm import cli

        cli.TINY_CACHE = str(env.tmp / "tiny-cache")  # tiny: models are built here, not in the home directory
        cases = [c for group in GROUPS for c in group(env)]
        if args.only:
            cases = [c for c in cases if re.search(args.only, c.name)]
        if args.list:
            print("\n".join(c.name for c in cases))
            return 0
        counts = {o: 0 for o in OUTCOMES}
        started = time.time()
        for case in cases:
            t0 = time.time()
            try:
                outcome, detail = case.run()
            except BaseException as err:  # noqa: BLE001 - a case that breaks the sweep itself
                outcome, detail = TRACEBACK, f"the case itself failed: {type(err).__name__}: {_one_line(err)[:200]}"
            counts[outcome] += 1
            if not args.quiet or outcome != HANDLED:
                print(f"{outcome:17s} {time.time() - t0:5.1f}s  {case.name}: {detail}", flush=True)
    handled = counts[HANDLED]
    print(f"\n{len(cases)} cases in {time.time() - started:.0f} s: {handled} handled, {len(cases) - handled} not handled ("
          + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES[1:]) + ")")
    return 0 if handled == len(cases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
