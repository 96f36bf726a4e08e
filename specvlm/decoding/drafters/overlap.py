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
import pickle
import queue
import threading
import traceback

import torch

from specvlm.decoding.drafters.base import Drafter, Step
from specvlm.decoding.drafters.model import ModelDrafter, is_chain
from specvlm.decoding.drafting import Proposal, propose
from specvlm.decoding.target import DecodingState
from specvlm.decoding.trees import DraftTree, TreeStructure, chain
from specvlm.models import cache as kv
from specvlm.stats import GenerationStats

logger = logging.getLogger(__name__)

#: Where the draft's worker runs: a forked process (CPU: two interpreters, no shared GIL) or a thread (a draft
#: on another device than the target: kernel launches are asynchronous, so one interpreter keeps both busy).
RUNNERS = ("process", "thread")
#: Torch threads of a process worker by default (the decoding process keeps the rest while an answer drafts).
WORKER_THREADS = 1


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


def speculative_shape(shape):
    """The shape every proposal of an overlapped answer drafts in the worker: a chain one longer than ``shape``'s
    (its first token guesses the target's bonus token)."""
    return chain(shape.depth + 1)


@functools.lru_cache(maxsize=64)
def _chain_structure(n: int) -> TreeStructure:
    return TreeStructure.of(list(range(-1, n - 1)))


class _Answer:
    """The worker's side of one answer: a state machine driven by the drafter's messages, answered in order.

    ``current`` is the proposal the target is verifying, ``lead`` its nodes already committed (by plain steps,
    or 1 after a hit: the bonus token, drafted as the speculative chain's first token), ``spec`` the
    speculative proposal.
    """

    def __init__(self, seq: DecodingState, vocab: int, stop_below: float, spec_shape):
        self.seq, self.vocab, self.stop_below, self.spec_shape = seq, vocab, stop_below, spec_shape
        self.current: Proposal | None = None
        self.lead = 0
        self.spec: Proposal | None = None
        self.forwards = 0

    def _propose(self, out: list[int], depth: int) -> Proposal:
        proposal = propose(self.seq, out, self.spec_shape, vocab=self.vocab, max_depth=depth, stop_below=self.stop_below)
        self.forwards += proposal.forwards
        return proposal

    def handle(self, message: tuple):
        kind = message[0]
        if kind == "propose":  # ("propose", out, depth) -> the chain's tokens (a chain's length and one more at most)
            self.current, self.lead, self.spec = self._propose(message[1], message[2]), 0, None
            return self.current.tree.tokens.tolist()
        if kind == "speculate":  # ("speculate", out, depth) -> the speculative chain's tokens
            drafted = self.current.tree.tokens[self.lead :].tolist()
            self.spec = self._propose(message[1] + drafted, message[2])
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
            kv.keep(self.seq.cache, proposal.base, [fed[i] for i in path if fed[i] >= 0])
            self.current, self.lead, self.spec = None, 0, None
            return None
        raise ValueError(f"unknown message {kind!r}")


#: The messages a worker answers (every other message gets no reply).
_REPLIES = ("propose", "speculate", "end")


def _serve(adapter, channel, close, threads: int | None) -> None:
    """A worker's loop over answers: ``("begin", state fields...)`` starts one, ``("end",)`` ends it (replying
    the draft forwards it ran), ``("exit",)`` ends the worker. Replies are ``("reply", value)``; an error is
    replied as ``("error", text)`` and ends the worker."""
    if close is not None:
        close.close()  # the decoding process's end, inherited by a forked worker: the pipe must end when that one does
    if threads:
        torch.set_num_threads(threads)
    answer: _Answer | None = None
    with torch.no_grad():
        while True:
            try:
                message = channel.recv()
            except (EOFError, OSError):
                return
            kind = message[0]
            if kind == "exit":
                return
            try:
                if kind == "begin":
                    cache, prefix, next_pos, axes, backend, compiled, vocab, stop_below, spec_shape = message[1:]
                    seq = DecodingState(adapter, cache, prefix, next_pos, axes, backend=backend, compiled=compiled)
                    answer = _Answer(seq, vocab, stop_below, spec_shape)
                    continue
                if kind == "end":
                    value, answer = answer.forwards, None
                else:
                    value = answer.handle(message)
            except Exception:  # noqa: BLE001 - the drafter raises it in the decoding process
                channel.send(("error", traceback.format_exc()))
                return
            if kind in _REPLIES:
                channel.send(("reply", value))


