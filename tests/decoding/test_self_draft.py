"""Layer-skipping self-drafting, lazy draft start and adaptive chain length: still exactly the target's output.

The tiny targets have 2 decoder layers; a self-draft running one of them agrees with the target rarely,
so most steps reject every drafted token (full rejection) and the caches must still stay exact. (Every layer
choice's output against the stock model, chain and trees: the ``layers`` suite of test_lossless.py.)
"""

from __future__ import annotations

import pytest
import torch

from specvlm import DecodingConfig, SpecVLM
from specvlm.decoding import layerskip
from specvlm.models import cache as kv
from tiny_pairs import CORE_FAMILIES as FAMILIES

MAX_NEW = 20


@pytest.fixture(scope="module")
def engines(checkpoints):
    """{family: (self-drafting engine, engine with a separate draft)}, EOS disabled on both targets."""
    out = {}
    for family in FAMILIES:
        paths = checkpoints[family]
        own = SpecVLM.from_pretrained(paths["target"], draft=None)
        pair = SpecVLM.from_pretrained(paths["target"], draft=paths["draft"])
        for engine in (own, pair):
            engine.target.generation_config.eos_token_id = None
        out[family] = (own, pair)
    return out


@pytest.fixture(scope="module")
def references(checkpoints, engines, stock_reference, frames):
    """{family: (inputs, stock greedy new tokens)}."""
    out = {}
    for family, (own, _) in engines.items():
        inputs = own.build_inputs(frames, "Describe the video.")
        out[family] = (inputs, stock_reference(checkpoints[family]["target"], inputs, MAX_NEW))
    return out


def _layer_calls(model) -> tuple[list[int], list]:
    """Forward calls per decoder layer of ``model``'s text model (hooks), and the hook handles."""
    layers = model.model.language_model.layers
    calls = [0] * len(layers)
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1)))
    return calls, handles


@pytest.mark.parametrize("family", FAMILIES)
def test_steps_with_full_rejection_keep_the_caches_exact(engines, references, family):
    own, _ = engines[family]
    inputs, ar = references[family]
    result = own.generate(inputs=inputs, max_new_tokens=MAX_NEW, self_draft_layers=[1], num_draft_tokens=3, draft_stop_below=0)
    assert result.token_ids == ar
    assert 1 in result.stats.accepted_lengths  # at least one step rejected every drafted token
    assert result.stats.draft_steps >= 3 * (result.stats.target_steps - 3)  # whole chains (but near max_new_tokens)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_layer_skipping_draft_runs_fewer_layers(engines, references, family):
    own, _ = engines[family]
    inputs, ar = references[family]
    calls, handles = _layer_calls(own.target)
    try:
        result = own.generate(inputs=inputs, max_new_tokens=MAX_NEW, self_draft_layers=[0], lazy_draft_after=0)
    finally:
        for h in handles:
            h.remove()
    assert result.token_ids == ar
    stats = result.stats
    assert stats.draft_steps > 0
    # layer 1 runs in the target's forwards only; layer 0 in those and in every draft forward
    assert calls[0] - calls[1] == stats.draft_steps


def test_auto_tries_each_subset_and_keeps_the_fastest():
    choice = layerskip.LayerChoice(_FakeAdapter(), [(0,), (0, 3)], auto=True, trial_steps=2)
    seen = []
    for _ in range(6):
        option = choice.next()
        seen.append(option)
        choice.record(option, {(0,): 2, (0, 3): 3, None: 1}[option], 1.0)
    assert seen[:6] == [(0,), (0,), (0, 3), (0, 3), None, None]
    assert choice.next() == (0, 3) and choice.decided
    slow = layerskip.LayerChoice(_FakeAdapter(), [(0,)], auto=True, trial_steps=1)
    slow.record(None, 1, 0.1)  # plain steps measured before the draft started (lazy start)
    assert slow.next() == (0,)
    slow.record((0,), 2, 1.0)
    assert slow.next() is None and slow.decided  # plain decoding pays best


class _FakeAdapter:
    def with_layers(self, layers):
        return layers


