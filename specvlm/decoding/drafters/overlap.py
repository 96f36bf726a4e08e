"""Drafting that overlaps verification: the draft drafts while the target verifies or decodes.

PEARL-style pre- and post-verify drafting, lossless. A :class:`ModelDrafter`'s draft model runs in a worker of
its own (a forked process on CPU, with the cores split between the two; a thread where the draft sits on
another device than the target, whose kernels run asynchronously):

* **post-verify**: while the target verifies a chain, the worker drafts ahead as if the whole chain were
  accepted: one token more than a chain, whose first token is the draft's guess of the target's bonus token.
  When the target accepted the whole chain and its bonus token equals that guess, the rest of the
  speculative chain is the next step's chain, already drafted (and already in the draft's cache);
* **pre-verify**: otherwise (and at the answer's start) the worker drafts a chain under the pending token
  while the target decodes a plain step; when the draft's first token equals the target's, the rest is the
  next step's chain, and otherwise another plain step runs while the draft catches up.

Every committed token is the target's own, as in sequential drafting: the output is the same, while where the
steps split it (and so tau) differs. A wrong guess costs no target work, only draft work that ran beside it.

Supported where it can be exact and cheap: a separate draft model, a static chain, greedy decoding, and a
next-token rule that does not read the prefix (:func:`blocker` says why not otherwise).

With ``overlap="auto"`` the engine decides per workload (:class:`OverlapChoice`): answers alternate between
sequential and overlapped drafting, and overlap is kept only where it measured faster.

What this module deliberately does not do: overlap a tree, a sampled chain or the target drafting for itself.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import statistics
import threading
import traceback

import torch

from specvlm.decoding.drafters.base import Drafter, Step
from specvlm.decoding.drafters.model import ModelDrafter, is_chain
from specvlm.decoding.drafting import Proposal, propose
from specvlm.decoding.trees import DraftTree, TreeStructure, chain
from specvlm.models import cache as kv
from specvlm.stats import GenerationStats

logger = logging.getLogger(__name__)

#: Where the draft's worker runs: a forked process (CPU: two interpreters, no shared GIL) or a thread (a draft
#: on another device than the target: kernel launches are asynchronous, so one interpreter keeps both busy).
RUNNERS = ("process", "thread")


def blocker(*, separate_draft: bool, shape, sampling: bool, reads_prefix: bool) -> str | None:
    """Why an answer with these settings cannot draft overlapped, or None when it can."""
    if not separate_draft:
        return "only a separate draft model's chain can overlap verification (not a self-draft or prompt lookup)"
    if not is_chain(shape):
        return "only a chain can be drafted during verification (tree='chain')"
    if sampling:
        return "only greedy decoding drafts overlapped (a sampled chain's draws depend on the verifier's)"
    if reads_prefix:
        return "the target's logits processors read the prefix: the draft would need the bonus token first"
    return None


def overlap_limits(inner: Drafter) -> str | None:
    """Why the drafter ``inner`` cannot draft overlapped, or None when it can."""
    if type(inner) is not ModelDrafter:
        return blocker(separate_draft=False, shape=None, sampling=False, reads_prefix=False)
    return blocker(separate_draft=True, shape=inner.shape, sampling=inner.sampling is not None, reads_prefix=inner.rule is not None)


def check_overlap_support(inner: Drafter) -> None:
    """Raise ValueError when ``inner`` cannot draft overlapped (:func:`overlap_limits`)."""
    why = overlap_limits(inner)
    if why is not None:
        raise ValueError(f"overlap: {why}")


def default_runner(draft_device: torch.device, target_device: torch.device) -> str | None:
    """The runner for a draft on ``draft_device`` beside a target on ``target_device``, or None where no
    runner can overlap them: a process on CPU (where fork exists), a thread for a draft on a device of its own."""
    if draft_device.type == "cpu" and target_device.type == "cpu":
        return "process" if "fork" in multiprocessing.get_all_start_methods() else None
    if draft_device != target_device:
        return "thread"
    return None


@functools.lru_cache(maxsize=64)
def _chain_structure(n: int) -> TreeStructure:
    return TreeStructure.of(list(range(-1, n - 1)))


class _Worker:
    """The draft's side: a state machine driven by the drafter's messages (one pipe, answered in order).

    ``current`` is the proposal the target is verifying, ``lead`` its nodes already committed (1 after a hit:
    the bonus token, drafted as the speculative chain's first token), ``spec`` the speculative proposal.
    """

    def __init__(self, inner: ModelDrafter, spec_shape):
        self.inner, self.spec_shape = inner, spec_shape
        self.current: Proposal | None = None
        self.lead = 0
        self.spec: Proposal | None = None
        self.forwards = 0

    def _propose(self, out: list[int], shape, depth: int) -> Proposal:
        inner = self.inner
        proposal = propose(inner.seq, out, shape, vocab=inner.vocab, max_depth=depth, stop_below=inner.stop_below)
        self.forwards += proposal.forwards
        return proposal

    def handle(self, message: tuple):
        kind = message[0]
        if kind == "propose":  # ("propose", out, depth) -> the chain's tokens (a chain's length and one more at most)
            self.current, self.lead, self.spec = self._propose(message[1], self.spec_shape, message[2]), 0, None
            return self.current.tree.tokens.tolist()
        if kind == "speculate":  # ("speculate", out, depth) -> the speculative chain's tokens
            drafted = self.current.tree.tokens[self.lead :].tolist()
            self.spec = self._propose(message[1] + drafted, self.spec_shape, message[2])
            return self.spec.tree.tokens.tolist()
        if kind == "advance":  # the chain and the speculation's first token were committed
            self.current, self.lead, self.spec = self.spec, 1, None
            return None
        if kind == "lead":  # ("lead", m): plain steps committed the current proposal's first m tokens
            self.lead = message[1]
            return None
        if kind == "commit":  # ("commit", path): keep the committed nodes of the verified chain
            proposal, lead = self.current, self.lead
            fed = proposal.fed
            path = list(range(lead)) + [i + lead for i in message[1]]
            kv.keep(self.inner.seq.cache, proposal.base, [fed[i] for i in path if fed[i] >= 0])
            self.current, self.lead, self.spec = None, 0, None
            return None
        if kind == "stop":
            return self.forwards
        raise ValueError(f"unknown message {kind!r}")


def _serve(inner: ModelDrafter, spec_shape, conn, close, threads: int | None) -> None:
    """The worker's loop: answer every message (a ``("reply", value)``, or ``("error", text)``) until "stop"."""
    if close is not None:
        close.close()  # the drafter's end, inherited by a forked worker: the pipe must end when the drafter's does
    if threads:
        torch.set_num_threads(threads)
    worker = _Worker(inner, spec_shape)
    with torch.no_grad():
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            try:
                value = worker.handle(message)
            except Exception:  # noqa: BLE001 - the drafter raises it in the decoding process
                conn.send(("error", traceback.format_exc()))
                return
            if message[0] in ("propose", "speculate", "stop"):
                conn.send(("reply", value))
            if message[0] == "stop":
                return


class OverlapDrafter(Drafter):
    """A separate draft model's chain, drafted in a worker while the target verifies (see the module docstring).

    inner: the :class:`ModelDrafter` (its draft sequence prefilled); the worker drafts with it, the decoding
        process never touches its cache again
    runner: "process" or "thread" (:data:`RUNNERS`; :func:`default_runner` picks one for the devices)
    worker_threads: torch threads of a process worker; the decoding process keeps the rest of its threads
        while the worker runs (None: one, the draft's small operators gain nothing from more)
    """

    name = "draft model, overlapped"

    def __init__(self, inner: ModelDrafter, *, runner: str = "process", worker_threads: int | None = None):
        check_overlap_support(inner)
        if runner not in RUNNERS:
            raise ValueError(f"runner={runner!r}; choose one of {', '.join(map(repr, RUNNERS))}")
        if runner == "process" and "fork" not in multiprocessing.get_all_start_methods():
            raise ValueError("runner='process' needs the fork start method, which this platform lacks")
        if worker_threads is not None and (isinstance(worker_threads, bool) or not isinstance(worker_threads, int) or worker_threads < 1):
            raise ValueError(f"worker_threads={worker_threads!r} must be an int >= 1")
        self.inner = inner
        self.runner = runner
        self.worker_threads = worker_threads or 1
        self.depth = inner.shape.depth
        self.hits = 0  # chains verified, each drafted while the target worked (a verification or plain steps)
        self._spec_shape = chain(self.depth + 1)
        self._conn = None
        self._worker = None
        self._threads: int | None = None  # the decoding process's torch threads before the worker started
        self._chain: list[int] = []  # the chain being verified
        self._ready: list[int] | None = None  # the next chain, drafted during the last verification
        self._sent_at: int | None = None  # committed tokens when a chain was asked for during plain steps
        self._outstanding = 0  # replies the worker still owes (a chain being drafted)
        self._forwards = 0

    # ---- the worker --------------------------------------------------------------------------
    def _start(self) -> None:
        ours, theirs = multiprocessing.Pipe()
        if self.runner == "process":
            context = multiprocessing.get_context("fork")
            self._worker = context.Process(
                target=_serve, args=(self.inner, self._spec_shape, theirs, ours, self.worker_threads), daemon=True
            )
            self._worker.start()
            theirs.close()
            self._threads = torch.get_num_threads()
            torch.set_num_threads(max(1, min(self._threads, os.cpu_count() or 1) - self.worker_threads))
        else:
            self._worker = threading.Thread(
                target=_serve, args=(self.inner, self._spec_shape, theirs, None, None), daemon=True
            )
            self._worker.start()
        self._conn = ours

    def _ask(self, *message):
        self._conn.send(message)
        self._outstanding += 1
        return self._answer()

    def _answer(self):
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            self._outstanding = 0
            self.close()
            raise RuntimeError("the overlapped draft's worker exited unexpectedly") from None
        self._outstanding -= 1
        if kind == "error":
            self._outstanding = 0
            self.close()
            raise RuntimeError(f"the overlapped draft's worker failed:\n{value}")
        return value

    # ---- the drafter -------------------------------------------------------------------------
    def propose(self, out: list[int], max_depth: int) -> DraftTree | None:
        if self._worker is None:
            self._start()
        tokens = None
        if self._ready is not None:  # drafted during the last verification
            tokens, self._ready = self._ready, None
        elif self._sent_at is not None:  # drafted during the plain steps since out[:sent_at] was committed
            chain, since = self._answer(), out[self._sent_at :]
            self._sent_at = None
            m = 0
            while m < min(len(chain), len(since)) and chain[m] == since[m]:
                m += 1
            if m == len(since) and len(chain) > m:  # it guessed what the plain steps committed: the rest is a chain
                self._conn.send(("lead", m))
                tokens = chain[m:]
            else:  # the draft's cache keeps the tokens it guessed right (they are committed), nothing else
                self._conn.send(("commit", list(range(m))))
        if tokens is None:
            # draft in the worker while the target decodes a plain step (its token is the chain's first guess)
            self._conn.send(("propose", list(out), min(self.depth + 1, max_depth)))
            self._outstanding += 1
            self._sent_at = len(out)
            return None
        self.hits += 1
        self._chain = tokens
        after = max_depth - len(tokens) - 1  # the next chain's depth limit if this one is accepted whole
        if after >= 1:  # draft the next chain while the target verifies this one
            self._conn.send(("speculate", list(out), 1 + min(self.depth, after)))
            self._outstanding += 1
        device = self.inner.seq.adapter.device
        structure = _chain_structure(len(tokens))
        return DraftTree(
            tokens=torch.tensor(tokens, dtype=torch.long, device=device), parents=structure.parents,
            depths=structure.depths, structure=structure,
        )  # fmt: skip

    def commit(self, step: Step) -> None:
        if step.tree is None:  # a plain step: the worker goes on drafting
            return
        spec = self._answer() if self._outstanding else None
        n = len(self._chain)
        whole = len(step.path) == n and len(step.committed) == n + 1
        if whole and spec is not None and len(spec) >= 2 and spec[0] == step.committed[-1]:
            self._conn.send(("advance",))
            self._ready = spec[1:]
        else:
            self._conn.send(("commit", list(step.path)))
            self._ready = None

    def finish(self, stats: GenerationStats) -> None:
        self.close()
        stats.draft_steps += self._forwards
        stats.overlap_hits += self.hits
        stats.speculation = stats.speculation or "on"

    def close(self) -> None:
        """Stop the worker (reading its forward count) and give the decoding process its threads back."""
        if self._worker is None:
            return
        worker, self._worker = self._worker, None
        try:
            while self._outstanding:
                self._answer()
            self._forwards = self._ask("stop")
        except (RuntimeError, OSError, BrokenPipeError):
            pass
        finally:
            self._conn.close()
            worker.join(timeout=10)
            if self._threads is not None:
                torch.set_num_threads(self._threads)
                self._threads = None


#: ``overlap="auto"``: answers of a workload decoded each way (alternating) before the faster way is kept.
TRIALS = 3
#: ``overlap="auto"``: answers that follow a decision before both ways are tried again (the load drifts).
RETRY_ANSWERS = 32


class OverlapChoice:
    """``overlap="auto"``: per workload, whether its next answer drafts overlapped.

    The workload's answers alternate between sequential and overlapped drafting until each way has decoded
    :data:`TRIALS` answers; then the way whose median decode rate (committed tokens per second) is higher is
    kept for :data:`RETRY_ANSWERS` answers, after which both are tried again. Overlap is kept only where it
    measured faster; a tie keeps sequential drafting.
    """

    def __init__(self, trials: int = TRIALS, retry: int = RETRY_ANSWERS, workloads: int = 64):
        self.trials, self.retry, self.workloads = trials, retry, workloads
        self._state: dict = {}  # key -> {"off": [rates], "on": [rates], "chosen": bool | None, "left": int}

    def _entry(self, key) -> dict:
        entry = self._state.pop(key, None) or {"off": [], "on": [], "chosen": None, "left": 0}
        self._state[key] = entry  # most recently used last
        while len(self._state) > self.workloads:
            self._state.pop(next(iter(self._state)))
        return entry

    def next(self, key) -> bool:
        """Whether the next answer of workload ``key`` drafts overlapped."""
        entry = self._entry(key)
        if entry["chosen"] is not None:
            return entry["chosen"]
        return len(entry["on"]) < len(entry["off"])  # sequential first, then alternating

    def record(self, key, overlapped: bool, rate: float) -> None:
        """An answer of workload ``key`` decoded at ``rate`` committed tokens per second."""
        entry = self._entry(key)
        if entry["chosen"] is not None:
            entry["left"] -= 1
            if entry["left"] <= 0:
                entry.update(off=[], on=[], chosen=None)
            return
        entry["on" if overlapped else "off"].append(rate)
        if min(len(entry["on"]), len(entry["off"])) >= self.trials:
            faster = statistics.median(entry["on"]) > statistics.median(entry["off"])
            entry.update(chosen=faster, left=self.retry)
            logger.info(
                "overlap: %.0f tokens/s overlapped, %.0f sequential over %d answers each: %s",
                statistics.median(entry["on"]), statistics.median(entry["off"]), self.trials,
                "overlapping" if faster else "drafting sequentially",
            )  # fmt: skip

    def decided(self, key) -> bool | None:
        """The kept way for workload ``key`` (None while it is being tried)."""
        entry = self._state.get(key)
        return None if entry is None else entry["chosen"]

    def clear(self) -> None:
        self._state.clear()
