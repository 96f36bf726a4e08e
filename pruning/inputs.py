"""Validation of the inputs shared by all strategies: the grid and the scores.

Does: check that ``grid`` is three positive ints ``(T, H, W)``, or a list of
such grids (the runs of a prompt with several images / videos, flattened one
after another), and return ``N`` (``T * H * W`` summed over the runs); check verifier scores (1-D floating tensor of length ``N``,
finite, non-negative) and return a detached float64 CPU copy for exact,
device-independent arithmetic; pick the device output indices live on.

Does not: compute budgets, select tokens, or modify the caller's tensors.
"""

from __future__ import annotations

import numbers

import torch

GRID_DIMS = 3  # (T, H, W)
CPU = torch.device("cpu")


def _check_one_grid(grid: object, original: object) -> tuple[int, int, int]:
    try:
        dims = tuple(grid)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"grid must be 3 positive ints (T, H, W) or a list of such grids, got {original!r}") from None
    if len(dims) != GRID_DIMS or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in dims
    ):
        raise ValueError(f"grid must be 3 positive ints (T, H, W) or a list of such grids, got {original!r}")
    t, h, w = (int(d) for d in dims)
    return t, h, w


def is_runs(grid: object) -> bool:
    """Whether ``grid`` is a sequence of grids (several runs) rather than one (T, H, W)."""
    try:
        first = next(iter(grid))  # type: ignore[call-overload]
    except (TypeError, StopIteration):
        return False
    return not isinstance(first, numbers.Integral)


def check_grid(grid: object):
    """Return ``grid`` as a ``(T, H, W)`` tuple of positive ints, or, for several runs (images and videos
    of one prompt, flattened one after another), a non-empty tuple of such tuples; else raise ``ValueError``."""
    if is_runs(grid):
        return tuple(_check_one_grid(g, grid) for g in grid)  # type: ignore[union-attr]
    return _check_one_grid(grid, grid)


def runs_of(grid) -> tuple[tuple[int, int, int], ...]:
    """The runs of a validated grid: ``(grid,)`` for one (T, H, W), the grids themselves for several."""
    return tuple(grid) if is_runs(grid) else (grid,)


def num_tokens(grid) -> int:
    """``N = T * H * W`` for a validated grid, summed over the runs of several."""
    return sum(t * h * w for t, h, w in runs_of(grid))


def output_device(scores: torch.Tensor | None) -> torch.device:
    """Device for output indices: that of ``scores``, or CPU when there are none."""
    if scores is None:
        return CPU
    if not isinstance(scores, torch.Tensor):
        raise ValueError(f"scores must be a torch.Tensor or None, got {type(scores).__name__}")
    return scores.device


def check_scores(scores: torch.Tensor | None, n: int, strategy: str) -> torch.Tensor:
    """Validate verifier scores and return a ``(N,)`` float64 CPU copy.

    Raises:
        ValueError: ``scores`` is None, not a 1-D floating tensor, of length
            other than ``n``, or contains NaN, inf or negative values.
    """
    if scores is None:
        raise ValueError(f"strategy {strategy!r} needs verifier scores, got scores=None")
    if not isinstance(scores, torch.Tensor):
        raise ValueError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 1 or not scores.is_floating_point():
        raise ValueError(
            f"scores must be a 1-D floating tensor, got dtype={scores.dtype} "
            f"shape={tuple(scores.shape)}"
        )
    if scores.numel() != n:
        raise ValueError(
            f"scores has length {scores.numel()} but the grid has N={n} video tokens"
        )
    exact = scores.detach().to(device=CPU, dtype=torch.float64, copy=True)  # (N,)
    if not bool(torch.isfinite(exact).all()):
        bad = torch.nonzero(~torch.isfinite(exact)).flatten().tolist()
        raise ValueError(f"scores must be finite; NaN/inf at indices {bad}")
    if bool((exact < 0).any()):
        bad = torch.nonzero(exact < 0).flatten().tolist()
        raise ValueError(f"scores must be non-negative; negative at indices {bad}")
    return exact
