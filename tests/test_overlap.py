"""Drafting that overlaps verification (specvlm/decoding/drafters/overlap.py): lossless against the stock
``generate()`` in a worker process and a worker thread, hits and misses, the worker's lifetime, the decoding
process's threads, clear errors, and ``overlap="auto"``'s choice."""

from __future__ import annotations

import multiprocessing

import pytest
import torch

from specvlm import SpecVLM
from specvlm import engine as engine_module
from specvlm.decoding.drafters import ModelDrafter
from specvlm.decoding.drafters import overlap as overlap_module
from specvlm.decoding.drafters.overlap import OverlapChoice, OverlapDrafter
from tiny_pairs import save_pairs, stock_greedy

MAX_NEW = 40
RUNNERS = ("process", "thread")


@pytest.fixture(scope="module")
def references(checkpoints, frames):
    """{family: (inputs, stock greedy ids with EOS disabled)}."""
    out = {}
    for family, pair in checkpoints.items():
        engine = SpecVLM.from_pretrained(pair["target"], draft=pair["draft"])
        inputs = engine.build_inputs(frames, "Describe the video.")
        out[family] = (inputs, stock_greedy(pair["target"], inputs, MAX_NEW))
    return out


def _engine(target, draft, **settings):
    engine = SpecVLM.from_pretrained(target, draft=draft, **settings)
    engine.target.generation_config.eos_token_id = None  # random weights: every answer spans many steps
    return engine


def _overlapped(engine, inputs, runner: str, **kwargs):
    """One answer whose drafter is replaced by an overlapped one on ``runner``."""
    prepared = engine.prepare(inputs=inputs, max_new_tokens=MAX_NEW, lazy_draft_after=0, tree="chain", **kwargs)
    assert type(prepared.drafter) is ModelDrafter
    prepared.drafter = OverlapDrafter(prepared.drafter, runner=runner)
    return engine.decode(prepared), prepared.drafter


def _near_draft(engine, scale: float = 0.02) -> None:
    """Perturb ``engine``'s draft (loaded from the target's checkpoint) by ``scale`` relative noise: a draft
    that agrees with the target often but not always, so answers mix whole, partial and failed chains."""
    assert engine.draft is not engine.target
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in engine.draft.parameters():
            weight.mul_(1 + scale * torch.randn(weight.shape, generator=generator))


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
@pytest.mark.parametrize("method", ["specvlm", "sd"])
@pytest.mark.parametrize("draft", ["near", "random"])
def test_overlapped_drafting_is_lossless(checkpoints, references, family, method, runner, draft):
    inputs, expected = references[family]
    pair = checkpoints[family]
    engine = _engine(pair["target"], pair["target"] if draft == "near" else pair["draft"])
    if draft == "near":
        _near_draft(engine)
    sequential = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, lazy_draft_after=0, tree="chain")
    result, drafter = _overlapped(engine, inputs, runner, method=method)
    assert sequential.token_ids == expected
    assert result.token_ids == expected
    assert result.stats.overlap_hits == drafter.hits
    assert sum(result.stats.accepted_lengths) == MAX_NEW - 1  # every token but the prefill's came from a step
    if draft == "near":  # chains drafted while the target worked, and plain steps beside a drafting worker
        assert drafter.hits > 0 and 1 in result.stats.accepted_lengths


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_draft_that_matches_the_target_is_drafted_during_verification(checkpoints, references, runner):
    """The target drafting for itself as a separate model: the first step is a plain one (the worker drafts
    beside it), its token is the draft's first guess, and from then on every chain is accepted whole and every
    bonus token guessed, so every chain is drafted during the previous verification."""
    inputs, expected = references["llava_onevision"]
    target = checkpoints["llava_onevision"]["target"]
    engine = _engine(target, target)
    result, drafter = _overlapped(engine, inputs, runner, method="sd", num_draft_tokens=4)
    assert result.token_ids == expected
    lengths = result.stats.accepted_lengths
    assert lengths[0] == 1 and set(lengths[1:-1]) == {5}, lengths  # a plain step, then 4 drafted + the bonus (the last is cut)
    assert result.stats.overlap_hits == drafter.hits == len(lengths) - 1


