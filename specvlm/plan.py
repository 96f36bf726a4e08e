"""What one call of the engine will do: its :class:`Plan` (resolved from the method's name and the settings)
and its :class:`Prepared` answer (everything :meth:`specvlm.SpecVLM.decode` needs, from
:meth:`specvlm.SpecVLM.prepare`).

What this module deliberately does not do: prefill, build a drafter or decode (the engine does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import specvlm_pruning as pruning
from specvlm.config import METHODS, DecodingConfig
from specvlm.decoding.drafters import Drafter
from specvlm.decoding.logits import NextTokenRule
from specvlm.decoding.loop import Stop
from specvlm.decoding.sampling import Sampling
from specvlm.decoding.target import TargetPrefill
from specvlm.stats import GenerationStats
from specvlm.timing import Timer


@dataclass(frozen=True)
class Plan:
    """What a method does, resolved once per call from its name and the settings.

    ``sd`` is ``specvlm`` whose pruning keeps every video token (the ``none`` strategy); ``lookup`` drafts
    n-grams of the context (no draft model, no pruning).
    """

    method: str
    drafts: bool  # a draft proposes tokens (sd, specvlm); ar decodes with the target alone
    pruning: str | None  # the strategy choosing the draft's video tokens ("none": all of them); None without a draft
    capture_scores: bool  # the target's prefill records the verifier's text-to-video attention

    @classmethod
    def resolve(cls, method: str, config: DecodingConfig) -> "Plan":
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        if method == "ar":
            return cls(method, drafts=False, pruning=None, capture_scores=False)
        if method == "lookup":
            return cls(method, drafts=True, pruning=None, capture_scores=False)
        strategy = "none" if method == "sd" else config.pruning
        return cls(method, drafts=True, pruning=strategy, capture_scores=pruning.needs_scores(strategy))

@dataclass
class Prepared:
    """One answer after :meth:`SpecVLM.prepare`: what :meth:`SpecVLM.decode` needs.

    target: the target's prefill (cache, last logits, layout, the verifier's scores when captured)
    drafter: what proposes draft tokens (``None``: plain decoding); possibly a lazy start not yet started
    stop / rule / sampling / generator: where decoding stops and how the target chooses its tokens
    stats / timer: what the answer did and how long each part took
    workload: the key of the guard's remembered verdicts (``None`` without a guard)
    """

    inputs: object
    method: str
    config: DecodingConfig
    plan: Plan
    target: TargetPrefill | None
    drafter: Drafter | None
    stop: Stop
    rule: NextTokenRule
    sampling: Sampling | None
    generator: torch.Generator | None
    stats: GenerationStats
    timer: Timer
    workload: tuple | None = None
    overlap_trial: tuple | None = None  # ``overlap="auto"``'s trial: (its workload key, overlapped?); None: no trial
    decoded: bool = False  # decode() ran: the caches hold the answer, so it cannot run again
