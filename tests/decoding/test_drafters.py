"""The drafter interface and its drafters: prompt lookup, the lazy start, the never-slower guard, and a
drafter written outside the library running through the public pipeline (``prepare`` -> ``decode``). (Prompt
lookup's output against the stock model, in every family: test_lossless.py.)"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from specvlm import SpecVLM
from specvlm.loading import has_compiler
from specvlm.decoding.drafters import Drafter, Guard, LazyStart, PromptLookupDrafter, Step, Verdicts
from specvlm.decoding.drafters.guard import CHECK_STEPS, PLAIN_ANSWERS, PROBE_STEPS
from specvlm.decoding.trees import DraftTree
from specvlm.stats import GenerationStats
from tiny_pairs import CORE_FAMILIES as FAMILIES

MAX_NEW = 40


def _step(tree, committed, seconds, path=None) -> Step:
    """A step that committed ``committed`` tokens in ``seconds`` (the target's sequence is not read here)."""
    path = list(range(len(committed) - 1)) if path is None else path
    return Step(tree=tree, path=path, committed=committed, before=0, target=None, seconds=seconds)


def _chain(tokens: list[int]) -> DraftTree:
    n = len(tokens)
    return DraftTree(tokens=torch.tensor(tokens), parents=torch.arange(-1, n - 1), depths=torch.arange(1, n + 1))


# ---- prompt lookup ------------------------------------------------------------------------------


def test_prompt_lookup_drafts_what_followed_the_latest_occurrence_of_the_longest_ngram():
    #          0  1  2  3  4  5  6  7  8  9
    context = [5, 6, 7, 8, 9, 5, 6, 7, 1, 2]
    drafter = PromptLookupDrafter(context, 3, vocab=16)
    # the pending token 7 after committed [5, 6]: the 3-gram (5, 6, 7) last occurred at 5..7, followed by 1, 2
    tree = drafter.propose([5, 6, 7], max_depth=8)
    assert tree.tokens.tolist() == [1, 2, 5]  # the context, then the committed tokens that follow it
    assert tree.parents.tolist() == [-1, 0, 1] and tree.depths.tolist() == [1, 2, 3] and tree.q is None
    # a 1-gram only: the pending token 9 last occurred at 4, followed by 5, 6, 7 (the longest n-grams miss)
    fresh = PromptLookupDrafter(context, 3, vocab=16)
    assert fresh.propose([3, 9], max_depth=8).tokens.tolist() == [5, 6, 7]
    # the depth limit cuts the chain, and a token never seen proposes nothing (a plain step)
    assert fresh.propose([3, 9, 4, 9], max_depth=2).tokens.tolist() == [4, 9]
    assert fresh.propose([3, 9, 4, 9, 15], max_depth=8) is None
    assert (fresh.lookups, fresh.proposals) == (3, 2)


def test_prompt_lookup_indexes_the_committed_tokens_too():
    drafter = PromptLookupDrafter([1, 2], 4, vocab=16)
    assert drafter.propose([10], max_depth=4) is None
    assert drafter.propose([10, 11, 12, 10], max_depth=4).tokens.tolist() == [11, 12, 10]  # the answer's own n-gram


def test_prompt_lookup_proposals_carry_one_hot_q_when_sampling():
    drafter = PromptLookupDrafter([4, 5, 6], 2, vocab=8, sampling=True)
    tree = drafter.propose([4], max_depth=4)
    assert tree.tokens.tolist() == [5, 6]
    expected = torch.zeros(3, 8)
    expected[0, 5] = expected[1, 6] = 1.0  # the root's child, then node 0's child; the leaf draws nothing
    assert torch.equal(tree.q, expected)


def test_prompt_lookup_refuses_bad_ngram_bounds():
    with pytest.raises(ValueError, match="min_ngram"):
        PromptLookupDrafter([1], 3, vocab=8, max_ngram=1, min_ngram=2)


# ---- the lazy start -----------------------------------------------------------------------------


class _Recording(Drafter):
    """Proposes a fixed chain; records what it is asked and told."""

    def __init__(self, tokens=(1, 2)):
        self.tokens = list(tokens)
        self.proposed, self.committed = [], []

    def propose(self, out, max_depth):
        self.proposed.append(list(out))
        return _chain(self.tokens[:max_depth])

    def commit(self, step):
        self.committed.append(step.committed)


def test_lazy_start_builds_its_drafter_once_enough_tokens_are_committed():
    built = []
    lazy = LazyStart(lambda: built.append(_Recording()) or built[-1], after=3)
    assert lazy.propose([1], 5) is None and lazy.propose([1, 2], 5) is None and not built
    lazy.commit(_step(None, [2], 0.1))  # not started: nothing to tell
    assert lazy.propose([1, 2, 3], 5).tokens.tolist() == [1, 2] and len(built) == 1
    lazy.propose([1, 2, 3, 4], 5)
    assert len(built) == 1 and built[0].proposed == [[1, 2, 3], [1, 2, 3, 4]]
    stats = GenerationStats(method="specvlm")
    lazy.finish(stats)
    assert stats.draft_start_tokens == 3 and stats.speculation == "on"
    never = LazyStart(lambda: pytest.fail("a short answer must not build the drafter"), after=8)
    never.propose([1], 5)
    stats = GenerationStats(method="specvlm")
    never.finish(stats)
    assert stats.speculation == "skipped"


# ---- the never-slower guard ---------------------------------------------------------------------


def _run_guard(guard: Guard, drafted_seconds: float, steps: int, plain_seconds: float = 1.0) -> list[bool]:
    """Drive ``guard`` for ``steps`` steps: a plain step commits 1 token in ``plain_seconds``, a drafted one 3
    tokens in ``drafted_seconds``; returns which steps drafted."""
    out, drafted = [0], []
    for _ in range(steps):
        tree = guard.propose(out, 8)
        drafted.append(tree is not None)
        committed = [1, 1, 1] if tree is not None else [1]
        guard.commit(_step(tree, committed, drafted_seconds if tree is not None else plain_seconds))
        out += committed
    return drafted


def test_guard_times_plain_steps_first_and_keeps_a_drafter_that_pays():
    inner = _Recording()
    guard = Guard(inner)
    drafted = _run_guard(guard, drafted_seconds=1.5, steps=20)  # 2 tokens / s against 1 token / s plain
    assert drafted == [False] * PROBE_STEPS + [True] * (20 - PROBE_STEPS)
    assert not inner.proposed[0] == [0]  # the probes were plain steps the inner drafter never saw
    assert len(inner.committed) == 20  # ... but it was told of every step (it keeps its own state exact)
    stats = GenerationStats(method="specvlm")
    guard.finish(stats)
    assert stats.speculation == "on" and stats.fell_back_at == 0


def test_guard_turns_the_rest_of_the_answer_plain_when_drafting_is_slower():
    inner = _Recording()
    guard = Guard(inner)
    drafted = _run_guard(guard, drafted_seconds=6.0, steps=20)  # 0.5 tokens / s against 1 token / s plain
    # probes, then a warm-up step (left out of the rate) and CHECK_STEPS timed drafted steps, then plain
    drafting = 1 + CHECK_STEPS
    assert drafted == [False] * PROBE_STEPS + [True] * drafting + [False] * (20 - PROBE_STEPS - drafting)
    assert len(inner.proposed) == drafting and len(inner.committed) == PROBE_STEPS + drafting  # dropped after
    stats = GenerationStats(method="specvlm")
    guard.finish(stats)
    assert stats.speculation == "fell_back"
    assert stats.fell_back_at == 1 + PROBE_STEPS + 3 * drafting  # the prefill's token, the probes', the drafts'


def test_guard_counts_a_wrapped_drafters_own_plain_steps_as_probes():
    """A lazy start's plain steps measure plain decoding: no probe steps of the guard's own are added."""
    guard = Guard(LazyStart(_Recording, after=5))
    drafted = _run_guard(guard, drafted_seconds=1.0, steps=8)
    assert drafted == [False] * 4 + [True] * 4  # plain until 5 tokens are committed, drafted right after


def test_guard_with_a_remembered_plain_rate_drafts_at_once_and_judges_by_it():
    drafted = _run_guard(Guard(_Recording(), plain_rate=1.0), drafted_seconds=1.5, steps=8)  # 2 tokens / s
    assert drafted == [True] * 8  # no probe steps: an earlier answer of the workload measured plain decoding
    slower = Guard(_Recording(), plain_rate=4.0)  # plain decoding was measured at 4 tokens / s
    drafted = _run_guard(slower, drafted_seconds=1.5, steps=8)
    assert drafted == [True] * (1 + CHECK_STEPS) + [False] * (8 - 1 - CHECK_STEPS) and slower.off


def test_verdicts_remember_a_measured_plain_rate_for_a_few_answers():
    from specvlm.decoding.drafters.guard import REPROBE_ANSWERS

    verdicts = Verdicts()
    assert verdicts.plain_rate("caption") is None  # nothing measured: the answer probes
    verdicts.record("caption", lost=False, plain_rate=300.0)
    assert [verdicts.plain_rate("caption") for _ in range(REPROBE_ANSWERS + 1)] == [300.0] * REPROBE_ANSWERS + [None]
    verdicts.record("caption", lost=False, plain_rate=250.0)  # measured again
    assert verdicts.plain_rate("caption") == 250.0
    verdicts.clear()
    assert verdicts.plain_rate("caption") is None


def test_verdicts_keep_a_lost_workload_plain_for_a_few_answers_then_try_again():
    verdicts = Verdicts()
    assert not verdicts.plain("caption")
    verdicts.record("caption", lost=True)
    assert [verdicts.plain("caption") for _ in range(PLAIN_ANSWERS + 1)] == [True] * PLAIN_ANSWERS + [False]
    assert not verdicts.plain("answers")  # other workloads are unaffected
    verdicts.record("caption", lost=False)
    assert not verdicts.plain("caption")


# ---- through the engine -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def references(checkpoints, stock_reference, frames):
    """{family: (inputs, stock greedy new tokens)} (EOS disabled)."""
    out = {}
    for family in FAMILIES:
        engine = SpecVLM.from_pretrained(checkpoints[family]["target"])
        inputs = engine.build_inputs(frames, "Describe the video.")
        out[family] = (inputs, stock_reference(checkpoints[family]["target"], inputs, MAX_NEW))
    return out


def _engine(checkpoints, family, **settings):
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"], draft=checkpoints[family]["draft"], **settings)
    engine.target.generation_config.eos_token_id = None
    return engine


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_lookup_accepts_what_its_context_holds(checkpoints, references, family):
    """A context that already holds the answer (as a multi-turn conversation quoting it would): the lookups
    draft it, whole chains are accepted, and the output is still exactly the stock target's."""
    inputs, expected = references[family]
    engine = _engine(checkpoints, family)
    prepared = engine.prepare(inputs=inputs, max_new_tokens=MAX_NEW, method="lookup")
    context = inputs["input_ids"][0].tolist() + expected
    prepared.drafter = PromptLookupDrafter(context, engine.config.num_draft_tokens, vocab=engine.target_adapter.vocab_size)
    result = engine.decode(prepared)
    assert result.token_ids == expected
    assert max(result.stats.accepted_lengths) == engine.config.num_draft_tokens + 1  # a whole chain accepted


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_lookup_samples_like_the_target(checkpoints, references, family):
    """Same seed, same tokens; the per-step draws follow the verifier's rule (one-hot q)."""
    inputs, _ = references[family]
    engine = _engine(checkpoints, family, never_slower=False)
    settings = dict(inputs=inputs, max_new_tokens=16, method="lookup", do_sample=True, temperature=1.0, seed=5)
    a, b = engine.generate(**settings), engine.generate(**settings)
    assert a.token_ids == b.token_ids and len(a.token_ids) == 16


class _RepeatLast(Drafter):
    """A drafter written outside the library: it proposes the pending token ``n`` more times."""

    def __init__(self, n: int):
        self.n = n
        self.told = 0

    def propose(self, out, max_depth):
        return _chain([out[-1]] * min(self.n, max_depth))

    def commit(self, step):
        self.told += 1


@pytest.mark.parametrize("family", FAMILIES)
def test_a_drafter_of_ones_own_runs_through_the_public_pipeline(checkpoints, references, family):
    inputs, expected = references[family]
    engine = _engine(checkpoints, family)
    prepared = engine.prepare(inputs=inputs, max_new_tokens=MAX_NEW, method="ar")
    mine = _RepeatLast(3)
    prepared.drafter = mine
    result = engine.decode(prepared)
    assert result.token_ids == expected
    assert mine.told == result.stats.target_steps and result.stats.speculation == "on"


@pytest.mark.guard
@pytest.mark.parametrize("family", FAMILIES)
def test_the_guard_changes_no_token(checkpoints, references, family):
    """Whatever the guard decides (it times real steps), every token is the target's; the guard's plain
    probes are the first steps of an answer whose drafter starts at once."""
    inputs, expected = references[family]
    engine = _engine(checkpoints, family)
    guarded = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method="specvlm")
    unguarded = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method="specvlm", never_slower=False)
    assert guarded.token_ids == unguarded.token_ids == expected
    assert guarded.stats.accepted_lengths[:PROBE_STEPS] == [1] * PROBE_STEPS
    assert guarded.stats.speculation in ("on", "fell_back")


