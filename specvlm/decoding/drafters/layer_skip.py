"""The layer-skipping self-draft as a drafter: the target drafts for itself with some of its decoder layers.

The draft sequence is the target's cache restricted to the kept prompt positions (no second prefill);
:class:`~specvlm.decoding.layerskip.LayerChoice` says which layers each step runs (or a plain step), and
after every step the draft's cache takes the target's exact rows of the committed tokens in every layer
(:func:`specvlm.models.cache.adopt`), so any subset can draft at any step.

What this module deliberately does not do: choose the subsets (:mod:`specvlm.decoding.layerskip`).
"""

from __future__ import annotations

from specvlm.decoding.drafters.base import Step
from specvlm.decoding.drafters.model import ModelDrafter
from specvlm.decoding.layerskip import LayerChoice, Layers
from specvlm.decoding.trees import DraftTree
from specvlm.models import cache as kv
from specvlm.stats import GenerationStats


class LayerSkipDrafter(ModelDrafter):
    """A self-draft running the layer subsets ``layers`` chooses; the other settings as :class:`ModelDrafter`."""

    name = "self-draft (layer skipping)"

    def __init__(self, seq, shape, layers: LayerChoice, **settings):
        super().__init__(seq, shape, **settings)
        self.layers = layers
        self._option: Layers | None = None

    @property
    def done(self) -> bool:
        """Plain decoding was found fastest: this answer drafts no more."""
        return self.layers.decided and self.layers.chosen is None

    def propose(self, out: list[int], max_depth: int) -> DraftTree | None:
        self._option = None if self.done else self.layers.next()
        if self._option is None:
            return None
        self.layers.use(self.seq, self._option)
        return super().propose(out, max_depth)

    def commit(self, step: Step) -> None:
        """Every layer takes the target's rows of the tokens just committed; the step's timing is recorded."""
        self._proposal = None
        target = step.target
        if not self.done:  # once plain decoding is chosen, nothing drafts again: no rows to take
            kv.adopt(self.seq.cache, self.seq.prefix + step.before, target.cache, target.prefix + step.before, kv.length(target.cache))
        self.layers.record(self._option, len(step.committed), step.seconds)
        self._option = None  # a step this drafter was not asked about (a guard's plain step) is a plain one

    def finish(self, stats: GenerationStats) -> None:
        stats.draft_steps += self.forwards
        stats.speculation = "stopped" if self.done else (stats.speculation or "on")
        if self.layers.chosen is not None:
            stats.draft_layers = list(self.layers.chosen)
