"""The value every pruning strategy returns.

Does: define the frozen ``PruningResult`` and check, at construction, the
invariants that hold for any strategy (1-D long index tensors, ``kept`` strictly
increasing, ``stage1`` a sorted subset of ``kept``, ``budget == len(kept)``).

Does not: know ``N`` (range checks against the grid live in ``registry.select``),
choose tokens, or map indices into a model's sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _check_index_vector(name: str, t: object) -> None:
    """Raise ``ValueError`` unless ``t`` is a strictly increasing 1-D long tensor."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.long or t.dim() != 1:
        desc = (t.dtype, tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t)
        raise ValueError(f"{name} must be a 1-D torch.long tensor, got {desc}")
    if t.numel() > 1 and not bool((t[1:] > t[:-1]).all()):
        raise ValueError(f"{name} must be sorted ascending and unique, got {t.tolist()}")


# eq=False: a generated __eq__ would compare tensors and raise on truth-testing.
@dataclass(frozen=True, eq=False)
class PruningResult:
    """Indices of the video tokens the draft model keeps.

    Attributes:
        kept: ``(K,)`` long, sorted ascending, unique; indices into the
            flattened ``(T, H, W)`` video grid, i.e. into ``[0, N)``.
        stage1: ``(m,)`` long, sorted; the subset of ``kept`` chosen by Stage I
            of ``verifier_guided`` (empty for every other strategy).
        budget: ``K == len(kept)``.
    """

    kept: torch.Tensor  # (K,) long
    stage1: torch.Tensor  # (m,) long, m <= K
    budget: int

    def __post_init__(self) -> None:
        _check_index_vector("kept", self.kept)
        _check_index_vector("stage1", self.stage1)
        if self.budget != self.kept.numel():
            raise ValueError(
                f"budget={self.budget} does not match len(kept)={self.kept.numel()}"
            )
        if self.stage1.device != self.kept.device:
            raise ValueError(
                f"stage1 is on {self.stage1.device} but kept is on {self.kept.device}"
            )
        if self.stage1.numel() and not bool(torch.isin(self.stage1, self.kept).all()):
            raise ValueError(
                f"stage1 {self.stage1.tolist()} is not a subset of kept {self.kept.tolist()}"
            )
