"""Token budget: how many video tokens the draft model keeps.

Does: compute ``K = floor(N * (1 - drop_rate))`` exactly, in decimal semantics
(``drop_rate`` is read through ``fractions.Fraction(str(drop_rate))``, so
``N=100, drop_rate=0.9`` gives 10 and not 9 from binary float error), with a
floor of one token, and validate both arguments.

Does not: look at scores, choose which tokens to keep, or touch tensors.
"""

from __future__ import annotations

import math
import numbers
from decimal import Decimal
from fractions import Fraction

#: Fewest video tokens the draft model ever keeps (when N >= 1).
MIN_KEPT = 1
#: Allowed range of ``drop_rate``, as written in error messages.
DROP_RATE_RANGE = "[0, 1)"


def check_drop_rate(drop_rate: object) -> Fraction:
    """Return ``drop_rate`` as an exact decimal ``Fraction``, or raise ``ValueError``.

    Accepts real numbers and ``Decimal`` (not ``bool``) in ``[0, 1)``; rejects
    NaN, infinities, and anything that is not a number.
    """
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (numbers.Real, Decimal)):
        raise ValueError(
            f"drop_rate must be a real number in {DROP_RATE_RANGE}, got {drop_rate!r}"
        )
    if math.isnan(drop_rate) or math.isinf(drop_rate):
        raise ValueError(f"drop_rate must be in {DROP_RATE_RANGE}, got {drop_rate!r}")
    exact = Fraction(str(drop_rate))
    if not 0 <= exact < 1:
        raise ValueError(f"drop_rate must be in {DROP_RATE_RANGE}, got {drop_rate!r}")
    return exact


def budget(num_video_tokens: int, drop_rate: float) -> int:
    """Number of video tokens kept: ``K = max(1, floor(N * (1 - drop_rate)))``.

    Args:
        num_video_tokens: ``N``, the number of video tokens (an int >= 1).
        drop_rate: fraction of video tokens to drop, in ``[0, 1)``.

    Raises:
        ValueError: ``N`` is not an int >= 1, or ``drop_rate`` is not a number
            in ``[0, 1)`` (NaN included); the message names the bad value.
    """
    if (
        isinstance(num_video_tokens, bool)
        or not isinstance(num_video_tokens, numbers.Integral)
        or num_video_tokens < MIN_KEPT
    ):
        raise ValueError(
            f"num_video_tokens N must be an int >= {MIN_KEPT}, got N={num_video_tokens!r}"
        )
    exact_rate = check_drop_rate(drop_rate)
    n = int(num_video_tokens)
    kept = math.floor(n * (1 - exact_rate))
    return max(MIN_KEPT, kept)
