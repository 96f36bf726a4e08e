"""Speculative sampling on tiny models follows the target's own sampling distribution.

The first new token is forced (one-hot prefill logits) so that the exact distributions of the next
two tokens can be computed from the target: p(t2 | t1) with one forward, and the marginal
p(t3 | t1) = sum over t2 of p(t2 | t1) p(t3 | t1, t2) with one forward per t2 in the support. The
draft is the target drafting for itself from a 90%-pruned cache, so it disagrees often and every
branch of the acceptance rule runs. The empirical distance to the exact distribution is compared with
the distance plain sampling reaches with the same number of samples, and with a perturbed
distribution (the draft's own, unverified).
"""

from __future__ import annotations

import pytest
import torch

from specvlm_pruning import keep_sequence_indices, prune
from specvlm import SpecVLM
from specvlm.models import cache as kv
from specvlm.decoding.drafters import ModelDrafter, prefill_draft
from specvlm.decoding.drafters import model as draft_model
from specvlm.decoding.loop import Stop, decode
from specvlm.decoding.target import Sequence, TargetPrefill, prefill_target
from specvlm.decoding.sampling import Sampling
from specvlm.stats import GenerationStats

SAMPLES = 500


def _copy(seq: Sequence) -> Sequence:
    everything = torch.arange(kv.length(seq.cache))
    return Sequence(seq.adapter, kv.subset(seq.cache, everything), seq.prefix, seq.next_pos, seq.axes)


@pytest.fixture(scope="module")
def setup(checkpoints, frames):
    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], draft=None)
    inputs = engine.build_inputs(frames, "Describe the video.")
    target = prefill_target(engine.target_adapter, inputs, capture_scores=True)
    kept = prune("specvlm", target.scores, target.layout.grid, 0.9)
    keep = keep_sequence_indices(target.seq.prefix, target.layout.positions, kept)
    draft = prefill_draft(None, inputs, target, keep)
    first = int(target.logits.argmax())
    return engine, target, draft, first


@torch.no_grad()
def _exact(seq: Sequence, tokens: list[int], sampling: Sampling, rule=None) -> torch.Tensor:
    s = _copy(seq)
    logits = s.append(torch.tensor(tokens))[-1]
    return sampling.probs(logits) if rule is None else rule.probs(logits[None], [tokens])[0]


def _exact_distributions(target: TargetPrefill, draft: Sequence, first: int, sampling: Sampling, rule=None):
    """(p(t2 | t1), p(t3 | t1) marginal, q(t2 | t1) of the unverified draft)."""
    p2 = _exact(target.seq, [first], sampling, rule)
    p3 = torch.zeros_like(p2)
    for t2 in p2.nonzero().squeeze(-1).tolist():
        p3 += p2[t2] * _exact(target.seq, [first, t2], sampling, rule)
    q2 = _exact(draft, [first], sampling)
    return p2, p3, q2


def _speculative_samples(target, draft, first, sampling, tree, count, rule=None):
    forced = torch.full_like(target.logits, float("-inf"))
    forced[first] = 0.0
    t2, t3 = [], []
    for seed in range(count):
        prefill = TargetPrefill(_copy(target.seq), forced, target.positions, target.layout, None)
        stats = GenerationStats(method="specvlm")
        generator = torch.Generator().manual_seed(seed)
        drafter = ModelDrafter(
            _copy(draft), tree, vocab=forced.shape[0], width=forced.shape[0], rule=rule, sampling=sampling, generator=generator
        )
        out = decode(prefill, drafter, Stop(3), stats, rule=rule, sampling=sampling, generator=generator)
        assert out[0] == first
        t2.append(out[1])
        t3.append(out[2])
    return torch.tensor(t2), torch.tensor(t3)


def _tv(samples: torch.Tensor, probs: torch.Tensor) -> float:
    empirical = torch.bincount(samples, minlength=probs.shape[0]).float() / samples.numel()
    return 0.5 * float((empirical - probs).abs().sum())


def _plain_tv(probs: torch.Tensor, count: int, trials: int = 200) -> tuple[float, float]:
    """Mean and std of the TV distance plain sampling reaches with ``count`` samples."""
    gen = torch.Generator().manual_seed(1234)
    tvs = torch.tensor([_tv(torch.multinomial(probs, count, replacement=True, generator=gen), probs) for _ in range(trials)])
    return float(tvs.mean()), float(tvs.std())


def _penalty_rule(engine, prompt_ids, penalty: float):
    """The target's next-token rule for stock sampling with a repetition penalty (transformers' processors)."""
    from transformers import GenerationConfig

    from specvlm.decoding.logits import NextTokenRule, merge_generation_config

    per_call = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, repetition_penalty=penalty)
    config, _ = merge_generation_config(engine.target, prompt_ids, per_call, max_new_tokens=3)
    return NextTokenRule.build(engine.target, config, prompt_ids)


