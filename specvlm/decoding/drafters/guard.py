"""Speculation that never loses: a wrapper that decodes plainly once drafting stops paying.

A speculative step costs a draft's proposal plus a verification forward; it pays only while it commits more
tokens per second than plain decoding steps do. How much it commits depends on the content (a draft that
does not match the answer) and on the machine (on a busy CPU a draft's many small operators slow down far
more than the target's large ones). :class:`Guard` measures both rates in the answer itself:

* plain steps measure plain decoding's rate: the steps a lazily started drafter decodes plainly anyway,
  or, when the answer has none, :data:`PROBE_STEPS` plain steps of the guard's own (unless an earlier answer
  of the same workload measured the rate: it is remembered for :data:`REPROBE_ANSWERS` answers);
* drafted steps measure speculation's rate (the first is left out: it holds a lazy start's draft prefill;
  a later step slower than :data:`STALL` times the median counts at that bound: a one-time stall such as a
  graph compiled on first use says nothing of the steps to come);
* from :data:`CHECK_STEPS` drafted steps on, after every step: when speculation's committed tokens per
  second fall below plain decoding's, the rest of the answer decodes plainly.

Steps are timed from the proposal to the verifier's host read, so their wall time is their real cost on
any device. Output is unchanged whatever the guard decides: every token is the target's.

:class:`Verdicts` remembers, per workload, an answer whose speculation lost: the next
:data:`PLAIN_ANSWERS` answers of that workload decode plainly from the start (no draft prefill, no
scoring), then speculation is tried again (the machine's load and the answers' content drift).

What this module deliberately does not do: draft anything itself, or choose between drafters.
"""

from __future__ import annotations

import logging
import statistics
from collections import OrderedDict

from specvlm.decoding.drafters.base import Drafter, Step
from specvlm.decoding.trees import DraftTree
from specvlm.stats import GenerationStats

logger = logging.getLogger(__name__)

#: Plain steps an answer times before it drafts, when it has decoded none plainly yet.
PROBE_STEPS = 2
#: Drafted steps timed before speculation's rate is compared with plain decoding's.
CHECK_STEPS = 4
#: Answers of a workload that decode plainly after one whose speculation lost, before speculation is tried again.
PLAIN_ANSWERS = 3
#: A step slower than this many times the median step of its kind is counted at that bound (:class:`_Rate`).
STALL = 4.0
#: Answers of a workload that reuse a plain rate measured by an earlier answer before it is measured again.
REPROBE_ANSWERS = 8
#: Workloads :class:`Verdicts` keeps (the least recently used is forgotten first).
WORKLOADS = 64


class _Rate:
    """Committed tokens and wall seconds of some steps.

    A step slower than :data:`STALL` times the median step is counted at that bound: a one-time stall (a
    graph compiled on first use, a page fault, a collector pass) says nothing of the steps to come, while
    a machine that is busy slows every step, and the median with them.
    """

    def __init__(self):
        self.steps, self.tokens = 0, 0
        self.times: list[float] = []

    def add(self, tokens: int, seconds: float) -> None:
        self.steps, self.tokens = self.steps + 1, self.tokens + tokens
        self.times.append(seconds)

    @property
    def seconds(self) -> float:
        if len(self.times) < 3:
            return sum(self.times)
        bound = STALL * statistics.median(self.times)
        return sum(min(t, bound) for t in self.times)

    @property
    def per_second(self) -> float:
        seconds = self.seconds
        return self.tokens / seconds if seconds > 0 else 0.0


