"""What an engine learns across answers, and what it decides from it for the next answer.

An engine that answers again and again (an evaluation, a server, the bench) adapts to its workload:

* **the never-slower guard's verdicts** (:class:`~specvlm.decoding.drafters.Verdicts`): a workload whose
  speculation fell behind plain decoding decodes its next answers plainly from the start, and the guard of
  a later answer starts from the plain rate measured before;
* **the self-draft's layer trials** (:class:`~specvlm.decoding.layerskip.LayerMemory`);
* **compiled draft steps** (``compile="auto"``): after :data:`COMPILE_AFTER_ANSWERS` drafted answers the
  draft's steps are compiled once, before an answer decodes, so that no step waits for a compile;
* **overlapped drafting** (``overlap="auto"``, :class:`~specvlm.decoding.drafters.overlap.OverlapChoice`):
  answers of a repeated workload try drafting beside the target and keep it only where it measured faster,
  and the worker that drafts them is kept across answers.

Each workload is keyed by the prompt's length (to a power of two: it sets the steps' attention cost), the
method and what a step drafts. :meth:`Adaptation.forget` clears the verdicts and trials.

What this module deliberately does not do: decode, build a drafter, or keep anything across processes.
"""

from __future__ import annotations

import logging

import torch

from specvlm.config import DecodingConfig
from specvlm.decoding.drafters import Verdicts
from specvlm.decoding.drafters.model import warm_compiled
from specvlm.decoding.drafters.overlap import (
    WORKER_THREADS,
    DraftWorker,
    OverlapChoice,
    blocker,
    default_runner,
    speculative_shape,
)
from specvlm.decoding.layerskip import LayerChoice, LayerMemory
from specvlm.decoding.trees import TreeShape
from specvlm.loading import has_compiler

logger = logging.getLogger(__name__)

#: ``compile="auto"``: drafted answers an engine decodes eagerly before its draft's steps are compiled: a one-shot
#: call or a handful of answers never waits for a compile (seconds), a workload that repeats (an evaluation, a
#: server, the bench) pays it once and every later answer drafts at the cost of its arithmetic. Overlapped
#: drafting (``overlap="auto"``) is tried from the same answer on.
COMPILE_AFTER_ANSWERS = 4