@pytest.mark.slow
@pytest.mark.skipif(not has_compiler(torch.device("cpu")), reason="torch.compile needs a C++ compiler on CPU")
def test_trusted_compiled_draft_steps_run_the_graphs_their_guards_would_pick(checkpoints, references):
    """Once warm_compiled has built a draft's graphs it trusts them (most guards skipped): every kind of step
    (one token, a catch-up of several, a tree level under its mask) gives exactly what the fully guarded
    call gives, and a shape warmed after the trust compiles graphs of its own rather than reusing a chain's."""
    from specvlm.decoding.drafters.model import warm_compiled
    from specvlm.decoding.drafting import propose
    from specvlm.models import cache as kv

    inputs, _ = references["llava_onevision"]
    engine = _engine(checkpoints, "llava_onevision")
    seq = engine.prefill_draft(inputs, engine.prefill_target(inputs))
    adapter, vocab = seq.adapter, engine.shared_vocab
    chain_shape, tree_shape = engine.config.tree_shape(), engine.config.replace(tree="specvlm-25").tree_shape()

    def drafted(shape, trusted: bool):
        adapter.trust_compiled(trusted)
        scratch, out, tokens = dataclasses.replace(seq, cache=copy.deepcopy(seq.cache), compiled=True), [3], []
        for step in (1, 2, 3):  # as decoding does: 1, 2, 3 tokens committed since the last proposal
            out = out + [4 + step] * step
            proposal = propose(scratch, out, shape, vocab=vocab, max_depth=shape.depth)
            tokens.append(proposal.tree.tokens)
            kv.keep(scratch.cache, proposal.base, [])
        return tokens, adapter.trusted_compiled

    assert not adapter.trusted_compiled
    warm_compiled(seq, chain_shape, vocab)
    assert adapter.trusted_compiled
    # trusted first: were a graph missing, the guarded call would compile it, and the trusted one then find it
    (trusted, kept), (guarded, _) = drafted(chain_shape, True), drafted(chain_shape, False)
    assert kept and all(torch.equal(a, b) for a, b in zip(trusted, guarded))
    warm_compiled(seq, tree_shape, vocab)  # after the chain's graphs were trusted: its own graphs, guarded
    assert adapter.trusted_compiled
    (trusted, kept), (guarded, _) = drafted(tree_shape, True), drafted(tree_shape, False)
    assert kept and all(torch.equal(a, b) for a, b in zip(trusted, guarded))
    # a kind of step no warm-up built (a causal chunk of new tokens): refused trusted, it runs guarded after
    adapter.trust_compiled()
    scratch = dataclasses.replace(seq, cache=copy.deepcopy(seq.cache), compiled=True)
    unwarmed = scratch.append(torch.tensor([5, 6, 7]))
    assert not adapter.trusted_compiled
    scratch = dataclasses.replace(seq, cache=copy.deepcopy(seq.cache), compiled=True)
    assert torch.equal(unwarmed, scratch.append(torch.tensor([5, 6, 7])))
    assert not adapter.with_layers([0]).trusted_compiled  # a layer view compiles and guards its own steps


