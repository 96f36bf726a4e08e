"""Qwen3.5 (dense and MoE), a decoder that is not all plain causal attention: Gated-DeltaNet linear attention in 3 of
every 4 layers.

Runs where every draft token is rejected (a random draft) and where every one is accepted (the target's own weights
as the draft) equal the stock target's greedy ``generate()`` (float32, CPU); the linear layers' rollback is exact
where the stock assisted-decoding recipe is not; the captured scores are the full-attention layers' eager attention;
trees and self-drafting are refused with the reason. (Every method and drop rate against the stock model: the
``hybrid`` suite of tests/decoding/test_lossless.py.)

Reference tokens come from a separately loaded stock model (the session's ``stock_reference``), never from our loop.
EOS is disabled so every run spans several verify steps. The module runs with one intra-op thread: the stock
depthwise ``conv1d`` of the linear layers (pure torch without ``causal-conv1d``) is about 100x slower on two
shared CPU cores with two threads, and both the stock reference and our loop run under the same setting.
"""

from __future__ import annotations

import pytest
import torch

from specvlm.attention import causal_context
from specvlm.decoding.target import prefill_target
from specvlm.models import cache as kv
from specvlm.models import family_of
from specvlm.zoo.tiny import TinySpec, qwen3_5_layer_types
from tiny_pairs import check_chain, eos_free_engine

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_NEW = 16
LINEAR, FULL = "linear_attention", "full_attention"
# (target, draft) decoder layers: target [linear, linear, linear, full], draft [linear, full]
LAYERS = {"qwen3_5": (4, 2), "qwen3_5_moe": (4, 2)}
FAMILIES = tuple(LAYERS)


@pytest.fixture(scope="module")
def hybrid_checkpoints(pairs):
    """{family: {"target": path, "draft": path}}."""
    return {family: pairs(family, layers) for family, layers in LAYERS.items()}


@pytest.fixture(scope="module")
def hybrid_engines(hybrid_checkpoints):
    """{(family, draft kind): engine} with EOS disabled; draft kinds: "random" (a differently seeded
    draft: almost every token rejected), "same" (the target's own checkpoint as a separate draft: every
    token accepted with all video tokens kept), "none" (no draft model)."""
    out = {}
    for family, paths in hybrid_checkpoints.items():
        for kind, draft in (("random", paths["draft"]), ("same", paths["target"]), ("none", None)):
            out[family, kind] = eos_free_engine(paths["target"], draft=draft)
    return out


@pytest.fixture(scope="module")
def hybrid_references(hybrid_checkpoints, hybrid_engines, stock_reference, frames):
    """{family: (inputs, stock greedy new tokens)}."""
    out = {}
    for family in FAMILIES:
        inputs = hybrid_engines[family, "none"].build_inputs(frames, "Describe the video.")
        out[family] = (inputs, stock_reference(hybrid_checkpoints[family]["target"], inputs, MAX_NEW))
    return out


def _check(engines, references, family, kind, method, drop_rate):
    inputs, expected = references[family]
    assert len(expected) == MAX_NEW
    return check_chain(engines[family, kind], inputs, expected, method, drop_rate)


@pytest.mark.parametrize("family", ["qwen3_5", pytest.param("qwen3_5_moe", marks=pytest.mark.slow)])
def test_full_rejections_and_full_acceptances_are_exact(hybrid_engines, hybrid_references, family):
    """Every step of the random draft is a full rejection (each verify forward of drafts + 1 tokens keeps
    only its first token, so the linear layers restore the state after that one token), every step of the
    target-as-draft is a full acceptance (they keep all drafts + 1 states' last one): both equal stock greedy."""
    gamma = hybrid_engines[family, "random"].config.num_draft_tokens
    rejected = _check(hybrid_engines, hybrid_references, family, "random", "sd", 0.0)
    assert rejected.stats.accepted_lengths == [1] * (MAX_NEW - 1)
    accepted = _check(hybrid_engines, hybrid_references, family, "same", "sd", 0.0)
    lengths = accepted.stats.accepted_lengths
    assert lengths[:-1] == [gamma + 1] * (len(lengths) - 1)  # the last step is cut at max_new_tokens