@pytest.mark.slow
@pytest.mark.parametrize("runner", RUNNERS)
def test_overlap_is_lossless_on_a_hybrid_family_with_linear_attention(tmp_path_factory, frames, runner):
    """Qwen3.5 (Gated DeltaNet + full attention): the draft's recurrent states roll back across a hit's
    two proposals exactly as across one."""
    pair = save_pairs(tmp_path_factory.mktemp("overlap_hybrid"), {"qwen3_5": (4, 2)})["qwen3_5"]
    for draft in (pair["draft"], pair["target"]):
        engine = _engine(pair["target"], draft)
        inputs = engine.build_inputs(frames, "Describe the video.")
        expected = stock_greedy(pair["target"], inputs, MAX_NEW)
        result, drafter = _overlapped(engine, inputs, runner, method="specvlm", num_draft_tokens=4)
        assert result.token_ids == expected
        if draft == pair["target"]:
            assert drafter.hits > 0


def test_the_engine_overlaps_with_overlap_on_in_one_worker_and_restores_its_threads(checkpoints, references):
    inputs, expected = references["qwen2_5_vl"]
    pair = checkpoints["qwen2_5_vl"]
    engine = _engine(pair["target"], pair["draft"], overlap="on", lazy_draft_after=0)
    threads = torch.get_num_threads()
    children = len(multiprocessing.active_children())
    result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, tree="chain")
    assert result.token_ids == expected and result.stats.overlap
    assert torch.get_num_threads() == threads
    worker = engine.draft_worker
    assert worker.alive and len(multiprocessing.active_children()) == children + 1
    # the next answers reuse the worker; the lazy start and the guard wrap the overlapped drafter as any drafter
    guarded = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, tree="chain", lazy_draft_after=4, never_slower=True)
    assert guarded.token_ids == expected and guarded.stats.overlap
    assert engine.draft_worker is worker and len(multiprocessing.active_children()) == children + 1
    engine.close()  # ends the worker; a later overlapped answer starts another
    assert not worker.alive and len(multiprocessing.active_children()) == children
    assert engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, tree="chain").token_ids == expected
    assert engine.draft_worker is not worker
    engine.close()


def test_a_failing_worker_raises_in_the_decoding_process_and_releases_everything(checkpoints, references, monkeypatch):
    inputs, _ = references["llava_onevision"]
    pair = checkpoints["llava_onevision"]
    engine = _engine(pair["target"], pair["draft"])
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("draft forward failed")
        return real(*args, **kwargs)

    real = overlap_module.propose
    monkeypatch.setattr(overlap_module, "propose", failing)
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="worker failed(.|\n)*draft forward failed"):
        _overlapped(engine, inputs, "thread", method="specvlm")
    assert torch.get_num_threads() == threads


def test_a_worker_that_dies_is_an_error_not_a_hang(checkpoints, references, monkeypatch):
    inputs, _ = references["llava_onevision"]
    pair = checkpoints["llava_onevision"]
    engine = _engine(pair["target"], pair["draft"])
    prepared = engine.prepare(inputs=inputs, max_new_tokens=MAX_NEW, lazy_draft_after=0, tree="chain")
    drafter = OverlapDrafter(prepared.drafter, runner="process")
    prepared.drafter = drafter
    real_propose = drafter.propose
    calls = []

    def propose_then_kill(out, max_depth):
        tree = real_propose(out, max_depth)
        calls.append(out)
        if len(calls) == 3:
            drafter.worker._worker.kill()
        return tree

    monkeypatch.setattr(drafter, "propose", propose_then_kill)
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        engine.decode(prepared)
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"tree": "specvlm-25"}, "only a chain"),
        ({"tree": "chain", "do_sample": True}, "only greedy"),
        ({"tree": "chain", "repetition_penalty": 1.3}, "read the prefix"),
    ],
)
def test_overlap_on_refuses_what_cannot_overlap_before_any_prefill(checkpoints, frames, settings, match, monkeypatch):
    pair = checkpoints["llava_onevision"]
    engine = _engine(pair["target"], pair["draft"], overlap="on")
    inputs = engine.build_inputs(frames, "Describe the video.")
    monkeypatch.setattr(engine_module, "prefill_target", lambda *a, **k: pytest.fail("prefilled before the error"))
    with pytest.raises(ValueError, match=f"overlap='on': .*{match}"):
        engine.generate(inputs=inputs, max_new_tokens=8, **settings)


def test_overlap_on_refuses_a_self_draft(checkpoints, frames):
    engine = _engine(checkpoints["llava_onevision"]["target"], None, overlap="on")
    inputs = engine.build_inputs(frames, "Describe the video.")
    with pytest.raises(ValueError, match="separate draft model"):
        engine.generate(inputs=inputs, max_new_tokens=8, tree="chain")


