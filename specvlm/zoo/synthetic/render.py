"""Rendering: the frames of a synthetic video, a static grey textured background with the objects
drawn on it, each in its solid colour (later objects on top).

Deliberately not done: no lighting, noise over objects or anti-aliasing; an object's pixels are exactly
its colour.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from specvlm.zoo.synthetic.records import ObjectTrack


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
