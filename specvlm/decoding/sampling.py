"""Sampling settings and the processed distributions p (target) and q (draft).

Temperature, top-k and top-p are applied identically to both models' logits, in the order stock
transformers applies its warpers (temperature, then top-k, then top-p), so that p is exactly the
distribution the stock target samples from with the same settings. All randomness comes from a
seeded ``torch.Generator``; nothing uses Python's ``random`` or the global torch RNG.

What this module deliberately does not do: repetition penalties or other logits processors that
depend on the generated prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    """Sampling settings. top_k = 0 and top_p = 1.0 disable those filters."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"temperature={t!r} must be a finite number > 0 (use do_sample=False for greedy)")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k={self.top_k!r} must be an int >= 0 (0 disables it)")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ValueError(f"top_p={p!r} must be in (0, 1] (1 disables it)")

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., V) logits -> (..., V) float32 probabilities after temperature, top-k and top-p."""
        logits = logits.float() / self.temperature
        if self.top_k and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, -math.inf)
        if self.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
            cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            drop_sorted = cumulative <= 1 - self.top_p
            drop_sorted[..., -1:] = False  # always keep the most likely token
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, -math.inf)
        return logits.softmax(dim=-1)


def sample_without_replacement(probs: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """(..., V) probabilities -> (..., k) tokens drawn one after another without replacement (Gumbel-top-k).

    The i-th token is distributed as ``probs`` restricted to the tokens not drawn before it, which is
    what recursive rejection sampling over siblings needs. Positions beyond the support are filled
    with tokens of probability 0; verification never accepts those.
    """
    u = torch.rand(probs.shape, generator=generator, device=generator.device, dtype=torch.float32).to(probs.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float32).tiny)))
    keys = torch.log(probs) + gumbel
    return torch.topk(keys, k, dim=-1).indices