class Adaptation:
    """One engine's memory across answers (see the module docstring).

    target / draft: the engine's adapters (``draft`` is None for a self-draft)
    vocab: the vocabulary the draft drafts from (shared with the target)
    """

    def __init__(self, target, draft, vocab: int):
        self.target, self.draft, self.vocab = target, draft, vocab
        self.layer_memory = LayerMemory()
        self.verdicts = Verdicts()
        self.overlap_choice = OverlapChoice()
        self.drafted_answers = 0  # answers that drafted
        self._warmed: set = set()  # the compiled graphs built so far (compile_s paid): draft shapes, worker shapes
        self._worker: DraftWorker | None = None
        self._worker_key = None  # ``_warmed`` when the worker was forked

    # ---- the never-slower guard ----------------------------------------------------------------
    def workload(self, plan, config: DecodingConfig, inputs, overlapped: bool = False) -> tuple | None:
        """The key under which the guard's verdicts are remembered (None: no guard, or nothing drafts);
        ``overlapped``: the answer drafts overlapped (a way with verdicts of its own)."""
        if not plan.drafts or not config.never_slower:
            return None
        return (int(inputs["input_ids"].shape[-1]).bit_length(), plan.method, plan.pruning, config.drop_rate,
                str(config.tree), config.num_draft_tokens, self.draft is None, overlapped)  # fmt: skip

    def remembered_plain(self, layers: LayerChoice | None, workload) -> bool:
        """Whether this answer decodes plainly on a remembered verdict (the guard's, or the self-draft's
        layer trials' for plain decoding)."""
        if layers is not None and layers.decided and layers.chosen is None:
            return True
        return workload is not None and self.verdicts.plain(workload)

    # ---- overlapped drafting -------------------------------------------------------------------
    def overlap(self, plan, config: DecodingConfig, layers, sampling, rule, inputs, stats) -> tuple | None:
        """Whether this answer drafts overlapped (sets ``stats.overlap``) and the workload key under which
        ``overlap="auto"`` records its rate (None: not a trial). ``overlap="on"`` raises ValueError here, before
        any prefill, when the answer cannot overlap."""
        if not plan.drafts or plan.method == "lookup" or config.overlap == "off":
            return None
        why = blocker(
            separate_draft=self.draft is not None and layers is None, shape=config.tree_shape(),
            sampling=sampling is not None, reads_prefix=rule is not None and rule.reads_prefix,
        )  # fmt: skip
        if why is None and default_runner(self.draft.device, self.target.device) is None:
            why = f"no worker can overlap a draft on {self.draft.device} with a target on {self.target.device}"
        if config.overlap == "on":
            if why is not None:
                raise ValueError(f"overlap='on': {why}; use overlap='auto' or 'off'")
            stats.overlap = True
            return None
        if why is not None or self.drafted_answers < COMPILE_AFTER_ANSWERS:  # a one-shot call never forks a worker
            return None
        if self.target.tp_group is not None:  # each rank would time its own answers: ranks could part ways
            return None
        key = (int(inputs["input_ids"].shape[-1]).bit_length(), plan.method, plan.pruning, config.drop_rate,
               config.num_draft_tokens, config.draft_stop_below, config.compile, config.never_slower)  # fmt: skip
        stats.overlap = self.overlap_choice.next(key)
        return None if self.overlap_choice.decided(key) is not None else key

    def worker(self, seq, shape, timer) -> DraftWorker:
        """The draft worker of an overlapped answer, started again when it died or when the draft's compiled
        graphs changed since it started (a forked worker holds the draft as it was; each answer says whether it
        drafts compiled).

        A forked worker drafts with :data:`WORKER_THREADS` torch threads, and torch.compile's graphs hold only for
        the thread count they were built under: before forking, the graphs the worker drafts through (the
        speculative chain) are built here under the worker's count (``timer``'s ``"compile"``), so that the
        worker never compiles."""
        runner = default_runner(self.draft.device, self.target.device)
        if seq.compiled and runner == "process":
            spec = speculative_shape(shape)
            key = ("worker", WORKER_THREADS, spec.paths)
            if key not in self._warmed:
                threads = torch.get_num_threads()
                torch.set_num_threads(WORKER_THREADS)
                try:
                    with timer("compile"):
                        warm_compiled(seq, spec, self.vocab)
                finally:
                    torch.set_num_threads(threads)
                self._warmed.add(key)
        key = frozenset(self._warmed)  # eager and compiled answers share a worker; new compiled graphs do not
        if self._worker is None or not self._worker.alive or self._worker_key != key:
            if self._worker is not None:
                self._worker.close()
            self._worker, self._worker_key = DraftWorker(self.draft, runner=runner), key
        return self._worker

    @property
    def draft_worker(self) -> DraftWorker | None:
        """The worker that drafts overlapped answers; None until one has run (or after :meth:`close`)."""
        return self._worker

    # ---- compiled draft steps ------------------------------------------------------------------
    def compile_draft(self, config: DecodingConfig, seq, sampling, timer) -> bool:
        """Whether a separate draft's decode-time forwards run compiled: always with ``compile="draft"`` /
        ``"all"``; with ``"auto"`` once this engine has drafted :data:`COMPILE_AFTER_ANSWERS` answers (a
        workload that repeats), on CPU, where a C++ compiler exists, for greedy answers. The first compiled
        answer compiles its graphs before decoding on a scratch copy of the draft's cache (``timer``'s
        ``"compile"``), so that no decoding step waits for a compile and the guard times only real steps."""
        if config.compile == "off":
            return False
        if config.compile == "auto":
            if self.draft is None or self.draft.device.type != "cpu":
                return False
            if self.drafted_answers < COMPILE_AFTER_ANSWERS or not has_compiler(self.draft.device):
                return False
            if sampling is not None:  # compiled and eager draft probabilities differ in the last bits, and
                return False  # a sampled answer's draws follow them: its seed gives the same tokens on every call
        shape = config.tree_shape()
        key = shape.paths if isinstance(shape, TreeShape) else shape
        if key not in self._warmed:  # each shape drafts through graphs of its own (masks, widths)
            with timer("compile"):
                warm_compiled(seq, shape, self.vocab)
            self._warmed.add(key)
        return True

    @property
    def draft_compiled(self) -> bool:
        """Whether the separate draft's decode steps run compiled now (some graphs are built)."""
        return bool(self._warmed)

    # ---- after an answer -----------------------------------------------------------------------
    def record(self, prepared, guard) -> None:
        """What a decoded answer teaches (its decode time final): the guard's verdict and plain rate, one more
        drafted answer, and an ``overlap="auto"`` trial's decode rate."""
        stats = prepared.stats
        if prepared.plan.drafts and prepared.workload is not None and guard is not None:
            measured = guard.plain.per_second if guard.plain.steps else None
            self.verdicts.record(prepared.workload, lost=stats.speculation == "fell_back", plain_rate=measured)
        if prepared.plan.drafts and stats.speculation not in ("skipped", ""):
            self.drafted_answers += 1
        if prepared.overlap_trial is not None and stats.speculation != "skipped" and stats.decode_s > 0:
            key, overlapped = prepared.overlap_trial  # a remembered plain verdict's answer: what that way gives now
            self.overlap_choice.record(key, overlapped, stats.new_tokens / stats.decode_s)

    def forget(self) -> None:
        """Forget every measurement and verdict (the next answers decide afresh); compiled graphs stay built."""
        self.layer_memory.clear()
        self.verdicts.clear()
        self.overlap_choice.clear()

    def close(self) -> None:
        """End the draft worker, if one started; a later overlapped answer starts another."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
