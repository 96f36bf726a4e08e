"""Is a divergence from the reference tokens a near-tie or a bug? Classify it.

In float32 SpecVLM's tokens are identical to the target's own ``generate()``. In bfloat16 or float16
they may not be: verifying k drafted tokens in one forward sums in another order than k one-token
forwards, so the logits differ by rounding, and where the reference's two best tokens score within
rounding of each other either can come out. Such a divergence is a **near-tie** of the reference's own
scores, not a bug. A divergence the reference preferred by more than rounding explains is a
**mismatch**: a bug, never accepted silently.

At the first position where the two runs differ, the margin is the reference's score of its own token
minus its score of the other run's token (the scores its decision was made on: the logits after the
generation config's processors). The tolerance is :data:`NEAR_TIE_ULPS` units in the last place of the
model's dtype at the magnitude of the largest score there: one unit is the spacing of representable
values near that magnitude, the resolution at which the logits were computed.

What this module deliberately does not do: run models (the engine's :meth:`~specvlm.SpecVLM.audit`
computes the reference scores at the divergence).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

#: A divergence within this many units in the last place (of the dtype, at the scores' magnitude) is a
#: near-tie. Rounding accumulates over the layers of a forward, so one unit is too strict; a margin of
#: several units is already a clear preference that rounding of a few operations cannot flip.
NEAR_TIE_ULPS = 4

VERDICTS = ("identical", "near-tie", "mismatch")


@dataclass(frozen=True)
class Divergence:
    """How a run's tokens compare with the reference's.

    verdict: "identical" | "near-tie" | "mismatch"
    position: index (among the new tokens) of the first differing token; None when identical
    expected, got: the reference's and the run's token there (None where a run has ended)
    margin: the reference's score of ``expected`` minus its score of ``got`` at ``position``
    tolerance: the near-tie tolerance at ``position`` for the dtype
    dtype: the dtype the tolerance is for
    """

    verdict: str
    position: int | None = None
    expected: int | None = None
    got: int | None = None
    margin: float | None = None
    tolerance: float | None = None
    dtype: str | None = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict={self.verdict!r}; expected one of {', '.join(VERDICTS)}")

    @property
    def identical(self) -> bool:
        return self.verdict == "identical"

    @property
    def acceptable(self) -> bool:
        """Identical, or a near-tie: what low-precision decoding may legitimately produce."""
        return self.verdict != "mismatch"

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if self.identical:
            return "identical"
        if self.margin is None:
            return f"{self.verdict} at token {self.position} (expected {self.expected}, got {self.got})"
        return (
            f"{self.verdict} at token {self.position}: expected {self.expected}, got {self.got}, reference margin "
            f"{self.margin:.4g} (tolerance {self.tolerance:.4g} for {self.dtype})"
        )


def first_difference(expected: Sequence[int], got: Sequence[int]) -> int | None:
    """Index of the first position where the two token lists differ (in a token or in having one); None if equal."""
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return i
    return None if len(expected) == len(got) else min(len(expected), len(got))


def tolerance(scores: torch.Tensor, dtype: torch.dtype) -> float:
    """:data:`NEAR_TIE_ULPS` units in the last place of ``dtype`` at the magnitude of the largest finite |score|."""
    if not dtype.is_floating_point:
        raise ValueError(f"dtype={dtype} is not a floating-point dtype")
    finite = scores[torch.isfinite(scores)].float()
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    finfo = torch.finfo(dtype)
    ulp = 2.0 ** math.floor(math.log2(scale)) * finfo.eps if scale >= finfo.tiny else finfo.tiny
    return NEAR_TIE_ULPS * ulp


def classify(
    expected: Sequence[int],
    got: Sequence[int],
    scores_at: Callable[[int], torch.Tensor] | Sequence[torch.Tensor],
    dtype: torch.dtype,
) -> Divergence:
    """Classify ``got`` against the reference tokens ``expected``.

    ``scores_at``: the reference's scores (V,) at new-token position i, as a callable of i or a sequence
    (e.g. stock ``generate(..., output_scores=True, return_dict_in_generate=True).scores``, rows of batch
    1 are accepted too); only the first differing position is read. ``dtype``: the models' dtype.
    A run that ends where the other goes on (a different length) is a mismatch: both runs stop on the
    same tokens and budgets.
    """
    expected, got = [int(t) for t in expected], [int(t) for t in got]
    i = first_difference(expected, got)
    if i is None:
        return Divergence("identical")
    want = expected[i] if i < len(expected) else None
    have = got[i] if i < len(got) else None
    if want is None or have is None:
        return Divergence("mismatch", position=i, expected=want, got=have, dtype=str(dtype))
    scores = scores_at(i) if callable(scores_at) else scores_at[i]
    scores = scores.reshape(-1).float()
    margin = float(scores[want] - scores[have])
    tol = tolerance(scores, dtype)
    verdict = "near-tie" if math.isfinite(margin) and margin <= tol else "mismatch"
    return Divergence(verdict, position=i, expected=want, got=have, margin=margin, tolerance=tol, dtype=str(dtype))


def extend_inputs(inputs, tokens: Sequence[int]) -> dict:
    """The processor's ``inputs`` (batch 1) followed by ``tokens`` as text: ``input_ids`` extended,
    ``attention_mask`` with ones, and per-token type ids (``mm_token_type_ids``, ``token_type_ids``) with
    zeros (text); everything else (pixels, grids) as it was."""
    ids = inputs["input_ids"]
    length = ids.shape[-1]
    extra = torch.tensor([list(tokens)], dtype=ids.dtype, device=ids.device)
    out = dict(inputs)
    for key, value in inputs.items():
        if not (isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (1, length)):
            continue
        if key == "input_ids":
            tail = extra
        elif key == "attention_mask":
            tail = torch.ones_like(extra, dtype=value.dtype)
        elif key.endswith("token_type_ids"):
            tail = torch.zeros_like(extra, dtype=value.dtype)
        else:
            raise ValueError(f"inputs[{key!r}] is a per-token tensor of unknown meaning; cannot extend it with text")
        out[key] = torch.cat([value, tail], dim=-1)
    return out
