"""The drafter interface: what the loop needs from anything that proposes draft tokens.

A :class:`Drafter` proposes a tree (a chain is a tree) of draft tokens under the pending token, or nothing
for a plain step, and is then told what the target committed (:class:`Step`), so that it can keep exactly
the committed tokens in whatever state it holds (a draft model's cache, an n-gram index, its timings).
The loop (:func:`specvlm.decoding.loop.decode`) never knows which drafter it holds: a separate draft
model, the target's own layers, prompt lookup, or a wrapper around one of them (the lazy start, the
never-slower guard). Whether a drafter can work with a family, a tree or a method is decided when it is
built, never in the loop.

Writing a drafter (docs/drafters.md has the worked example, :mod:`.prompt_lookup`):

* ``propose(out, max_depth)`` returns a :class:`~specvlm.decoding.trees.DraftTree` under ``out[-1]`` (the
  pending token, not yet in the target's cache) at most ``max_depth`` levels deep, or ``None`` for a plain
  step. When sampling, the tree carries q, the distribution each node's children were drawn from; the
  verifier's rejection sampling keeps the output distributed as the target's whatever the drafter proposes.
* ``commit(step)`` is called after every step, plain steps included: roll back to the committed tokens.
* ``finish(stats)`` is called once at the end of the answer: write what the drafter did into the stats.
* ``close()`` is called when decoding ends without ``finish`` (an exception): release what the drafter holds
  (a worker, threads); it may be called again after ``finish``.

What this module deliberately does not do: draft, verify or time anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from specvlm.decoding.target import DecodingState
from specvlm.decoding.trees import DraftTree
from specvlm.stats import GenerationStats


@dataclass(frozen=True)
class Step:
    """What one verification step did; a drafter is told it after the step (:meth:`Drafter.commit`).

    tree: the draft tree the target verified (``None`` for a plain step)
    path: accepted node indices from the root down ([] when nothing drafted was accepted)
    committed: the tokens the step committed (accepted tokens and the bonus token, cut at EOS or
        ``max_new_tokens``); the target cache now holds all of them but the last, which is pending
    before: decoded tokens in the target's cache before the step
    target: the target's sequence after the step
    seconds: wall seconds of the step, from the proposal to the verifier's host read and the target's cache edit
    """

    tree: DraftTree | None
    path: list[int]
    committed: list[int]
    before: int
    target: DecodingState
    seconds: float


class Drafter:
    """Proposes draft tokens after the committed tokens and is told what was committed.

    Subclasses implement :meth:`propose` and usually :meth:`commit`; :attr:`name` says what the drafter is
    in stats and logs.
    """

    name: str = "drafter"

    def propose(self, out: list[int], max_depth: int) -> DraftTree | None:
        """Draft tokens under the pending token ``out[-1]`` (``out``: every committed new token), at most
        ``max_depth`` >= 1 levels deep; ``None``: this step is a plain target step."""
        raise NotImplementedError

    def commit(self, step: Step) -> None:
        """Keep exactly the committed tokens in the drafter's own state (called after every step)."""

    def finish(self, stats: GenerationStats) -> None:
        """Record what the drafter did in ``stats`` (called once, when the answer ends)."""
        stats.speculation = stats.speculation or "on"

    def close(self) -> None:
        """Release whatever the drafter holds (called when decoding stops early; harmless after ``finish``)."""
