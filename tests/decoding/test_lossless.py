"""Greedy SpecVLM output equals the stock target's greedy ``generate()`` (float32, CPU).

Reference tokens come from a separately loaded stock model (stock SDPA attention, stock
``generate``), never from our own loop. EOS is disabled so every run spans many verify steps.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from specvlm import SpecVLM

MAX_NEW = 40
FAMILIES = ("llava_onevision", "qwen2_5_vl")


def _engine(checkpoints, family, draft):
    paths = checkpoints[family]
    # "self": the target drafts for itself with every layer, so an unpruned self-draft accepts everything
    # (layer-skipping self-drafts: tests/test_self_draft.py)
    engine = SpecVLM.from_pretrained(
        paths["target"], draft=paths["draft"] if draft == "separate" else None, self_draft_layers="all"
    )
    engine.target.generation_config.eos_token_id = None
    return engine


@pytest.fixture(scope="module")
def references(checkpoints, frames):
    """{family: (inputs, stock greedy new tokens)}."""
    out = {}
    for family in FAMILIES:
        engine = _engine(checkpoints, family, "self")
        inputs = engine.build_inputs(frames, "Describe the video.")
        stock = AutoModelForImageTextToText.from_pretrained(checkpoints[family]["target"]).eval()
        assert stock.config.get_text_config()._attn_implementation == "sdpa"
        with torch.no_grad():
            ids = stock.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=None)
        out[family] = (inputs, ids[0, inputs["input_ids"].shape[1] :].tolist())
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("draft", ["separate", "self"])
@pytest.mark.parametrize("method,drop_rate", [("ar", 0.9), ("sd", 0.0), ("specvlm", 0.0), ("specvlm", 0.9)])
def test_matches_stock_greedy(checkpoints, references, family, draft, method, drop_rate):
    inputs, expected = references[family]
    engine = _engine(checkpoints, family, draft)
    result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, drop_rate=drop_rate)
    assert len(expected) == MAX_NEW
    assert result.token_ids == expected
    stats = result.stats
    assert stats.new_tokens == MAX_NEW and stats.stopped_by == "max_new_tokens"
    assert sum(stats.accepted_lengths) == MAX_NEW - 1  # the first token is the prefill's
    assert stats.target_steps == len(stats.accepted_lengths)
    if method == "ar":
        assert stats.mean_accepted_tokens == 1.0 and stats.draft_kv_tokens == 0
    else:
        assert stats.target_steps > 1
        assert stats.target_steps < MAX_NEW - 1 or draft == "separate"


@pytest.mark.parametrize("family", FAMILIES)
def test_self_draft_without_pruning_accepts_everything(checkpoints, references, family):
    inputs, expected = references[family]
    engine = _engine(checkpoints, family, "self")
    gamma = engine.config.num_draft_tokens
    for method, kwargs in (("sd", {}), ("specvlm", {"drop_rate": 0.0})):
        result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, **kwargs)
        assert result.token_ids == expected
        lengths = result.stats.accepted_lengths
        assert lengths[:-1] == [gamma + 1] * (len(lengths) - 1)
        assert 1 <= lengths[-1] <= gamma + 1
        assert result.stats.draft_kv_tokens == result.stats.target_kv_tokens


@pytest.fixture(scope="module")
def noisy_drafts(checkpoints, tmp_path_factory):
    """{family: path}: a draft that is the target plus noise, so acceptance lengths are mixed and every
    rollback path runs."""
    out = {}
    for family in FAMILIES:
        draft = AutoModelForImageTextToText.from_pretrained(checkpoints[family]["target"]).eval()
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in draft.model.language_model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.05 * p.std())
        path = tmp_path_factory.mktemp("noisy") / family
        draft.save_pretrained(path)
        AutoProcessor.from_pretrained(checkpoints[family]["target"]).save_pretrained(path)
        out[family] = path
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_partially_agreeing_draft_is_lossless(checkpoints, references, noisy_drafts, family):
    inputs, expected = references[family]
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"], draft=noisy_drafts[family], drop_rate=0.5)
    engine.target.generation_config.eos_token_id = None
    for method in ("sd", "specvlm"):
        result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method)
        assert result.token_ids == expected
        assert len(set(result.stats.accepted_lengths)) > 1, result.stats.accepted_lengths


def _has_cpp_compiler() -> bool:
    from specvlm.loading import check_compiler

    try:
        check_compiler(torch.device("cpu"))
    except ValueError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_cpp_compiler(), reason="torch.compile needs a C++ compiler on CPU")
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_decode_steps_are_lossless(checkpoints, references, noisy_drafts, family):
    """compile="draft" compiles only the draft's steps, compile="all" the target's too; chain and tree,
    with mixed acceptance lengths, the output stays the stock greedy output."""
    inputs, expected = references[family]
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"], draft=noisy_drafts[family], drop_rate=0.5)
    engine.target.generation_config.eos_token_id = None
    result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method="specvlm", compile="draft")
    assert result.token_ids == expected
    assert engine.draft_adapter._compiled is not None and engine.target_adapter._compiled is None
    for method, tree in (("ar", "chain"), ("specvlm", "chain"), ("specvlm", "specvlm-25")):
        result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, tree=tree, compile="all")
        assert result.token_ids == expected, (method, tree)
        if method != "ar":
            assert len(set(result.stats.accepted_lengths)) > 1, result.stats.accepted_lengths
    assert engine.target_adapter._compiled is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_compact_positions_stay_lossless(checkpoints, references, family):
    inputs, expected = references[family]
    engine = _engine(checkpoints, family, "separate")
    result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method="specvlm", positions="compact")
    assert result.token_ids == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_stops_at_eos_like_stock(checkpoints, references, family):
    """Make a token the target emits mid-sequence the EOS: both must stop right after it."""
    inputs, expected = references[family]
    eos = expected[7]
    stop = expected.index(eos) + 1
    engine = _engine(checkpoints, family, "self")
    engine.target.generation_config.eos_token_id = eos
    stock = AutoModelForImageTextToText.from_pretrained(checkpoints[family]["target"]).eval()
    ref = stock.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    ref = ref[0, inputs["input_ids"].shape[1] :].tolist()
    assert ref == expected[:stop]
    for method in ("ar", "sd", "specvlm"):
        result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, drop_rate=0.5)
        assert result.token_ids == ref
        assert result.stats.stopped_by == "eos"


def test_video_file_through_decord_and_pyav_matches_stock(checkpoints, video_file):
    engine = _engine(checkpoints, "qwen2_5_vl", "separate")
    inputs = engine.build_inputs(video_file, "What moves?", num_frames=8)
    stock = AutoModelForImageTextToText.from_pretrained(checkpoints["qwen2_5_vl"]["target"]).eval()
    ref = stock.generate(**inputs, max_new_tokens=24, do_sample=False, eos_token_id=None)
    ref = ref[0, inputs["input_ids"].shape[1] :].tolist()
    result = engine.generate(video=video_file, prompt="What moves?", num_frames=8, max_new_tokens=24)
    assert result.token_ids == ref
    assert result.stats.video_tokens > 0 and 0 < result.stats.kept_video_tokens < result.stats.video_tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_decoding_uses_no_deprecated_transformers_argument(checkpoints, references, family):
    """The loop calls the stock text model with the argument names the installed transformers declares:
    a deprecated name would warn on every forward (and stop working when it is removed)."""
    import warnings

    inputs, expected = references[family]
    engine = _engine(checkpoints, family, "separate")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = engine.generate(inputs=inputs, max_new_tokens=8, method="specvlm", drop_rate=0.5)
    assert result.token_ids == expected[:8]
    deprecated = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert deprecated == []


@pytest.mark.parametrize("family", FAMILIES)
def test_draft_keep_is_what_the_draft_is_prefilled_with(checkpoints, references, family):
    """``draft_keep`` returns every text token plus the video tokens the pruning keeps: all of the
    prompt for "sd", the count ``generate`` reports for "specvlm"; ar has no draft to keep for."""
    inputs, _ = references[family]
    engine = _engine(checkpoints, family, "separate")
    length = int(inputs["input_ids"].shape[1])
    assert torch.equal(engine.draft_keep(inputs, "sd"), torch.arange(length))
    keep = engine.draft_keep(inputs, drop_rate=0.75)
    video = engine.target_adapter.layout(inputs).positions
    kept_video = int(torch.isin(keep, video).sum())
    # lazy_draft_after=0: a 2-token answer would otherwise never prefill the draft (kept_video_tokens 0)
    result = engine.generate(inputs=inputs, max_new_tokens=2, method="specvlm", drop_rate=0.75, lazy_draft_after=0)
    assert kept_video == result.stats.kept_video_tokens < video.numel()
    assert keep.numel() == length - video.numel() + kept_video and torch.equal(keep, keep.sort().values)
    with pytest.raises(ValueError, match="'sd' or 'specvlm'"):
        engine.draft_keep(inputs, "ar")


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_follows_its_model_when_the_model_moves(family):
    """The adapter keeps a handle on the input embeddings; moving the model (here to float64) moves what
    the loop reads: its dtype and the embeddings it looks up."""
    from specvlm.models import adapter_for
    from specvlm.zoo.tiny import TinySpec, build_tiny

    model, _ = build_tiny(TinySpec(family=family, num_layers=1))
    adapter = adapter_for(model)
    assert adapter.dtype == torch.float32
    model.to(torch.float64)
    ids = torch.tensor([[1, 2, 3]])
    assert adapter.dtype == torch.float64 and adapter.device == model.device
    assert torch.equal(adapter.embed_tokens(ids), model.get_input_embeddings()(ids))
    assert adapter.embed_tokens(ids).dtype == torch.float64