def test_overlap_drafter_rejects_bad_arguments(checkpoints, references):
    inputs, _ = references["llava_onevision"]
    pair = checkpoints["llava_onevision"]
    engine = _engine(pair["target"], pair["draft"])
    drafter = engine.prepare(inputs=inputs, max_new_tokens=8, lazy_draft_after=0, tree="chain").drafter
    with pytest.raises(ValueError, match="runner='gpu'; choose one of 'process', 'thread'"):
        OverlapDrafter(drafter, runner="gpu")
    with pytest.raises(ValueError, match="worker_threads=0 must be an int >= 1"):
        OverlapDrafter(drafter, worker_threads=0)
    tree = engine.prepare(inputs=inputs, max_new_tokens=8, lazy_draft_after=0, tree="specvlm-25").drafter
    with pytest.raises(ValueError, match="only a chain"):
        OverlapDrafter(tree)


# ---- overlap="auto" ----------------------------------------------------------------------------------


def test_overlap_choice_alternates_then_keeps_the_way_that_measured_faster():
    choice = OverlapChoice(trials=2, retry=3)
    ways = []
    for rate_on, rate_off in ((120.0, 100.0), (130.0, 90.0)):
        for _ in range(2):
            way = choice.next("w")
            ways.append(way)
            choice.record("w", way, rate_on if way else rate_off)
    assert ways == [False, True, False, True]  # sequential first, then alternating
    assert choice.decided("w") is True and choice.next("w") is True
    for _ in range(3):  # the decision holds for ``retry`` answers, then both ways are tried again
        choice.record("w", True, 10.0)
    assert choice.decided("w") is None and choice.next("w") is False
    assert choice.decided("other") is None


def test_overlap_choice_judges_each_way_by_its_fastest_answer():
    # noise on a shared machine only slows answers: overlap's two slowed answers must not outvote its fastest,
    # though its median (80) is below sequential's (100)
    choice = OverlapChoice(trials=3)
    for off, on in ((100.0, 60.0), (100.0, 150.0), (100.0, 80.0)):
        choice.record("w", False, off)
        choice.record("w", True, on)
    assert choice.decided("w") is True
    # and the other way round: one lucky-looking sequential answer is its fastest, so it wins
    other = OverlapChoice(trials=3)
    for off, on in ((90.0, 120.0), (200.0, 120.0), (90.0, 120.0)):
        other.record("w", False, off)
        other.record("w", True, on)
    assert other.decided("w") is False


def test_overlap_choice_keeps_sequential_drafting_when_overlap_is_not_faster():
    choice = OverlapChoice(trials=1)
    choice.record("w", False, 100.0)
    choice.record("w", True, 100.0)  # a tie: sequential
    assert choice.decided("w") is False
    slower = OverlapChoice(trials=1)
    slower.record("w", False, 100.0)
    slower.record("w", True, 80.0)
    assert slower.decided("w") is False


def test_overlap_auto_tries_both_ways_only_once_the_engine_repeats_a_workload(checkpoints, references, monkeypatch):
    from specvlm.adaptation import COMPILE_AFTER_ANSWERS

    inputs, expected = references["llava_onevision"]
    pair = checkpoints["llava_onevision"]
    engine = _engine(pair["target"], pair["draft"], overlap="auto", lazy_draft_after=0, tree="chain")
    monkeypatch.setattr(engine.overlap_choice, "trials", 1)
    ways = []
    for _ in range(COMPILE_AFTER_ANSWERS + 2):
        result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW)
        assert result.token_ids == expected
        ways.append(result.stats.overlap)
    # a one-shot call and the first answers never fork a worker; then one answer each way
    assert ways == [False] * COMPILE_AFTER_ANSWERS + [False, True]
    assert engine.overlap_choice.decided(engine.overlap_choice.keys()[0]) is not None
    engine.forget()
    assert not engine.overlap_choice.keys()