def test_a_remembered_workload_skips_the_trials_and_keeps_measuring_its_choice():
    memory = layerskip.LayerMemory(answers=3)
    first = layerskip.LayerChoice(_FakeAdapter(), [(0,), (0, 3)], auto=True, trial_steps=1, memory=memory.table("w"))
    for _ in range(3):
        option = first.next()
        first.record(option, {(0,): 2, (0, 3): 3, None: 1}[option], 1.0)
    assert first.next() == (0, 3) and not first.from_memory
    first.record((0, 3), 3, 1.0)  # the chosen option's steps keep counting
    second = layerskip.LayerChoice(_FakeAdapter(), [(0,), (0, 3)], auto=True, trial_steps=1, memory=memory.table("w"))
    assert second.decided and second.from_memory and second.next() == (0, 3)  # no trial at all
    second.record((0, 3), 1, 10.0)  # it turned slow: the next answer of this workload prefers (0,)
    second.record(None, 5, 1.0)  # plain steps after the decision are not counted
    third = layerskip.LayerChoice(_FakeAdapter(), [(0,), (0, 3)], auto=True, trial_steps=1, memory=memory.table("w"))
    assert third.next() == (0,)
    assert third.rate(None) == 1.0
    # a remembered verdict for plain decoding holds for two more answers (no trials: they decode plainly),
    # then the trials run again, from the measurements so far plus new ones
    plain = layerskip.LayerMemory()
    slow = layerskip.LayerChoice(_FakeAdapter(), [(0,)], auto=True, trial_steps=1, memory=plain.table("w"), plain_answers=2)
    slow.record(slow.next(), 1, 10.0)
    slow.record(slow.next(), 1, 1.0)
    assert slow.next() is None and slow.decided and not slow.from_memory
    for _ in range(2):
        trusted = layerskip.LayerChoice(_FakeAdapter(), [(0,)], auto=True, trial_steps=1, memory=plain.table("w"), plain_answers=2)
        assert trusted.decided and trusted.from_memory and trusted.chosen is None and trusted.next() is None
        trusted.record(None, 1, 0.001)  # steps after a decision for plain decoding measure nothing
    assert plain.table("x").measured == {} and plain.tables["w"].measured[None][0] == 1
    again = layerskip.LayerChoice(_FakeAdapter(), [(0,)], auto=True, trial_steps=1, memory=plain.table("w"), plain_answers=2)
    assert not again.decided and not again.from_memory and again.next() == (0,)
    again.record((0,), 30, 1.0)  # fast this time: 31 tokens in 11 s against plain's 1 in 1 s
    assert again.next() is None  # plain's new trial step
    again.record(None, 1, 1.0)
    assert again.next() == (0,) and again.decided
    # another workload has its own trials; after ``answers`` answers a workload's trials run again
    assert not layerskip.LayerChoice(_FakeAdapter(), [(0,)], auto=True, memory=memory.table("other")).decided
    fourth = layerskip.LayerChoice(_FakeAdapter(), [(0,), (0, 3)], auto=True, trial_steps=1, memory=memory.table("w"))
    assert not fourth.decided and fourth.next() == (0,)


def test_auto_remembers_per_engine_and_stays_exact(engines, references, monkeypatch):
    own, _ = engines[FAMILIES[0]]
    inputs, ar = references[FAMILIES[0]]
    own.forget()
    results = [own.generate(inputs=inputs, max_new_tokens=MAX_NEW, lazy_draft_after=0) for _ in range(2)]
    assert all(r.token_ids == ar for r in results)
    (entry,) = own.layer_memory.tables.values()
    assert entry.answers == 2  # two answers of one workload
    steps = {option: measured[0] for option, measured in entry.measured.items()}
    # plain steps are timed in the first answer's trials only: the second decided from memory
    assert steps[None] == layerskip.TRIAL_STEPS
    assert all(n >= layerskip.TRIAL_STEPS for n in steps.values())
    # a remembered verdict for plain decoding: the next answer is plain decoding, with no draft prefill
    for option, measured in entry.measured.items():
        measured[:] = [2, 2, 1e-3] if option is None else [2, 2, 1e3]
    calls = _count_draft_prefills(monkeypatch)
    plain = own.generate(inputs=inputs, max_new_tokens=MAX_NEW, lazy_draft_after=0)
    assert plain.token_ids == ar and calls == [] and plain.stats.speculation == "remembered_plain"
    assert plain.stats.draft_prefill_s == 0 and plain.stats.kept_video_tokens == 0 and plain.stats.draft_steps == 0
    own.forget()
    result = own.generate(inputs=inputs, max_new_tokens=MAX_NEW, lazy_draft_after=0, self_draft_memory=False)
    assert result.token_ids == ar and not own.layer_memory.tables


def test_auto_candidates_and_explicit_layers():
    assert layerskip.candidates("all", 6) is None
    assert layerskip.candidates("auto", 6) == [(0,), (0, 5), (0, 2, 5)]
    assert layerskip.candidates(0.5, 6) == [(0, 2, 5)]
    assert layerskip.candidates((1, 3), 6) == [(1, 3)]
    with pytest.raises(ValueError, match=r"names layer 7, but the target has 6 decoder layers"):
        layerskip.candidates((0, 7), 6)
    assert layerskip.spread(32, 4) == (0, 10, 21, 31)


@pytest.mark.parametrize("value", ["some", [], [0, 0], [-1], 0.0, 1.5, True])
def test_bad_self_draft_layers_are_refused(value):
    with pytest.raises(ValueError, match="self_draft_layers="):
        DecodingConfig(self_draft_layers=value)