def test_tiny_checkpoints_are_hybrid(hybrid_engines):
    """The tiny Qwen3.5 target is [linear, linear, linear, full] and its draft [linear, full], loaded through
    the stock Auto classes as their own model types, on the one Qwen3.5 adapter (dense and MoE)."""
    assert qwen3_5_layer_types(4) == [LINEAR, LINEAR, LINEAR, FULL]
    assert qwen3_5_layer_types(2) == [LINEAR, FULL]
    for family in FAMILIES:
        engine = hybrid_engines[family, "random"]
        assert engine.target.config.get_text_config().layer_types == [LINEAR, LINEAR, LINEAR, FULL]
        assert engine.draft.config.get_text_config().layer_types == [LINEAR, FULL]
        assert engine.target.config.model_type == engine.draft.config.model_type == family
        assert family_of(engine.target.config) == engine.target_adapter.family == "qwen3_5"


def _reference_state(adapter, inputs, tokens: list[int]):
    """The target's cache after its prefill and plain one-token forwards of ``tokens``."""
    target = prefill_target(adapter, inputs, capture_scores=False)
    seq = target.seq
    logits = None
    for token in tokens:
        logits = seq.append(torch.tensor([token]))
        kv.keep(seq.cache, kv.length(seq.cache), [])  # commit: nothing to roll back
    return seq, logits


def _linear_states(cache):
    """[(conv state (B, C, K), recurrent state)] of every linear-attention layer."""
    return [
        (layer.conv_states[0][..., -layer.conv_kernel_size[0] :].clone(), layer.recurrent_states[0].clone())
        for layer in cache.layers
        if kv.layer_kind(layer) == "linear"
    ]


@torch.no_grad()
def test_full_rejection_after_a_verify_forward_restores_the_exact_state(hybrid_engines, hybrid_references):
    """The case the stock assisted decoding gets wrong: a verify forward of drafts + 1 tokens (pending token +
    k drafts) followed by a full rejection must leave the linear layers exactly as if only the pending token
    had been fed. Ours records drafts + 1 states and restores the right one; the stock recipe
    (``activate_past_recording(recurrent_states_to_keep=k)`` + ``crop(-k)``) restores the state from before
    the pending token."""
    inputs, expected = hybrid_references["qwen3_5"]
    adapter = hybrid_engines["qwen3_5", "random"].target_adapter
    pending, drafts = expected[0], [7, 8, 9, 10]  # drafts the target rejects (its own next token is expected[1])
    assert drafts[0] != expected[1]
    k = len(drafts)
    reference, ref_logits = _reference_state(adapter, inputs, [pending])

    def verify_forward(stock_recipe: bool):
        seq = prefill_target(adapter, inputs, capture_scores=False).seq
        ids = torch.tensor([pending, *drafts])
        length = kv.length(seq.cache)
        ctx = causal_context(k + 1, length + k + 1, adapter.device)
        pos = adapter.continuation(seq.next_pos, torch.arange(k + 1), seq.axes)
        if stock_recipe:
            seq.cache.activate_past_recording(recurrent_states_to_keep=k)
            logits = adapter.forward_ids(ids[None], pos, seq.cache, ctx)[0]
            seq.cache.crop(-k)
        else:
            logits = seq.feed(ids, torch.arange(k + 1), ctx)  # records k + 1 states
            kv.keep(seq.cache, length, [0])  # full rejection: keep the pending token only
        assert kv.length(seq.cache) == length + 1
        return seq, logits

    ours, logits = verify_forward(stock_recipe=False)
    torch.testing.assert_close(logits[0], ref_logits[0], rtol=1e-4, atol=1e-5)
    for (conv, state), (ref_conv, ref_state) in zip(_linear_states(ours.cache), _linear_states(reference.cache)):
        torch.testing.assert_close(conv, ref_conv)
        torch.testing.assert_close(state, ref_state, rtol=1e-4, atol=1e-6)
    # the next token after the rollback is the same as after plain decoding
    nxt = torch.tensor([expected[1]])
    torch.testing.assert_close(ours.append(nxt), reference.append(nxt), rtol=1e-4, atol=1e-5)

    stock, _ = verify_forward(stock_recipe=True)
    wrong = [
        float((state - ref_state).abs().max())
        for (_, state), (_, ref_state) in zip(_linear_states(stock.cache), _linear_states(reference.cache))
    ]
    assert min(wrong) > 1e-3, wrong  # one state too few recorded: the restored state is the one before the pending token


@torch.no_grad()
def test_partial_acceptance_restores_the_state_after_the_last_kept_token(hybrid_engines, hybrid_references):
    """Keeping the pending token and the first two drafts restores the state after exactly those three tokens."""
    inputs, expected = hybrid_references["qwen3_5"]
    adapter = hybrid_engines["qwen3_5", "random"].target_adapter
    block = expected[:3] + [5, 6]  # pending + 2 of the target's own tokens + 2 rejected drafts
    reference, _ = _reference_state(adapter, inputs, expected[:3])
    seq = prefill_target(adapter, inputs, capture_scores=False).seq
    length = kv.length(seq.cache)
    seq.append(torch.tensor(block))
    kv.keep(seq.cache, length, [0, 1, 2])
    assert kv.length(seq.cache) == length + 3
    for (conv, state), (ref_conv, ref_state) in zip(_linear_states(seq.cache), _linear_states(reference.cache)):
        torch.testing.assert_close(conv, ref_conv)
        torch.testing.assert_close(state, ref_state, rtol=1e-4, atol=1e-6)


