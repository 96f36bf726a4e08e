"""Strategy registry and the public entry points ``select`` / ``prune``.

Does: keep the name -> strategy table (``register``, ``available``), validate
the arguments shared by every strategy (strategy name, grid, drop_rate -> budget
K), call the strategy, and check that its result lies in ``[0, N)`` and on the
right device.

Does not: implement any strategy (see ``strategies`` and ``specvlm``), or know
anything about models, tokenizers or sequences.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from pruning.budget import budget as compute_budget
from pruning.inputs import check_grid, num_tokens, output_device
from pruning.result import PruningResult

DEFAULT_STAGE1_MASS = 0.4  # lambda in the paper
DEFAULT_SEED = 0
DEFAULT_WINDOW = "middle"


class Strategy(Protocol):
    def __call__(
        self,
        scores: torch.Tensor | None,  # (N,) float, or None
        grid: tuple[int, int, int],
        k: int,
        *,
        stage1_mass: float,
        seed: int,
        window: str,
    ) -> PruningResult: ...


_REGISTRY: dict[str, Strategy] = {}
_NEEDS_SCORES: set[str] = set()


def register(name: str, *, needs_scores: bool = False) -> Callable[[Strategy], Strategy]:
    """Decorator registering ``fn(scores, grid, k, *, stage1_mass, seed, window)`` as ``name``.

    ``needs_scores`` marks strategies that read the verifier's attention scores, so that callers can
    skip the score capture for the others (see :func:`needs_scores`).

    Raises:
        ValueError: ``name`` is not a non-empty str or is already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"strategy name must be a non-empty str, got {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"pruning strategy {name!r} is already registered")

    def decorator(fn: Strategy) -> Strategy:
        if name in _REGISTRY:
            raise ValueError(f"pruning strategy {name!r} is already registered")
        _REGISTRY[name] = fn
        if needs_scores:
            _NEEDS_SCORES.add(name)
        return fn

    return decorator


def available() -> list[str]:
    """Names of the registered strategies, sorted."""
    return sorted(_REGISTRY)


def needs_scores(strategy: str) -> bool:
    """Whether ``strategy`` reads the verifier's attention scores; unknown names raise ValueError."""
    if strategy not in _REGISTRY:
        raise ValueError(f"unknown pruning strategy {strategy!r}; available: {available()}")
    return strategy in _NEEDS_SCORES


def select(
    strategy: str,
    scores: torch.Tensor | None,  # (N,) float verifier attention mass, or None
    grid,  # (T, H, W), or a list of (T, H, W) runs
    drop_rate: float,
    *,
    stage1_mass: float = DEFAULT_STAGE1_MASS,
    seed: int = DEFAULT_SEED,
    window: str = DEFAULT_WINDOW,
) -> PruningResult:
    """Choose which of the ``N = T * H * W`` video tokens the draft model keeps.

    ``grid`` may also be a list of grids: the runs of one prompt (its images and video), flattened one
    after another; N and the budget are then over all of them.

    Returns a ``PruningResult`` whose ``kept`` (``(K,)`` long, sorted, unique,
    in ``[0, N)``) lives on ``scores.device``, or on CPU when ``scores`` is None.
    ``K = budget(N, drop_rate)`` for every strategy except ``none`` (K = N).

    Raises:
        ValueError: unknown strategy (the message lists ``available()``), bad
            grid or drop_rate, or a strategy-specific argument error.
    """
    fn = _REGISTRY.get(strategy) if isinstance(strategy, str) else None
    if fn is None:
        raise ValueError(f"unknown pruning strategy {strategy!r}; available: {available()}")
    dims = check_grid(grid)
    n = num_tokens(dims)
    k = compute_budget(n, drop_rate)
    device = output_device(scores)
    result = fn(scores, dims, k, stage1_mass=stage1_mass, seed=seed, window=window)
    if not isinstance(result, PruningResult):
        raise ValueError(
            f"strategy {strategy!r} returned {type(result).__name__}, not PruningResult"
        )
    if result.kept.device != device:
        raise ValueError(
            f"strategy {strategy!r} returned indices on {result.kept.device}, expected {device}"
        )
    if result.kept.numel() and not (0 <= int(result.kept[0]) and int(result.kept[-1]) < n):
        raise ValueError(f"strategy {strategy!r} returned indices outside [0, {n})")
    return result


def prune(
    strategy: str,
    scores: torch.Tensor | None,  # (N,) float, or None
    grid: tuple[int, int, int],
    drop_rate: float,
    *,
    stage1_mass: float = DEFAULT_STAGE1_MASS,
    seed: int = DEFAULT_SEED,
    window: str = DEFAULT_WINDOW,
) -> torch.Tensor:
    """``select(...).kept``: ``(K,)`` long, sorted indices of the kept video tokens."""
    return select(
        strategy, scores, grid, drop_rate, stage1_mass=stage1_mass, seed=seed, window=window
    ).kept