class Guard(Drafter):
    """Runs ``inner`` while its drafted steps commit tokens faster than plain steps do; plain steps after."""

    name = "never-slower guard"

    def __init__(
        self, inner: Drafter, *, probe_steps: int = PROBE_STEPS, check_steps: int = CHECK_STEPS, plain_rate: float | None = None
    ):
        """``plain_rate``: plain decoding's committed tokens per second as an earlier answer of the workload
        measured it (then no probe steps are needed; the answer's own plain steps, if any, still count first)."""
        self.inner = inner
        self.remembered_rate = plain_rate
        self.probe_steps = probe_steps
        self.check_steps = check_steps
        self.plain = _Rate()
        self.drafted = _Rate()
        self.fell_back_at = 0  # committed tokens when the rest of the answer turned plain (0: never)
        self._committed = 1  # committed tokens so far (the first comes from the prefill)
        self._drafting = False  # whether the current step's proposal came from ``inner``
        self._warm = False  # the first drafted step has run (left out of the rate)

    @property
    def off(self) -> bool:
        return self.fell_back_at > 0

    def propose(self, out: list[int], max_depth: int) -> DraftTree | None:
        self._drafting = False
        if self.off or (self.remembered_rate is None and self.plain.steps < self.probe_steps):
            return None
        tree = self.inner.propose(out, max_depth)
        self._drafting = tree is not None
        return tree

    def commit(self, step: Step) -> None:
        if not self.off:
            self.inner.commit(step)
        self._committed += len(step.committed)
        if not self._drafting:
            self.plain.add(len(step.committed), step.seconds)
        elif not self._warm:
            self._warm = True
        else:
            self.drafted.add(len(step.committed), step.seconds)
        if not self.off and self.drafted.steps >= self.check_steps and self.drafted.per_second < self.plain_rate:
            self.fell_back_at = self._committed
            logger.info(
                "%s: %.0f tokens/s over %d drafted steps, plain decoding %.0f tokens/s (%s): plain from token %d",
                self.inner.name, self.drafted.per_second, self.drafted.steps, self.plain_rate,
                "measured now" if self.plain.steps else "remembered", self.fell_back_at,
            )  # fmt: skip

    @property
    def plain_rate(self) -> float:
        """Plain decoding's committed tokens per second: this answer's plain steps, else the remembered rate."""
        return self.plain.per_second if self.plain.steps or self.remembered_rate is None else self.remembered_rate

    def finish(self, stats: GenerationStats) -> None:
        self.inner.finish(stats)
        if self.off:
            stats.speculation = "fell_back"
            stats.fell_back_at = self.fell_back_at

    def close(self) -> None:
        self.inner.close()


class Verdicts:
    """Per workload (any hashable key): the answers still to decode plainly after one whose speculation lost,
    and plain decoding's rate as the last answer that timed plain steps measured it."""

    def __init__(self, plain_answers: int = PLAIN_ANSWERS, workloads: int = WORKLOADS, reprobe: int = REPROBE_ANSWERS):
        self.plain_answers = plain_answers
        self.workloads = workloads
        self.reprobe = reprobe
        self._left: OrderedDict = OrderedDict()  # key -> plain answers still to come
        self._rates: OrderedDict = OrderedDict()  # key -> [plain tokens per second, answers that reused it]

    def plain(self, key) -> bool:
        """Whether the next answer of workload ``key`` decodes plainly (a remembered verdict); counts it."""
        left = self._left.pop(key, 0)
        if left > 0:
            self._left[key] = left - 1
            return True
        return False

    def plain_rate(self, key) -> float | None:
        """Plain decoding's remembered rate for the next answer of workload ``key`` (counts it), or None when
        that answer should measure it again (none yet, or reused by :attr:`reprobe` answers already)."""
        entry = self._rates.get(key)
        if entry is None or entry[1] >= self.reprobe:
            return None
        entry[1] += 1
        return entry[0]

    def record(self, key, lost: bool, plain_rate: float | None = None) -> None:
        """An answer of workload ``key`` drafted; ``lost``: its speculation fell back to plain decoding;
        ``plain_rate``: the plain rate it measured itself (None: it measured none)."""
        self._left.pop(key, None)
        if lost:
            self._left[key] = self.plain_answers
        if plain_rate:
            self._rates.pop(key, None)
            self._rates[key] = [plain_rate, 0]
        for table in (self._left, self._rates):
            while len(table) > self.workloads:
                table.popitem(last=False)

    def clear(self) -> None:
        self._left.clear()
        self._rates.clear()
