"""Baseline pruning strategies: ``uniform``, ``random``, ``attention``, ``window``, ``none``.

Does: register the comparison strategies with the registry and provide
``evenly_spaced``, the spacing rule shared with ``verifier_guided`` Stage II. Every
strategy computes on CPU (exact, device-independent) and returns indices on the
output device chosen by ``inputs.output_device``.

Does not: implement the paper's two-stage method (see ``verifier_guided``), validate
the grid or drop_rate (``registry.select`` does), or modify its inputs.
"""

from __future__ import annotations

import numbers

import torch

from specvlm_pruning.inputs import CPU, check_scores, num_tokens, output_device
from specvlm_pruning.registry import register
from specvlm_pruning.result import PruningResult

WINDOW_CHOICES = ("front", "middle", "back")


def evenly_spaced(r: int, c: int) -> torch.Tensor:
    """``(c,)`` long CPU positions ``floor((i + 0.5) * r / c)`` for ``i < c``, with ``0 <= c <= r``.

    Consecutive picks are at least ``r / c >= 1`` apart, so they are unique and
    strictly increasing; integer arithmetic keeps the rule exact.
    """
    if not 0 <= c <= r:
        raise ValueError(f"cannot pick c={c} evenly spaced items out of r={r}")
    i = torch.arange(c, dtype=torch.long)  # (c,)
    return torch.div((2 * i + 1) * r, 2 * c, rounding_mode="floor") if c else i


def empty_indices(device: torch.device) -> torch.Tensor:
    """``(0,)`` long tensor on ``device``."""
    return torch.empty(0, dtype=torch.long, device=device)


def finish(kept: torch.Tensor, device: torch.device) -> PruningResult:
    """Wrap sorted ``(K,)`` CPU indices as a Stage-I-free result on ``device``."""
    kept = kept.to(device)  # (K,)
    return PruningResult(kept=kept, stage1=empty_indices(device), budget=kept.numel())


@register("uniform")
def uniform(scores, grid, k, *, stage1_mass, seed, window) -> PruningResult:
    """K evenly spaced indices over ``[0, N)`` (the ``evenly_spaced`` rule)."""
    return finish(evenly_spaced(num_tokens(grid), k), output_device(scores))


@register("random")
def random_(scores, grid, k, *, stage1_mass, seed, window) -> PruningResult:
    """K indices drawn without replacement by a CPU ``torch.Generator`` seeded with ``seed``, sorted."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an int, got {seed!r}")
    gen = torch.Generator(device=CPU)
    gen.manual_seed(int(seed))
    perm = torch.randperm(num_tokens(grid), generator=gen, device=CPU)  # (N,)
    kept, _ = torch.sort(perm[:k])  # (K,)
    return finish(kept, output_device(scores))


def top_k(exact_scores: torch.Tensor, k: int) -> torch.Tensor:
    """``(k,)`` indices of the largest scores in descending-score order; ties -> lower index first."""
    order = torch.argsort(exact_scores, descending=True, stable=True)  # (N,)
    return order[:k]


@register("attention", needs_scores=True)
def attention(scores, grid, k, *, stage1_mass, seed, window) -> PruningResult:
    """Top-K tokens by verifier score (stable: ties go to the lower index), sorted."""
    exact = check_scores(scores, num_tokens(grid), "attention")  # (N,) float64 CPU
    kept, _ = torch.sort(top_k(exact, k))  # (K,)
    return finish(kept, output_device(scores))


@register("window")
def window_(scores, grid, k, *, stage1_mass, seed, window) -> PruningResult:
    """A contiguous span of K tokens in flattened order: front, middle (start (N-K)//2) or back."""
    n = num_tokens(grid)
    if window == "front":
        start = 0
    elif window == "middle":
        start = (n - k) // 2
    elif window == "back":
        start = n - k
    else:
        raise ValueError(f"window must be one of {list(WINDOW_CHOICES)}, got {window!r}")
    return finish(torch.arange(start, start + k, dtype=torch.long), output_device(scores))


@register("none")
def none_(scores, grid, k, *, stage1_mass, seed, window) -> PruningResult:
    """Keep all N tokens (K = N); drop_rate is still validated by ``select``."""
    return finish(torch.arange(num_tokens(grid), dtype=torch.long), output_device(scores))
