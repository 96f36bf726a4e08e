"""SpecVLM's two-stage verifier-guided video-token pruning (strategy ``verifier_guided``; its old
spelling ``specvlm`` is still accepted).

Reference: Ji et al., "SpecVLM: Enhancing Speculative Decoding of Video LLMs via
Verifier-Guided Token Pruning", EMNLP 2025.

Definition. The video has ``N = T * H * W`` tokens, flattened in ``(t, h, w)``
row-major order, with verifier attention mass ``s`` (``(N,)``, finite, >= 0).
The draft model keeps a budget of ``K = floor(N * (1 - drop_rate))`` tokens
(at least 1), ``drop_rate`` in ``[0, 1)``.

* Stage I (attention-guided): sort ``s`` descending (stable, so ties go to the
  lower index) and keep the smallest top set whose score mass is
  ``>= lambda * sum(s)``, where ``lambda = stage1_mass`` in ``[0, 1]``; the set
  is capped at ``K`` tokens. ``lambda = 0`` (or ``sum(s) = 0``) gives an empty
  Stage I.
* Stage II (uniform): fill the remaining ``c = K - |Stage I|`` slots with
  evenly spaced picks over the ``R = N - |Stage I|`` not-yet-kept tokens in
  their original flattened order: the picks are positions
  ``floor((i + 0.5) * R / c)``, ``i = 0 .. c-1``, which are unique since
  ``R >= c``. With several runs (the images and videos of one prompt,
  flattened one after another), the ``c`` slots are first shared over the
  runs in proportion to their not-yet-kept tokens (largest remainders get
  the leftovers, ties to the earlier run) and spread evenly within each run.

The result is the sorted union (``kept``), with the Stage I subset reported
separately (``stage1``). Score arithmetic is done in float64 on CPU so the
choice is identical for every input device and float dtype; indices are
returned on the scores' device.

Does not: compute the verifier's attention scores, validate the grid or
drop_rate (``registry.select`` does), or modify the caller's tensors.
"""

from __future__ import annotations

import math
import numbers

import torch

from specvlm_pruning.inputs import check_scores, num_tokens, output_device, runs_of
from specvlm_pruning.registry import register
from specvlm_pruning.result import PruningResult
from specvlm_pruning.strategies import evenly_spaced, top_k

STAGE1_MASS_RANGE = "[0, 1]"


def check_stage1_mass(stage1_mass: object) -> float:
    """Return ``lambda = stage1_mass`` as a float in ``[0, 1]``, else raise ``ValueError``."""
    if (
        isinstance(stage1_mass, bool)
        or not isinstance(stage1_mass, numbers.Real)
        or math.isnan(stage1_mass)
        or not 0 <= stage1_mass <= 1
    ):
        raise ValueError(f"stage1_mass must be in {STAGE1_MASS_RANGE}, got {stage1_mass!r}")
    return float(stage1_mass)


def stage1_size(exact_scores: torch.Tensor, stage1_mass: float, k: int) -> int:
    """Smallest ``m`` whose top-``m`` score mass is ``>= stage1_mass * total``, capped at ``k``.

    ``exact_scores`` is ``(N,)`` float64, non-negative.
    """
    ranked, _ = torch.sort(exact_scores, descending=True, stable=True)  # (N,)
    prefix = torch.cumsum(ranked, dim=0)  # (N,) mass of the top 1..N tokens
    # The total is the last prefix sum, so lambda = 1 is always reachable.
    threshold = stage1_mass * float(prefix[-1])
    if threshold <= 0:
        return 0
    # prefix is non-decreasing; the top-m set with m = 1 + #(prefix < threshold)
    # is the first to reach the threshold.
    m = 1 + int((prefix < threshold).sum())
    return min(m, k)


def share(c: int, sizes: list[int]) -> list[int]:
    """Split ``c`` slots over runs with ``sizes`` remaining tokens (``c <= sum(sizes)``) in proportion:
    ``floor(c * r_j / R)`` each, then one more to the largest remainders (ties: the earlier run)."""
    total = sum(sizes)
    if not total:
        return [0] * len(sizes)
    base = [c * r // total for r in sizes]
    order = sorted(range(len(sizes)), key=lambda j: (-(c * sizes[j] % total), j))
    for j in order[: c - sum(base)]:
        base[j] += 1
    return base


def two_stage(
    exact_scores: torch.Tensor, k: int, stage1_mass: float, run_sizes: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(kept, stage1)``: sorted ``(K,)`` and ``(m,)`` long CPU indices.

    ``run_sizes``: tokens of each run (image / video) in flattened order, summing to N; Stage II's slots
    are shared over the runs in proportion to their remaining tokens and spread evenly within each."""
    n = exact_scores.numel()
    m = stage1_size(exact_scores, stage1_mass, k)
    stage1, _ = torch.sort(top_k(exact_scores, m))  # (m,)
    taken = torch.zeros(n, dtype=torch.bool)  # (N,)
    taken[stage1] = True
    picks = []
    starts = [0]
    for size in run_sizes or [n]:
        starts.append(starts[-1] + size)
    remaining = [torch.nonzero(~taken[a:b]).flatten() + a for a, b in zip(starts, starts[1:])]  # per run, flattened order
    for rest, c in zip(remaining, share(k - m, [r.numel() for r in remaining])):
        picks.append(rest[evenly_spaced(rest.numel(), c)])
    kept, _ = torch.sort(torch.cat([stage1, *picks]))  # (K,)
    return kept, stage1


@register("verifier_guided", needs_scores=True, aliases=("specvlm",))
def verifier_guided(scores, grid, k, *, stage1_mass, seed, window) -> PruningResult:
    """Two-stage verifier-guided pruning; see the module docstring for the definition."""
    lam = check_stage1_mass(stage1_mass)
    exact = check_scores(scores, num_tokens(grid), "verifier_guided")  # (N,) float64 CPU
    kept, stage1 = two_stage(exact, k, lam, [num_tokens(run) for run in runs_of(grid)])
    device = output_device(scores)
    return PruningResult(kept=kept.to(device), stage1=stage1.to(device), budget=k)
