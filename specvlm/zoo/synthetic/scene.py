"""Scene sampling: the objects of one synthetic video, their attributes, timeline and paths.

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

Deliberately not done: no camera motion, rotation, scale change, or occlusion reasoning.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from specvlm.zoo.synthetic.records import ObjectTrack
from specvlm.zoo.synthetic.world import _EXTENT, COLOURS, DIRECTIONS, SHAPES, SIZES, SPEEDS

logger = logging.getLogger(__name__)

#: Radius of the shape's defining circle, as a fraction of the shorter frame side.
_SIZE_FRAC = {"small": 0.075, "large": 0.15}
#: Speed in (shorter frame side) per (video length), i.e. px/frame = frac * side / T.
_SPEED_FRAC = {"slowly": 0.2, "quickly": 0.6}
_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

_MIN_GAP_FRAC, _MAX_GAP_FRAC = 0.14, 0.22  # gap between consecutive appearances
_MAX_DUR_FRAC = 0.8  # longest visible interval
_OVERLAP_OK = 0.9  # accept a placement when centre distance >= this * (extent_i + extent_j)
_PLACEMENT_TRIES = 200
_POSITION_TRIES = 50  # positions tried per draw of the attributes


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
