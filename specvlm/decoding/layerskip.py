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

What this module deliberately does not do: draft or verify (``drafting``, ``loop``), or train anything
(no per-model search is stored; the choice is made again for every answer).
"""

from __future__ import annotations

#: Shares of the decoder layers ``"auto"`` tries (rounded, at least 1 layer, distinct counts).
AUTO_KEEP = (0.2, 0.35, 0.5)
#: ``draft_stop_below="auto"`` for a layer-skipping self-draft: its chains end after a token it gives less
#: probability than this (a skipped-layer draft is right less often than a trained one; each extra drafted
#: token costs a good share of a target forward).
AUTO_STOP_BELOW = 0.6
#: Steps each candidate (and plain decoding, when not measured before the draft started) is timed for.
TRIAL_STEPS = 2

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


class LayerChoice:
    """The self-draft's layer subset for one answer: fixed, or chosen after timed trials (``"auto"``).

    ``auto``: try every option and plain decoding first; otherwise ``options`` holds one subset, used as given.
    ``next()`` says what the coming step does (a subset to draft with, or ``None``: a plain target step),
    ``record()`` accounts the step's committed tokens and wall seconds. Once every trial has run, the
    fastest option (committed tokens per second) is kept for the rest of the answer.
    """

    def __init__(self, adapter, options: list[Layers], *, auto: bool = False, trial_steps: int = TRIAL_STEPS):
        self.views = {layers: adapter.with_layers(layers) for layers in options}
        self.trial_steps = trial_steps
        self.options = list(options)
        self._measured: dict[Layers | None, list[float]] = {None: [0, 0, 0.0]}  # option -> [steps, tokens, seconds]
        self._measured.update({layers: [0, 0, 0.0] for layers in options})
        self.decided = not auto  # an explicit subset is used as given
        self.chosen: Layers | None = options[0] if self.decided else None

    def next(self) -> Layers | None:
        """The subset the coming step drafts with, or ``None`` for a plain target step."""
        if self.decided:
            return self.chosen
        for option in self.options + [None]:
            if self._measured[option][0] < self.trial_steps:
                return option
        self._decide()
        return self.chosen

    def record(self, option: Layers | None, tokens: int, seconds: float) -> None:
        """Account one step run with ``option`` (``None``: a plain step) that committed ``tokens`` tokens."""
        if self.decided:
            return
        steps = self._measured[option]
        steps[0] += 1
        steps[1] += tokens
        steps[2] += seconds

    def rate(self, option: Layers | None) -> float:
        """Committed tokens per second of ``option``'s measured steps (0 before any)."""
        _, tokens, seconds = self._measured[option]
        return tokens / seconds if seconds > 0 else 0.0

    def _decide(self) -> None:
        best = max(self.options, key=self.rate)
        self.chosen = best if self.rate(best) > self.rate(None) else None
        self.decided = True

    def use(self, draft, layers: Layers) -> None:
        """Point the draft sequence at the view running ``layers``."""
        draft.adapter = self.views[layers]
        draft.cache.length_layer = layers[0]