def test_the_bench_lets_overlap_auto_decide_before_its_timed_rounds(checkpoints, references, monkeypatch):
    """``specvlm bench``'s default row measures what ``overlap="auto"`` settled on: untimed answers of the rows
    that leave overlap to the engine run until every workload the engine tried is decided; the rows that set
    overlap themselves (on, off) are not run for it."""
    from specvlm.adaptation import COMPILE_AFTER_ANSWERS
    from specvlm_eval.bench.pair import settle

    inputs, expected = references["llava_onevision"]
    pair = checkpoints["llava_onevision"]
    engine = _engine(pair["target"], pair["draft"], overlap="auto", lazy_draft_after=0, tree="chain")
    monkeypatch.setattr(engine.overlap_choice, "trials", 1)
    ran = []
    real = engine.generate

    def generate(**kwargs):
        result = real(**kwargs)
        assert result.token_ids == expected[: kwargs["max_new_tokens"]]
        ran.append(kwargs.get("overlap"))
        return result

    monkeypatch.setattr(engine, "generate", generate)
    names = ["ar", "specvlm-chain", "specvlm-overlap", "specvlm-sequential"]
    answers = settle(engine, names, inputs, [], MAX_NEW, 0.9)
    keys = engine.overlap_choice.keys()
    assert len(keys) == 1 and engine.overlap_choice.decided(keys[0]) is not None
    assert answers == len(ran) == COMPILE_AFTER_ANSWERS + 2  # the drafted answers before trials, then one each way
    assert set(ran) == {None}  # only the row that leaves overlap to the engine
    assert settle(engine, names, inputs, [], MAX_NEW, 0.9) == 0  # decided: nothing more to run
    off = _engine(pair["target"], pair["draft"], overlap="off", lazy_draft_after=0, tree="chain")
    assert settle(off, names, inputs, [], MAX_NEW, 0.9) == 0


@pytest.mark.slow
def test_a_forked_worker_inherits_graphs_built_under_its_thread_count(checkpoints, references, monkeypatch):
    """torch.compile's graphs hold only for the torch thread count they were built under, and a process worker
    drafts with WORKER_THREADS threads: the engine builds the speculative chain's graphs under that count
    before it forks the worker (once), and gives the decoding process its threads back."""
    import specvlm.adaptation as engine_module  # where the engine's compile policy looks it up
    from specvlm.decoding.drafters.overlap import WORKER_THREADS
    from specvlm.decoding.trees import chain

    inputs, expected = references["llava_onevision"]
    pair = checkpoints["llava_onevision"]
    engine = _engine(pair["target"], pair["draft"], overlap="on", compile="draft", lazy_draft_after=0, tree="chain")
    warmed = []
    real = engine_module.warm_compiled
    monkeypatch.setattr(engine_module, "warm_compiled", lambda seq, shape, vocab: (warmed.append((torch.get_num_threads(), shape.paths)), real(seq, shape, vocab)))
    threads = torch.get_num_threads()
    for _ in range(2):
        assert engine.generate(inputs=inputs, max_new_tokens=MAX_NEW).token_ids == expected
    depth = engine.config.num_draft_tokens
    assert warmed == [(threads, chain(depth).paths), (WORKER_THREADS, chain(depth + 1).paths)]
    assert torch.get_num_threads() == threads
    engine.close()


def test_overlapped_and_sequential_drafting_have_verdicts_of_their_own(checkpoints, references, monkeypatch):
    """The never-slower guard remembers a verdict per way: a workload whose sequential drafting lost still tries
    overlapped drafting, and ``overlap="auto"`` counts the plain answer that verdict gave as the sequential way's
    rate (what that way gives the workload now), so its trials end."""
    from specvlm.adaptation import COMPILE_AFTER_ANSWERS
    from specvlm.plan import Plan

    inputs, expected = references["llava_onevision"]
    pair = checkpoints["llava_onevision"]
    engine = _engine(pair["target"], pair["draft"], overlap="auto", never_slower=True, lazy_draft_after=0, tree="chain")
    monkeypatch.setattr(engine.overlap_choice, "trials", 1)
    for _ in range(COMPILE_AFTER_ANSWERS):  # unguarded: these answers draft whatever the tiny models' speed
        assert engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, never_slower=False).token_ids == expected
    plan = Plan.resolve("specvlm", engine.config)
    sequential = engine.adaptation.workload(plan, engine.config, inputs, overlapped=False)
    assert sequential != engine.adaptation.workload(plan, engine.config, inputs, overlapped=True)
    engine.verdicts.record(sequential, lost=True)
    ways = []
    for _ in range(2):
        result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW)
        assert result.token_ids == expected
        ways.append((result.stats.speculation, result.stats.overlap))
    assert ways[0] == ("remembered_plain", False)  # the sequential trial: plain on the verdict
    assert ways[1][1] is True and ways[1][0] != "remembered_plain"  # the overlapped trial drafts
    assert engine.overlap_choice.decided(engine.overlap_choice.keys()[0]) is not None
    engine.close()