class _Bytes:
    """A process worker's end of a pipe: every message pickled by value (a cache's tensors included, copied)."""

    def __init__(self, conn):
        self.conn = conn

    def send(self, message) -> None:
        self.conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    def recv(self):
        return pickle.loads(self.conn.recv_bytes())

    def close(self) -> None:
        self.conn.close()


class _Queues:
    """A thread worker's end: messages passed by reference through two queues."""

    def __init__(self, inbox: queue.Queue, outbox: queue.Queue, alive=None):
        self.inbox, self.outbox, self.alive = inbox, outbox, alive  # alive: whether the other end still runs

    def send(self, message) -> None:
        self.outbox.put(message)

    def recv(self):
        while True:
            try:
                return self.inbox.get(timeout=1.0)
            except queue.Empty:
                if self.alive is not None and not self.alive():
                    raise EOFError("the worker thread ended") from None

    def close(self) -> None:
        pass


class DraftWorker:
    """A worker that drafts with one draft model, answer after answer: a forked process (it holds the draft
    model as it was when forked: its weights and its compiled steps) or a thread.

    adapter: the draft model's adapter
    runner: "process" or "thread" (:data:`RUNNERS`)
    threads: torch threads of a process worker (the decoding process keeps the rest while an answer drafts)
    """

    def __init__(self, adapter, *, runner: str = "process", threads: int = WORKER_THREADS):
        if runner not in RUNNERS:
            raise ValueError(f"runner={runner!r}; choose one of {', '.join(map(repr, RUNNERS))}")
        if runner == "process" and "fork" not in multiprocessing.get_all_start_methods():
            raise ValueError("runner='process' needs the fork start method, which this platform lacks")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"worker_threads={threads!r} must be an int >= 1")
        self.adapter, self.runner, self.threads = adapter, runner, threads
        if runner == "process":
            ours, theirs = multiprocessing.Pipe()
            context = multiprocessing.get_context("fork")
            self._worker = context.Process(target=_serve, args=(adapter, _Bytes(theirs), ours, threads), daemon=True)
            self._worker.start()
            theirs.close()
            self.channel = _Bytes(ours)
        else:
            to_worker, from_worker = queue.Queue(), queue.Queue()
            self._worker = threading.Thread(target=_serve, args=(adapter, _Queues(to_worker, from_worker), None, None), daemon=True)
            self._worker.start()
            self.channel = _Queues(from_worker, to_worker, alive=self._worker.is_alive)

    @property
    def alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def send(self, *message) -> None:
        try:
            self.channel.send(message)
        except (BrokenPipeError, OSError):
            self.close()
            raise RuntimeError("the overlapped draft's worker exited unexpectedly") from None

    def recv(self):
        try:
            kind, value = self.channel.recv()
        except (EOFError, OSError):
            self.close()
            raise RuntimeError("the overlapped draft's worker exited unexpectedly") from None
        if kind == "error":
            self.close()
            raise RuntimeError(f"the overlapped draft's worker failed:\n{value}")
        return value

    def close(self) -> None:
        """End the worker (a process is joined, a stuck one killed)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            self.channel.send(("exit",))
        except (BrokenPipeError, OSError):
            pass
        worker.join(timeout=5)
        if isinstance(worker, multiprocessing.process.BaseProcess) and worker.is_alive():
            worker.kill()
            worker.join()
        self.channel.close()

    def __del__(self):
        if getattr(self, "_worker", None) is not None and self.runner == "process":
            self.close()


class OverlapDrafter(Drafter):
    """A separate draft model's chain, drafted in a worker while the target works (see the module docstring).

    inner: the :class:`ModelDrafter` (its draft sequence prefilled); its state moves to the worker at the first
        proposal, and the decoding process never touches its cache again
    worker: a :class:`DraftWorker` for the draft model, shared by the answers of an engine (None: one of its own,
        on ``runner`` with ``worker_threads``, ended with the answer)
    """

    name = "draft model, overlapped"

    def __init__(self, inner: ModelDrafter, *, worker: DraftWorker | None = None, runner: str = "process",
                 worker_threads: int | None = None):  # fmt: skip
        check_overlap_support(inner)
        self.inner = inner
        self.depth = inner.shape.depth
        self.hits = 0  # chains verified, each drafted while the target worked (a verification or plain steps)
        self._own = worker is None
        self.worker = worker if worker is not None else DraftWorker(
            inner.seq.adapter, runner=runner, threads=WORKER_THREADS if worker_threads is None else worker_threads
        )
        self._spec_shape = speculative_shape(inner.shape)
        self._begun = False
        self._threads: int | None = None  # the decoding process's torch threads before the answer began
        self._chain: list[int] = []  # the chain being verified
        self._ready: list[int] | None = None  # the next chain, drafted during the last verification
        self._sent_at: int | None = None  # committed tokens when a chain was asked for during plain steps
        self._outstanding = 0  # replies the worker still owes (a chain being drafted)
        self._forwards = 0

    # ---- the worker --------------------------------------------------------------------------
    def _begin(self) -> None:
        seq = self.inner.seq
        self._begun = True
        self._send("begin", seq.cache, seq.prefix, seq.next_pos, seq.axes, seq.backend, seq.compiled,
                   self.inner.vocab, self.inner.stop_below, self._spec_shape)  # fmt: skip
        if self.worker.runner == "process":
            self._threads = torch.get_num_threads()
            torch.set_num_threads(max(1, min(self._threads, os.cpu_count() or 1) - self.worker.threads))

    def _send(self, *message, reply: bool = False) -> None:
        self.worker.send(*message)
        self._outstanding += reply

    def _answer(self):
        try:
            value = self.worker.recv()
        except RuntimeError:
            self._outstanding = 0
            self.close()
            raise
        self._outstanding -= 1
        return value

    # ---- the drafter -------------------------------------------------------------------------
    def propose(self, out: list[int], max_depth: int) -> DraftTree | None:
        if not self._begun:
            self._begin()
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
                self._send("lead", m)
                tokens = chain[m:]
            else:  # the draft's cache keeps the tokens it guessed right (they are committed), nothing else
                self._send("commit", list(range(m)))
        if tokens is None:
            # draft in the worker while the target decodes a plain step (its token is the chain's first guess)
            self._send("propose", list(out), min(self.depth + 1, max_depth), reply=True)
            self._sent_at = len(out)
            return None
        self.hits += 1
        self._chain = tokens
        after = max_depth - len(tokens) - 1  # the next chain's depth limit if this one is accepted whole
        if after >= 1:  # draft the next chain while the target verifies this one
            self._send("speculate", list(out), 1 + min(self.depth, after), reply=True)
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
            self._send("advance")
            self._ready = spec[1:]
        else:
            self._send("commit", list(step.path))
            self._ready = None

    def finish(self, stats: GenerationStats) -> None:
        self.close()
        stats.draft_steps += self._forwards
        stats.overlap_hits += self.hits
        stats.speculation = stats.speculation or "on"

    def close(self) -> None:
        """End the answer in the worker (reading its forward count; a worker of its own ends too) and give
        the decoding process its threads back."""
        if not self._begun:
            if self._own:
                self.worker.close()
            return
        self._begun = False
        try:
            if not self.worker.alive:  # it failed (and said why) or died: nothing to end
                raise RuntimeError("the worker ended")
            while self._outstanding:
                self._answer()
            self._send("end", reply=True)
            self._forwards = self._answer()
        except RuntimeError:
            pass
        finally:
            if self._own:
                self.worker.close()
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
    :data:`TRIALS` answers; then the way whose fastest answer decoded at the higher rate (committed tokens per
    second) is kept for :data:`RETRY_ANSWERS` answers, after which both are tried again. Overlap is kept only
    where it measured faster; a tie keeps sequential drafting.

    Each way is judged by its fastest answer, not a mean or median: other work on the machine only ever slows
    an answer down, so the noise is one-sided and the fastest answer is the closest to what the way can do
    (the bench compares fastest runs for the same reason). A median of three answers let one way's two
    unlucky answers decide against it.
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
            on, off = max(entry["on"]), max(entry["off"])
            entry.update(chosen=on > off, left=self.retry)
            logger.info(
                "overlap: %.0f tokens/s overlapped, %.0f sequential (fastest of %d answers each): %s",
                on, off, self.trials, "overlapping" if on > off else "drafting sequentially",
            )  # fmt: skip

    def decided(self, key) -> bool | None:
        """The kept way for workload ``key`` (None while it is being tried)."""
        entry = self._state.get(key)
        return None if entry is None else entry["chosen"]

    def keys(self) -> list:
        """The workload keys with trials or a decision, least recently used first."""
        return list(self._state)

    def clear(self) -> None:
        self._state.clear()