def test_a_layer_past_the_last_is_refused_before_any_prefill(engines, references, monkeypatch):
    own, _ = engines["llava_onevision"]
    inputs, _ = references["llava_onevision"]
    monkeypatch.setattr("specvlm.engine.prefill_target", _fail)
    with pytest.raises(ValueError, match="names layer 5, but the target has 2 decoder layers"):
        own.generate(inputs=inputs, max_new_tokens=4, self_draft_layers=[0, 5])


def _fail(*args, **kwargs):
    raise AssertionError("prefill ran")


def _count_draft_prefills(monkeypatch) -> list[int]:
    import specvlm.engine as engine_module

    calls = []
    original = engine_module.prefill_draft

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_module, "prefill_draft", counted)
    return calls


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["pair", "own"])
def test_lazy_start_skips_the_draft_prefill_for_a_short_answer(engines, references, family, kind, monkeypatch):
    own, pair = engines[family]
    engine = pair if kind == "pair" else own
    engine.forget()  # no verdict remembered from other tests' answers of this workload
    inputs, ar = references[family]
    eos = ar[2]  # the answer stops at this token's first occurrence: at most 3 tokens
    short = ar[: ar.index(eos) + 1]
    calls = _count_draft_prefills(monkeypatch)
    result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, eos_token_id=eos, lazy_draft_after=4)
    assert result.token_ids == short and result.stats.stopped_by == "eos"
    assert calls == [] and result.stats.speculation == "skipped" and result.stats.speculation_skipped
    assert result.stats.draft_steps == 0 and result.stats.draft_kv_tokens == 0 and result.stats.draft_prefill_s == 0
    assert result.stats.to_dict()["speculation_skipped"] is True
    stock = engine.target.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos)
    assert result.token_ids == stock[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["pair", "own"])
def test_lazy_start_drafts_a_long_answer_after_its_first_tokens(engines, references, family, kind, monkeypatch):
    own, pair = engines[family]
    engine = pair if kind == "pair" else own
    inputs, ar = references[family]
    eos = max(set(range(engine.target_adapter.vocab_size)) - set(ar))  # a token the answer never holds: EOS is live
    calls = _count_draft_prefills(monkeypatch)
    result = engine.generate(
        inputs=inputs, max_new_tokens=MAX_NEW, eos_token_id=eos, lazy_draft_after=5, self_draft_layers="all"
    )
    assert result.token_ids == ar
    stats = result.stats
    assert calls == [1] and stats.speculation == "on" and stats.draft_start_tokens == 5
    assert stats.accepted_lengths[:4] == [1, 1, 1, 1] and stats.draft_steps > 0  # plain steps, then drafting
    assert stats.draft_prefill_s > 0 and stats.prefill_s >= stats.draft_prefill_s


@pytest.mark.parametrize("max_new_tokens", [4, MAX_NEW])
def test_without_eos_the_lazy_start_is_decided_from_max_new_tokens(engines, references, max_new_tokens, monkeypatch):
    _, pair = engines["qwen2_5_vl"]
    inputs, ar = references["qwen2_5_vl"]
    calls = _count_draft_prefills(monkeypatch)
    result = pair.generate(inputs=inputs, max_new_tokens=max_new_tokens, lazy_draft_after=6)
    assert result.token_ids == ar[:max_new_tokens]
    if max_new_tokens <= 6:
        assert calls == [] and result.stats.speculation == "skipped"
    else:  # known to be long: the draft starts right after the first token, before any decode step
        assert calls == [1] and result.stats.draft_start_tokens == 1 and result.stats.accepted_lengths[0] > 0
        assert result.stats.ttft_s == pytest.approx(result.stats.prefill_s - result.stats.draft_prefill_s)


@pytest.mark.parametrize("family", FAMILIES)
def test_adaptive_chain_length_stops_early_and_stays_exact(engines, references, family):
    _, pair = engines[family]
    inputs, ar = references[family]
    full = pair.generate(inputs=inputs, max_new_tokens=MAX_NEW, num_draft_tokens=5, draft_stop_below=0)
    short = pair.generate(inputs=inputs, max_new_tokens=MAX_NEW, num_draft_tokens=5, draft_stop_below=0.99)
    assert full.token_ids == short.token_ids == ar
    assert short.stats.draft_steps < full.stats.draft_steps
    sampled = [
        pair.generate(inputs=inputs, max_new_tokens=8, do_sample=True, seed=3, draft_stop_below=s).token_ids for s in (0.0, 0.9)
    ]
    assert all(0 <= t < pair.target_adapter.vocab_size for t in sampled[1])