def test_compile_auto_compiles_a_separate_drafts_steps_once_a_workload_repeats(checkpoints, references, monkeypatch):
    """The first answers draft eagerly (a one-shot call never waits for a compile); from the answer after
    COMPILE_AFTER_ANSWERS drafted ones the draft's steps are compiled, its graphs built once before decoding.
    (The compile itself is replaced here: tests/decoding/test_lossless.py holds compiled steps to the stock output.)"""
    from specvlm import adaptation as engine_module  # where the engine's compile policy looks them up

    warmed = []
    monkeypatch.setattr(engine_module, "warm_compiled", lambda seq, shape, vocab: warmed.append(seq.prefix))
    monkeypatch.setattr(engine_module, "has_compiler", lambda device: True)
    inputs, expected = references["llava_onevision"]
    engine = _engine(checkpoints, "llava_onevision", compile="auto", lazy_draft_after=0)
    compiled = []
    for _ in range(engine_module.COMPILE_AFTER_ANSWERS + 2):
        prepared = engine.prepare(inputs=inputs, max_new_tokens=8, method="specvlm")
        compiled.append(prepared.drafter.seq.compiled)
        prepared.drafter.seq.compiled = False  # decode eagerly: only the policy is checked here
        assert engine.decode(prepared).token_ids == expected[:8]
    assert compiled == [False] * engine_module.COMPILE_AFTER_ANSWERS + [True, True]
    assert len(warmed) == 1 and engine.draft_compiled
    assert engine.prepare(inputs=inputs, max_new_tokens=8, method="specvlm", compile="off").drafter.seq.compiled is False


def test_one_stalled_step_does_not_turn_an_answer_plain():
    """A one-time stall (a graph compiled on first use, a page fault) counts at most STALL median steps."""
    from specvlm.decoding.drafters.guard import STALL

    guard = Guard(_Recording(), plain_rate=1.0)
    out = [0]
    for i in range(12):
        tree = guard.propose(out, 8)
        seconds = 1.0 if i != 6 else 1000.0  # 3 tokens a second, but one step stalls
        guard.commit(_step(tree, [1, 1, 1], seconds))
        out += [1, 1, 1]
    # the first drafted step is left out; of the other 11, ten take a second and the stall counts STALL seconds
    assert not guard.off and guard.drafted.per_second == pytest.approx(33 / (10 + STALL))
    busy = Guard(_Recording(), plain_rate=1.0)  # every step slow: a busy machine, not a stall
    drafted = _run_guard(busy, drafted_seconds=6.0, steps=8)
    assert busy.off and drafted[-1] is False