@torch.no_grad()
def test_rollback_past_the_recorded_states_raises(hybrid_engines, hybrid_references):
    """A linear layer can only go back over tokens fed under ``record()``: the prompt is not recorded."""
    inputs, _ = hybrid_references["qwen3_5"]
    seq = prefill_target(hybrid_engines["qwen3_5", "random"].target_adapter, inputs, capture_scores=False).seq
    with pytest.raises(ValueError, match="recorded no states"):
        kv.truncate(seq.cache, kv.length(seq.cache) - 1)
    length = kv.length(seq.cache)
    seq.append(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="cannot roll back 3 tokens"):
        kv.keep(seq.cache, length - 1, [])
    with pytest.raises(ValueError, match="contiguous run"):
        kv.keep(seq.cache, length, [1])


def test_captured_scores_equal_eager_attention_of_the_full_attention_layers(hybrid_checkpoints, hybrid_engines, frames, eager_scores):
    """The verifier's scores come from the full-attention layers only (the linear layers have no attention
    matrix): they equal the eager model's attention of the text queries to the video keys averaged over
    those layers and their heads."""
    engine = hybrid_engines["qwen3_5", "none"]
    inputs = engine.build_inputs(frames, "Which colour is the square?")
    adapter = engine.target_adapter
    prefill = prefill_target(adapter, inputs, capture_scores=True)
    layout = prefill.layout
    expected, out, eager = eager_scores(hybrid_checkpoints["qwen3_5"]["target"], inputs, layout)
    full = [i for i, t in enumerate(eager.config.get_text_config().layer_types) if t == FULL]
    assert len(out.attentions) == len(full)  # one attention map per full-attention layer (all of them averaged)
    torch.testing.assert_close(prefill.scores, expected, rtol=1e-4, atol=1e-6)
    assert expected.std() > 0
    torch.testing.assert_close(prefill.logits, out.logits[0, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tree", ["specvlm-25", "dynamic", [[0], [1], [0, 0]]])
def test_trees_are_refused(hybrid_engines, hybrid_references, tree):
    inputs, _ = hybrid_references["qwen3_5"]
    with pytest.raises(ValueError, match="linear-attention layers take no attention mask.*tree='chain'"):
        hybrid_engines["qwen3_5", "random"].generate(inputs=inputs, max_new_tokens=4, method="sd", tree=tree)


def test_self_drafting_is_refused_but_plain_decoding_works(hybrid_engines, hybrid_references):
    inputs, expected = hybrid_references["qwen3_5"]
    engine = hybrid_engines["qwen3_5", "none"]
    with pytest.raises(ValueError, match=r"self-drafting \(draft=None\) is not possible.*read every video token"):
        engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method="specvlm", self_draft_layers="all")
    assert engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method="ar").token_ids == expected


def test_moe_target_with_dense_draft(hybrid_checkpoints, hybrid_references):
    """A Qwen3.5-MoE target pairs with a dense Qwen3.5 draft (one family, one layout, e.g. 35B-A3B with 2B)."""
    inputs, expected = hybrid_references["qwen3_5_moe"]
    engine = eos_free_engine(hybrid_checkpoints["qwen3_5_moe"]["target"], draft=hybrid_checkpoints["qwen3_5"]["draft"])
    check_chain(engine, inputs, expected, "specvlm", 0.9)


def test_tiny_references_name_the_hybrid_families():
    """``tiny:qwen3_5[:seed][:layers]`` and ``tiny:qwen3_5_moe`` are eval model references like every tiny family;
    the default 2 layers give [linear, full]."""
    from specvlm_eval.models import parse_tiny
    from specvlm.zoo import tiny

    assert {"qwen3_5", "qwen3_5_moe"} <= set(tiny.FAMILIES)
    assert parse_tiny("tiny:qwen3_5") == ("qwen3_5", 0, 2)
    assert parse_tiny("tiny:qwen3_5_moe:1:4") == ("qwen3_5_moe", 1, 4)
    model, _ = tiny.build_tiny(TinySpec(family="qwen3_5"))
    assert model.config.get_text_config().layer_types == [LINEAR, FULL]
