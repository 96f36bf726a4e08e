"""Strategy registry and the public entry points ``select`` / ``prune``.

Does: keep the name -> strategy table (``register``, ``available``) and the old
spellings each name still accepts (``canonical``: ``"specvlm"`` is
``"verifier_guided"``), validate the arguments shared by every strategy
(strategy name, grid, drop_rate -> budget K), call the strategy, and check that
its result lies in ``[0, N)`` and on the right device.

Does not: implement any strategy (see ``strategies`` and ``verifier_guided``),
or know anything about models, tokenizers or sequences.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from specvlm_pruning.budget import budget as compute_budget
from specvlm_pruning.inputs import check_grid, num_tokens, output_device
from specvlm_pruning.result import PruningResult

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
_ALIASES: dict[str, str] = {}  # an old spelling -> the registered name it stands for


def register(name: str, *, needs_scores: bool = False, aliases: tuple[str, ...] = ()) -> Callable[[Strategy], Strategy]:
    """Decorator registering ``fn(scores, grid, k, *, stage1_mass, seed, window)`` as ``name``.

    ``needs_scores`` marks strategies that read the verifier's attention scores, so that callers can
    skip the score capture for the others (see :func:`needs_scores`). ``aliases`` are old spellings of
    ``name`` that are still accepted (:func:`canonical` turns them into ``name``); :func:`available`
    lists only the names.

    Raises:
        ValueError: ``name`` or an alias is not a non-empty str, or is already registered (as a name or an alias).
    """
    for label in (name, *aliases):
        if not isinstance(label, str) or not label:
            raise ValueError(f"strategy name must be a non-empty str, got {label!r}")
        if label in _REGISTRY or label in _ALIASES:
            raise ValueError(f"pruning strategy {label!r} is already registered")

    def decorator(fn: Strategy) -> Strategy:
        for label in (name, *aliases):
            if label in _REGISTRY or label in _ALIASES:
                raise ValueError(f"pruning strategy {label!r} is already registered")
        _REGISTRY[name] = fn
        _ALIASES.update(dict.fromkeys(aliases, name))
        if needs_scores:
            _NEEDS_SCORES.add(name)
        return fn

    return decorator


def available() -> list[str]:
    """Names of the registered strategies, sorted (old spellings, see :func:`aliases`, are not listed)."""
    return sorted(_REGISTRY)


def aliases() -> dict[str, str]:
    """{old spelling: the registered name it stands for}, e.g. ``{"specvlm": "verifier_guided"}``."""
    return dict(_ALIASES)


def canonical(strategy):
    """``strategy`` under its registered name: an old spelling gives the name it stands for; anything
    else (a name, an unknown value) is returned unchanged, for the caller's own validation."""
    return _ALIASES.get(strategy, strategy) if isinstance(strategy, str) else strategy


def needs_scores(strategy: str) -> bool:
    """Whether ``strategy`` (a name or an old spelling) reads the verifier's attention scores; unknown
    names raise ValueError."""
    strategy = canonical(strategy)
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

    ``strategy`` is a registered name or an old spelling of one (see :func:`canonical`).

    Raises:
        ValueError: unknown strategy (the message lists ``available()``), bad
            grid or drop_rate, or a strategy-specific argument error.
    """
    strategy = canonical(strategy)
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
