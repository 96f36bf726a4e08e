"""Layer-skipping self-drafting (SWIFT style): which of the target's decoder layers its self-draft runs.

With no separate draft model the target drafts for itself from its pruned cache (the Sparse-to-Dense
idea). Running every decoder layer for each drafted token costs about a full target forward per token,
more than the verification saves; running a subset costs a fraction of one, at some loss of agreement
with the target. The self-draft runs the stock text model restricted to a subset of its layers
(:meth:`~specvlm.models.base.ModelAdapter.with_layers`); after every verification its cache takes the
target's exact rows of the committed tokens in every layer (:func:`specvlm.models.cache.adopt`), so any
subset can draft at any step. The verification is the usual full target forward: output is unchanged.

``self_draft_layers`` (:func:`candidates`):

* ``"auto"``: :class:`LayerChoice` tries a few subsets (:data:`AUTO_KEEP` of the layers: the first and
  last, and evenly spaced ones between) for :data:`TRIAL_STEPS` steps each, measures committed tokens per second of each
  step (a step ends with the verifier's host read, so its wall time is its real cost on any device),
  compares them with plain decoding steps (the ones a lazy draft start decodes anyway, or trial steps
  of their own) and keeps the fastest for the rest of the answer: plain decoding when no subset pays;
* a ratio of layers to keep, or explicit layer indices: that one subset, no trials;
* ``"all"``: every layer (plain self-drafting: no copies from the target's cache, no trials).

Remembering (KNN-SSD style, ``self_draft_memory``): an engine keeps ``"auto"``'s measurements per workload
(:class:`LayerMemory`, keyed by the prompt's length and the drafting settings), so a later answer of the
same kind starts with the remembered fastest option and pays no trials; the chosen option's steps keep
adding to its measurements, and after :data:`REMEMBER_ANSWERS` answers the workload's trials run again. A
remembered verdict for plain decoding is kept for :data:`PLAIN_ANSWERS` answers, which then decode exactly
as plain decoding does (no trials: never slower than not speculating), and is then put to the trials again.

What this module deliberately does not do: draft or verify (``drafting``, ``loop``), or train anything
(nothing is stored beyond an engine's own memory of its measurements).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

#: Shares of the decoder layers ``"auto"`` tries (rounded, at least 1 layer, distinct counts).
AUTO_KEEP = (0.2, 0.35, 0.5)
#: ``draft_stop_below="auto"`` for a layer-skipping self-draft: its chains end after a token it gives less
#: probability than this (a skipped-layer draft is right less often than a trained one; each extra drafted
#: token costs a good share of a target forward).
AUTO_STOP_BELOW = 0.6
#: Steps each candidate (and plain decoding, when not measured before the draft started) is timed for.
TRIAL_STEPS = 2
#: ``self_draft_memory``: answers of one workload that reuse its remembered measurements before its trials
#: run again (the machine's speed and the answers' content drift).
REMEMBER_ANSWERS = 16
#: Workloads an engine's :class:`LayerMemory` keeps (the least recently used is forgotten first).
REMEMBER_WORKLOADS = 64
#: Answers that decode plainly on a remembered verdict for plain decoding before the trials run again (plain
#: steps measure nothing of the subsets, and a slow spell of the machine during a few trial steps can produce
#: that verdict, so it is not kept as long as a subset's, whose own steps keep checking it).
PLAIN_ANSWERS = 3

Layers = tuple[int, ...]


def spread(num_layers: int, keep: int) -> Layers:
    """``keep`` of ``num_layers`` layers: the first and the last, the others evenly spaced between them
    (the first layers build the token's representation, the last ones map it to the vocabulary)."""
    keep = max(1, min(keep, num_layers))
    if keep == 1:
        return (0,)
    return tuple(sorted({round(i * (num_layers - 1) / (keep - 1)) for i in range(keep)}))


def candidates(setting, num_layers: int) -> list[Layers] | None:
    """The layer subsets a self-draft may run for ``self_draft_layers`` = ``setting`` (validated by
    :class:`~specvlm.config.DecodingConfig`) on a target of ``num_layers`` decoder layers; ``None``
    for ``"all"`` (every layer, no skipping). Raises ValueError for an index past the last layer."""
    if setting == "all":
        return None
    if setting == "auto":
        keeps = sorted({max(1, round(r * num_layers)) for r in AUTO_KEEP} - {num_layers})
        return [spread(num_layers, k) for k in keeps] or None  # a 1-layer target: nothing to skip
    if isinstance(setting, float):
        return [spread(num_layers, max(1, round(setting * num_layers)))]
    layers = tuple(setting)
    if layers[-1] >= num_layers:
        raise ValueError(
            f"self_draft_layers={list(layers)!r} names layer {layers[-1]}, but the target has {num_layers} decoder "
            f"layers (0..{num_layers - 1})"
        )
    return [layers]


@dataclass
class Workload:
    """One workload's remembered measurements (:class:`LayerMemory`).

    measured: option -> [steps, tokens, seconds] (option ``None`` is plain decoding)
    answers: answers that have used these measurements
    plain_answers: answers decoded plainly on a remembered plain verdict since that verdict's trials
    """

    measured: dict = field(default_factory=dict)
    answers: int = 0
    plain_answers: int = 0


class LayerMemory:
    """``"auto"``'s measurements per workload, kept by an engine across answers (``self_draft_memory``).

    ``table(key)`` is the :class:`Workload` of one workload, shared with that answer's :class:`LayerChoice`,
    which reads and extends its measurements; each call counts one answer, and after
    :data:`REMEMBER_ANSWERS` of them the workload starts empty again (the trials run again). At most
    :data:`REMEMBER_WORKLOADS` workloads are kept.
    """

    def __init__(self, answers: int = REMEMBER_ANSWERS, workloads: int = REMEMBER_WORKLOADS):
        self.answers = answers
        self.workloads = workloads
        self.tables: OrderedDict = OrderedDict()  # key -> [answers so far, table]

    def table(self, key) -> Workload:
        """The measurements of workload ``key`` for one more answer."""
        entry = self.tables.pop(key, None)
        if entry is None or entry.answers >= self.answers:
            entry = Workload()
        entry.answers += 1
        self.tables[key] = entry
        while len(self.tables) > self.workloads:
            self.tables.popitem(last=False)
        return entry

    def clear(self) -> None:
        """Forget every workload."""
        self.tables.clear()


class LayerChoice:
    """The self-draft's layer subset for one answer: fixed, or chosen after timed trials (``"auto"``).

    ``auto``: try every option and plain decoding first; otherwise ``options`` holds one subset, used as given.
    ``next()`` says what the coming step does (a subset to draft with, or ``None``: a plain target step),
    ``record()`` accounts the step's committed tokens and wall seconds. Once every trial has run, the
    fastest option (committed tokens per second) is kept for the rest of the answer (whether it keeps paying
    is the engine's never-slower guard's business, :mod:`specvlm.decoding.drafters.guard`, as for every drafter).
    ``memory``: a :class:`Workload` from :meth:`LayerMemory.table` (``auto`` only): measurements of earlier
    answers count as trials already run, and this answer's steps are added to them, the chosen option's
    included, so that the next answer decides from more of them. A remembered verdict for plain decoding
    holds for :data:`PLAIN_ANSWERS` answers (``plain_answers``); the next one runs the trials again, adding
    to the measurements.
    """

    def __init__(
        self, adapter, options: list[Layers], *, auto: bool = False, trial_steps: int = TRIAL_STEPS,
        memory: Workload | None = None, plain_answers: int = PLAIN_ANSWERS,
    ):  # fmt: skip
        self.views = {layers: adapter.with_layers(layers) for layers in options}
        self.trial_steps = trial_steps
        self.auto = auto
        self.options = list(options)
        self.remembered = memory is not None
        self._measured: dict[Layers | None, list[float]] = memory.measured if memory is not None else {}
        for option in self.options + [None]:
            self._measured.setdefault(option, [0, 0, 0.0])
        self.decided = not auto  # an explicit subset is used as given
        self.chosen: Layers | None = options[0] if self.decided else None
        self.from_memory = False  # decided from earlier answers' measurements, before any trial of this one
        self._base = {option: 0 for option in self._measured}  # steps measured before this answer's trials
        if auto and self._trial() is None:
            self._decide()
            self.from_memory = True
            if self.chosen is None:  # a plain verdict holds for a few answers, then the trials run again
                if memory is None or memory.plain_answers < plain_answers:
                    if memory is not None:
                        memory.plain_answers += 1
                else:
                    memory.plain_answers = 0
                    self.decided = self.from_memory = False
                    self._base = {option: steps[0] for option, steps in self._measured.items()}

    def _trial(self) -> Layers | None | str:
        """The next option still short of its trial steps, or None when every trial has run ("plain"
        stands for a plain step still to time)."""
        for option in self.options + [None]:
            if self._measured[option][0] - self._base[option] < self.trial_steps:
                return "plain" if option is None else option
        return None

    def next(self) -> Layers | None:
        """The subset the coming step drafts with, or ``None`` for a plain target step."""
        if self.decided:
            return self.chosen
        trial = self._trial()
        if trial is not None:
            return None if trial == "plain" else trial
        self._decide()
        return self.chosen

    def record(self, option: Layers | None, tokens: int, seconds: float) -> None:
        """Account one step run with ``option`` (``None``: a plain step) that committed ``tokens`` tokens."""
        if self.decided and not (self.remembered and option is not None and option == self.chosen):
            return
        steps = self._measured[option]
        steps[0] += 1
        steps[1] += tokens
        steps[2] += seconds

    def rate(self, option: Layers | None) -> float:
        """Committed tokens per second of ``option``'s measured steps (0 before any)."""
        return _rate(self._measured[option])

    def _decide(self) -> None:
        best = max(self.options, key=self.rate)
        self.chosen = best if self.rate(best) > self.rate(None) else None
        self.decided = True

    def use(self, draft, layers: Layers) -> None:
        """Point the draft sequence at the view running ``layers``."""
        draft.adapter = self.views[layers]
        draft.cache.length_layer = layers[0]


def _rate(measured) -> float:
    """Committed tokens per second of [steps, tokens, seconds] (0 before any)."""
    _, tokens, seconds = measured
    return tokens / seconds if seconds > 0 else 0.0
