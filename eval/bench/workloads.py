"""What ``specvlm bench`` runs on a pair: the methods (:data:`RUNS`), the self-drafting runs, the short-answer
workload and the workload names :func:`specvlm_eval.bench.pair.bench_pair` accepts.

What this module deliberately does not do: run anything (:mod:`specvlm_eval.bench.pair` does) or say how a run's
figures are kept (:mod:`specvlm_eval.bench.results`).
"""

from __future__ import annotations

RUNS = {  # name -> engine.generate settings
    "ar": dict(method="ar"),
    "sd": dict(method="sd", tree="chain"),
    "specvlm-chain": dict(method="specvlm", tree="chain"),
    "specvlm-eager": dict(method="specvlm", tree="chain", compile="off"),  # what compiling the draft's steps buys
    "specvlm-unguarded": dict(method="specvlm", tree="chain", never_slower=False),  # what the guard saves (or costs)
    "specvlm-sequential": dict(method="specvlm", tree="chain", overlap="off"),  # drafting, then verifying
    "specvlm-overlap": dict(method="specvlm", tree="chain", overlap="on"),  # drafting beside the target's work
    "specvlm-tree": dict(method="specvlm", tree="reference-25"),
    "lookup": dict(method="lookup"),  # prompt lookup: n-grams of the context, no draft model
    "self-draft": dict(method="specvlm", tree="chain"),  # on the self-drafting engine (draft=None)
}
#: Runs on the self-drafting engine: the bench's target with ``draft=None`` and the engine's settings.
SELF_DRAFT_RUNS = ("self-draft",)
#: The short-answer workload: run name -> the :data:`RUNS` entry it runs, over every question.
ANSWER_RUNS = {"answers:ar": "ar", "answers:specvlm": "specvlm-chain", "answers:self-draft": "self-draft"}
#: What ``bench_pair`` can run: the caption runs (every method on one long answer, EOS ignored), the
#: self-draft on that caption, and the short answers.
WORKLOADS = ("caption", "self-draft", "answers")
#: Multiple-choice questions of the bench video the short-answer workload asks (the issue's four).
ANSWER_QUESTIONS = 4
#: Token budget of a short answer; the answers end at EOS (an option letter and a few words) well before.
ANSWER_MAX_NEW_TOKENS = 32
