"""The lazy start: a drafter built only once an answer is long enough for speculation to pay for it.

Until ``after`` tokens are committed every step is a plain target step; then ``start()`` builds the drafter
(for a draft model: scoring, pruning and the draft's prefill, at the target's state when called) and every
later step is that drafter's. A short answer (a multiple-choice letter, a few words) never pays for the
draft's prefill. Wraps any drafter.

What this module deliberately does not do: decide ``after`` (the engine does, from the settings and whether
the answer can end before ``max_new_tokens``).
"""

from __future__ import annotations

import time
from typing import Callable

from specvlm.decoding.drafters.base import Drafter, Step
from specvlm.decoding.trees import DraftTree
from specvlm.stats import GenerationStats


class LazyStart(Drafter):
    """Plain steps until ``after`` tokens are committed, then the drafter ``start()`` builds."""

    def __init__(self, start: Callable[[], Drafter], after: int):
        self.start = start
        self.after = after
        self.inner: Drafter | None = None
        self.started_at = 0  # committed tokens when the drafter was built
        self.start_s = 0.0  # wall seconds the start took (inside a decoding step)

    @property
    def name(self) -> str:
        return self.inner.name if self.inner is not None else "lazy start (not started)"

    def propose(self, out: list[int], max_depth: int) -> DraftTree | None:
        if self.inner is None:
            if len(out) < self.after:
                return None
            began = time.perf_counter()
            self.inner, self.started_at = self.start(), len(out)
            self.start_s = time.perf_counter() - began
        return self.inner.propose(out, max_depth)

    def commit(self, step: Step) -> None:
        if self.inner is not None:
            self.inner.commit(step)

    def finish(self, stats: GenerationStats) -> None:
        if self.inner is None:
            stats.speculation = "skipped"  # the answer ended before the drafter was needed: no draft prefill
            return
        stats.draft_start_tokens = self.started_at
        self.inner.finish(stats)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()