def test_adopt_replaces_the_drafts_rows_with_the_sources():
    def filled(rows: int, value: float):
        cache = kv.PartialCache()
        for layer in range(2):
            k = torch.full((1, 1, rows, 2), value + layer)
            cache.update(k, k.clone(), layer)
        return cache

    draft, target = filled(5, 0.0), filled(7, 10.0)
    kv.adopt(draft, 3, target, 4, 7)
    for i, layer in enumerate(draft.layers):
        assert layer.keys.shape[-2] == 6
        assert layer.keys[0, 0, :3, 0].tolist() == [float(i)] * 3
        assert layer.keys[0, 0, 3:, 0].tolist() == [10.0 + i] * 3
    draft.length_layer = 1
    assert kv.length(draft) == 6
    with pytest.raises(ValueError, match="cannot cut"):
        kv.adopt(draft, 9, target, 0, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_drafts_vision_runs_only_over_frames_with_kept_tokens(engines, references, family):
    _, pair = engines[family]
    inputs, ar = references[family]
    frames_seen = []
    tower = pair.draft.model.vision_tower if family == "llava_onevision" else pair.draft.model.visual
    handle = tower.register_forward_pre_hook(lambda _, args, kwargs: frames_seen.append(_leading(args, kwargs)), with_kwargs=True)
    try:
        runs = {
            mode: pair.generate(inputs=inputs, max_new_tokens=MAX_NEW, drop_rate=0.97, lazy_draft_after=0, draft_vision=mode)
            for mode in ("all", "kept_frames")
        }
    finally:
        handle.remove()
    for result in runs.values():
        assert result.token_ids == ar
    # the kept tokens' features are exact: the same drafts, the same accepted lengths
    assert runs["all"].stats.accepted_lengths == runs["kept_frames"].stats.accepted_lengths
    keep = pair.draft_keep(inputs, drop_rate=0.97)
    if family == "llava_onevision":  # it encodes each frame on its own: only frames holding a kept token
        slots = pair.draft_adapter.video_slots(inputs)
        per_frame = (slots.numel() - 1) // inputs["pixel_values_videos"].shape[1]
        kept = torch.isin(slots, keep).nonzero().squeeze(-1)
        needed = torch.unique(kept[kept < slots.numel() - 1] // per_frame).numel()
        assert frames_seen == [inputs["pixel_values_videos"].shape[1], needed] and needed < frames_seen[0]
    else:  # other families encode the whole video, as before
        assert frames_seen[0] == frames_seen[1]


def _leading(args, kwargs) -> int:
    """Leading size of a vision tower's pixel input: frames (LLaVA-OneVision) or patches (Qwen2.5-VL)."""
    pixels = args[0] if args else next(iter(kwargs.values()))
    return int(pixels.shape[0])


def test_time_to_first_token_leaves_out_a_lazily_started_drafts_prefill():
    from specvlm.stats import GenerationStats

    lazy = GenerationStats(method="specvlm", prefill_s=0.5, draft_prefill_s=0.2, draft_start_tokens=8)
    assert lazy.ttft_s == pytest.approx(0.3) and lazy.e2e_s == pytest.approx(0.5)
    eager = GenerationStats(method="specvlm", prefill_s=0.5, draft_prefill_s=0.2, draft_start_tokens=0)
    assert eager.ttft_s == 0.5


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lazy_draft_scores_the_video_when_it_starts(engines, references, family, monkeypatch):
    """With a lazy start the target's prefill is the plain one-chunk prefill; the verifier's scores are
    taken when the draft starts, equal to the two-chunk prefill's, so the draft keeps the same tokens."""
    from specvlm.decoding import target as prefills

    _, pair = engines[family]
    inputs, ar = references[family]
    first = [i for i in range(8, len(ar)) if ar[i] not in ar[:i]]
    if not first:
        pytest.skip("no token of the reference answer can stand for an EOS after its 8th token")
    eos = ar[first[0]]  # an answer that ends at that token: the draft starts after 5
    captured = []
    real = prefills.prefill_target
    monkeypatch.setattr(
        "specvlm.engine.prefill_target",
        lambda *a, **k: captured.append(k["capture_scores"]) or real(*a, **k),
    )
    late = pair.generate(inputs=inputs, max_new_tokens=MAX_NEW, eos_token_id=eos, lazy_draft_after=5)
    early = pair.generate(inputs=inputs, max_new_tokens=MAX_NEW, eos_token_id=eos, lazy_draft_after=0)
    assert late.token_ids == early.token_ids == ar[: ar.index(eos) + 1]
    assert captured == [False, True]  # the lazy start's prefill scored nothing
    assert late.stats.kept_video_tokens == early.stats.kept_video_tokens
    assert late.stats.draft_start_tokens >= 5 and late.stats.draft_prefill_s > 0
    target = real(pair.target_adapter, inputs, capture_scores=False)
    scores = prefills.score_later(target, inputs)
    assert torch.allclose(scores, real(pair.target_adapter, inputs, capture_scores=True).scores, atol=1e-6)
