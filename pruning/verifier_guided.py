"""SpecVLM's two-stage verifier-guided video-token pruning (strategy ``specvlm``).

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
  ``R >= c``.

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

from pruning.inputs import check_scores, num_tokens, output_device
from pruning.registry import register
from pruning.result import PruningResult
from pruning.strategies import evenly_spaced, top_k

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


def two_stage(exact_scores: torch.Tensor, k: int, stage1_mass: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(kept, stage1)``: sorted ``(K,)`` and ``(m,)`` long CPU indices."""
    n = exact_scores.numel()
    m = stage1_size(exact_scores, stage1_mass, k)
    stage1, _ = torch.sort(top_k(exact_scores, m))  # (m,)
    taken = torch.zeros(n, dtype=torch.bool)  # (N,)
    taken[stage1] = True
    remaining = torch.nonzero(~taken).flatten()  # (R,) with R = N - m, in flattened order
    stage2 = remaining[evenly_spaced(remaining.numel(), k - m)]  # (K - m,)
    kept, _ = torch.sort(torch.cat([stage1, stage2]))  # (K,)
    return kept, stage1


@register("specvlm", needs_scores=True)
def specvlm(scores, grid, k, *, stage1_mass, seed, window) -> PruningResult:
    """Two-stage verifier-guided pruning; see the module docstring for the definition."""
    lam = check_stage1_mass(stage1_mass)
    exact = check_scores(scores, num_tokens(grid), "specvlm")  # (N,) float64 CPU
    kept, stage1 = two_stage(exact, k, lam)
    device = output_device(scores)
    return PruningResult(kept=kept.to(device), stage1=stage1.to(device), budget=k)