@pytest.mark.slow
@pytest.mark.parametrize("tree_name", ["chain", "specvlm-25"])
@pytest.mark.parametrize(
    "sampling, penalty",
    [(Sampling(temperature=1.0), None), (Sampling(top_p=0.8), None), (Sampling(temperature=1.0), 0.3)],
    ids=["t1.0", "top_p0.8", "repetition_penalty0.3"],
)
def test_speculative_sampling_follows_target_distribution(setup, frames, tree_name, sampling, penalty):
    """With a repetition penalty, the target's p at each position is its processed distribution given
    that position's own prefix; the draft proposes from its unpenalised q and the output follows p.
    (A penalty below 1 favours tokens already in the prefix: on these random tiny models it moves far
    more probability than one above 1, whose penalised tokens carry little mass.)"""
    engine, target, draft, first = setup
    rule = None
    if penalty is not None:
        prompt_ids = engine.build_inputs(frames, "Describe the video.")["input_ids"]
        rule = _penalty_rule(engine, prompt_ids, penalty)
        assert rule.reads_prefix
    tree = engine.config.replace(tree=tree_name).tree_shape()
    p2, p3, q2 = _exact_distributions(target, draft, first, sampling, rule)
    if rule is not None:  # the penalty changes the distribution the output must follow, measurably
        mean, std = _plain_tv(p2, SAMPLES)
        assert 0.5 * float((p2 - _exact(target.seq, [first], sampling)).abs().sum()) > mean + 6 * std
    t2, t3 = _speculative_samples(target, draft, first, sampling, tree, SAMPLES, rule)

    for samples, exact in ((t2, p2), (t3, p3)):
        for count in (SAMPLES // 4, SAMPLES):
            mean, std = _plain_tv(exact, count)
            tv = _tv(samples[:count], exact)
            # as close to the exact distribution as plain sampling gets with the same sample count
            assert tv <= mean + 4 * std, (tree_name, count, tv, mean, std)
        # and the distance shrinks with more samples, like plain sampling's
        assert _tv(samples, exact) < _tv(samples[: SAMPLES // 4], exact) + 2 * _plain_tv(exact, SAMPLES)[1]
    # a perturbed distribution (the unverified draft's own) is far away in comparison
    mean, std = _plain_tv(p2, SAMPLES)
    assert 0.5 * float((q2 - p2).abs().sum()) > mean + 6 * std, "the draft is too close to the target for a meaningful test"
    assert _tv(t2, q2) > mean + 6 * std


@pytest.mark.parametrize("tree_name", ["chain", "specvlm-25", "dynamic"])
def test_narrower_draft_vocabulary_leaves_the_drafted_q_unchanged(setup, monkeypatch, tree_name):
    """With a draft vocabulary narrower than the target's, verification pads a copy of q, not the tree's."""
    engine, target, draft, first = setup
    tree = engine.config.replace(tree=tree_name).tree_shape()
    vocab = target.logits.shape[0]
    narrow = vocab - 7
    proposed = []  # (tree, clone of its q right after drafting)
    propose = draft_model.propose

    def recording_propose(*args, **kwargs):
        proposal = propose(*args, **kwargs)
        proposed.append((proposal.tree, proposal.tree.q.clone()))
        return proposal

    monkeypatch.setattr(draft_model, "propose", recording_propose)
    for seed in range(3):
        stats = GenerationStats(method="specvlm")
        generator = torch.Generator().manual_seed(seed)
        sampling = Sampling(temperature=1.0)
        drafter = ModelDrafter(_copy(draft), tree, vocab=narrow, width=vocab, sampling=sampling, generator=generator)
        out = decode(
            TargetPrefill(_copy(target.seq), target.logits, target.positions, target.layout, None),
            drafter, Stop(6), stats, sampling=sampling, generator=generator,
        )
        assert len(out) == 6 and stats.stopped_by == "max_new_tokens"
    assert proposed
    for drafted, q_before in proposed:
        assert q_before.shape[-1] == narrow
        assert drafted.q.shape == q_before.shape and torch.equal(drafted.q, q_before)


@pytest.mark.parametrize("tree", ["chain", "specvlm-25", "dynamic"])
def test_same_seed_same_output_different_seed_different_output(checkpoints, frames, tree):
    engine = SpecVLM.from_pretrained(checkpoints["qwen2_5_vl"]["target"], draft=checkpoints["qwen2_5_vl"]["draft"])
    engine.target.generation_config.eos_token_id = None
    inputs = engine.build_inputs(frames, "Describe the video.")
    kwargs = dict(inputs=inputs, max_new_tokens=16, do_sample=True, temperature=1.0, top_p=0.9, tree=tree)
    a = engine.generate(seed=7, **kwargs)
    b = engine.generate(seed=7, **kwargs)
    assert a.token_ids == b.token_ids and a.stats.accepted_lengths == b.stats.accepted_lengths
    others = {tuple(engine.generate(seed=s, **kwargs).token_ids) for s in range(8, 12)}
    assert len(others | {tuple(a.token_ids)}) > 1


def test_self_draft_without_pruning_accepts_every_sampled_token(checkpoints, frames):
    """p == q when the target drafts for itself from its full cache: min(1, p/q) = 1 everywhere."""
    engine = SpecVLM.from_pretrained(
        checkpoints["llava_onevision"]["target"], draft=None, tree="specvlm-25", self_draft_layers="all"
    )
    engine.target.generation_config.eos_token_id = None
    inputs = engine.build_inputs(frames, "Describe the video.")
    result = engine.generate(inputs=inputs, max_new_tokens=25, method="sd", do_sample=True, seed=3)
    assert result.stats.accepted_lengths[:-1] == [6] * (len(result.stats.accepted_lengths) - 1)


def test_sampling_settings_are_validated(checkpoints, frames):
    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"])
    for bad in ({"temperature": 0.0}, {"top_p": 1.5}, {"top_k": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            engine.generate(video=frames, prompt="Hi", max_new_tokens=2, do_sample=True, **bad)
    with pytest.raises(ValueError, match="do_sample"):
        engine.generate(video=frames, prompt="Hi", max_new_tokens=2, do_sample="yes")
