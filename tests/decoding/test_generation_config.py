"""Lossless against the checkpoint's own ``generate()``: its generation config and logits processors.

A real checkpoint ships a ``generation_config.json`` that stock ``model.generate(**inputs)`` applies
(Qwen2.5-VL-Instruct: ``do_sample`` with ``top_k`` 1, ``top_p`` 0.001, ``temperature`` 0.1 and
``repetition_penalty`` 1.05). The tiny checkpoints here ship such configs; every method, tree and
draft must return exactly what a separately loaded stock model's ``generate(**inputs)`` returns.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForImageTextToText, GenerationConfig

from specvlm import SpecVLM
from specvlm.config import DEFAULT_NUM_DRAFT_TOKENS

MAX_NEW = 24
FAMILIES = ("llava_onevision", "qwen2_5_vl")
#: A Qwen2.5-VL-Instruct style config (sampling that is greedy in effect) and a greedy one with
#: prefix-dependent processors that change the output of these tiny models.
CONFIGS = {
    "qwen_style": {"do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.1, "repetition_penalty": 1.05},
    "penalties": {"do_sample": False, "repetition_penalty": 1.3, "no_repeat_ngram_size": 3, "min_new_tokens": 12},
}
TREES = ("chain", "specvlm-25", "dynamic")


@pytest.fixture(scope="module")
def shipped(checkpoints, tmp_path_factory):
    """{(family, config name): target checkpoint directory whose generation_config.json sets the config}."""
    out = {}
    for family in FAMILIES:
        for name, settings in CONFIGS.items():
            path = tmp_path_factory.mktemp(f"{family}-{name}")
            shutil.copytree(checkpoints[family]["target"], path, dirs_exist_ok=True)
            config = GenerationConfig.from_pretrained(path)
            config.update(**settings)
            config.eos_token_id = None  # long runs: many verification steps
            config.save_pretrained(path)
            out[family, name] = path
    return out


def _stock(path, inputs, **kwargs) -> list[int]:
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=MAX_NEW, **kwargs)
    return ids[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="module")
def references(shipped, frames):
    """{(family, config name): (inputs, the stock model's own generate(**inputs) tokens)}."""
    out = {}
    for (family, name), path in shipped.items():
        engine = SpecVLM.from_pretrained(path)
        inputs = engine.build_inputs(frames, "Describe the video.")
        out[family, name] = (inputs, _stock(path, inputs))
    return out


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_config_changes_the_output(checkpoints, shipped, references, family, name):
    """Guards the other tests: without the processors the stock output would differ."""
    inputs, expected = references[family, name]
    plain = _stock(checkpoints[family]["target"], inputs, do_sample=False, eos_token_id=None)
    assert plain != expected


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("draft", ["separate", "self"])
def test_every_method_and_tree_matches_the_checkpoints_generate(checkpoints, shipped, references, family, name, draft):
    inputs, expected = references[family, name]
    engine = SpecVLM.from_pretrained(shipped[family, name], draft=checkpoints[family]["draft"] if draft == "separate" else None)
    runs = [("ar", "chain", 0.9)] + [(m, t, d) for m in ("sd", "specvlm") for t in TREES for d in ((0.0,) if m == "sd" else (0.0, 0.9))]
    for method, tree, drop_rate in runs:
        result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, tree=tree, drop_rate=drop_rate)
        assert result.token_ids == expected, (method, tree, drop_rate)
        assert result.stats.stopped_by == "max_new_tokens"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampling"])
def test_the_draft_proposes_under_the_targets_prefix_processors(shipped, references, family, sample, monkeypatch):
    """A self-draft that prunes nothing is the target itself: with the target's prefix-dependent
    processors applied to its logits at every drafted node (each with its own prefix) it proposes
    exactly what the target commits, so every step accepts its whole chain. Without them (the raw draft
    logits) the penalties reject drafted tokens: the contrast shows the processors reach the draft."""
    from specvlm.decoding.drafters import model as draft_model

    inputs, expected = references[family, "penalties"]
    engine = SpecVLM.from_pretrained(
        shipped[family, "penalties"], draft=None, self_draft_layers="all", lazy_draft_after=0, never_slower=False
    )  # every step drafts: the accepted lengths below are the drafts', not a guard's plain steps
    settings = dict(inputs=inputs, max_new_tokens=MAX_NEW, method="specvlm", tree="chain", drop_rate=0.0)
    if sample:
        settings.update(do_sample=True, top_k=1, seed=0)  # sampling that is greedy in effect: same tokens
    result = engine.generate(**settings)
    assert result.token_ids == expected
    full = DEFAULT_NUM_DRAFT_TOKENS + 1
    assert result.stats.accepted_lengths[:-1] == [full] * (len(result.stats.accepted_lengths) - 1)

    monkeypatch.setattr(draft_model.DraftRule, "after", classmethod(lambda cls, *args: None))
    raw = engine.generate(**settings)
    assert raw.token_ids == expected  # still lossless, only slower
    assert min(raw.stats.accepted_lengths[:-1]) < full


@pytest.mark.parametrize("family", FAMILIES)
def test_per_call_generation_config_and_keywords_merge_like_stock(checkpoints, references, family):
    """A per-call ``generation_config`` and keyword overrides merge over the checkpoint's config as in
    stock ``generate()``; keywords win over the per-call config."""
    inputs, _ = references[family, "penalties"]
    path, draft = checkpoints[family]["target"], checkpoints[family]["draft"]
    engine = SpecVLM.from_pretrained(path, draft=draft)
    per_call = GenerationConfig(do_sample=False, repetition_penalty=1.3, no_repeat_ngram_size=3, eos_token_id=None)
    cases = [
        ({"generation_config": per_call}, {"generation_config": per_call}),
        ({"generation_config": per_call, "repetition_penalty": 1.6}, {"generation_config": per_call, "repetition_penalty": 1.6}),
        ({"repetition_penalty": 1.2, "min_new_tokens": 20, "eos_token_id": None}, {"repetition_penalty": 1.2, "min_new_tokens": 20, "eos_token_id": None}),
    ]
    for ours, stock in cases:
        expected = _stock(path, inputs, **stock)
        for method in ("ar", "specvlm"):
            result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, **ours)
            assert result.token_ids == expected, (method, ours)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_beams": 3}, "num_beams=3 is not supported with speculative decoding"),
        ({"num_return_sequences": 2, "do_sample": True}, "num_return_sequences=2 is not supported"),
        ({"guidance_scale": 1.5}, "guidance_scale=1.5 is not supported"),
        ({"repetiton_penalty": 1.1}, "unknown argument 'repetiton_penalty'"),
        ({"generation_config": {"top_k": 3}}, "generation_config must be a transformers GenerationConfig"),
    ],
)
def test_what_speculation_cannot_honour_is_refused_before_any_work(checkpoints, frames, kwargs, message, monkeypatch):
    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"])
    calls = []
    monkeypatch.setattr(engine, "_prefill_target", lambda *a, **k: calls.append(a))
    with pytest.raises((ValueError, TypeError), match=message):
        engine.generate(video=frames, prompt="Describe the video.", max_new_tokens=4, **kwargs)
    assert not calls


class _Recorder:
    """A streamer that records what it receives (transformers' BaseStreamer protocol)."""

    def __init__(self):
        self.puts, self.ended = [], 0

    def put(self, value):
        self.puts.append(value.tolist())

    def end(self):
        self.ended += 1


@pytest.mark.parametrize("method", ["ar", "specvlm"])
def test_a_streamer_receives_the_prompt_then_exactly_the_results_ids(checkpoints, references, method):
    inputs, _ = references["qwen2_5_vl", "penalties"]
    engine = SpecVLM.from_pretrained(checkpoints["qwen2_5_vl"]["target"], draft=checkpoints["qwen2_5_vl"]["draft"])
    streamer = _Recorder()
    result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, ignore_eos=True, streamer=streamer)
    assert streamer.puts[0] == inputs["input_ids"].tolist()
    steps = streamer.puts[1:]
    assert all(len(p) == 1 for p in steps)  # batch 1, one put per committed step
    assert [t for p in steps for t in p[0]] == result.token_ids
    assert len(steps) == 1 + result.stats.target_steps and streamer.ended == 1


def test_text_streamer_prints_the_answer(checkpoints, references, capsys):
    from transformers import TextStreamer

    inputs, _ = references["qwen2_5_vl", "penalties"]
    engine = SpecVLM.from_pretrained(checkpoints["qwen2_5_vl"]["target"], draft=checkpoints["qwen2_5_vl"]["draft"])
    streamer = TextStreamer(engine.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, streamer=streamer)
    assert capsys.readouterr().out.strip() == result.text.strip()


def test_a_streamer_without_put_is_refused(checkpoints, frames):
    engine = SpecVLM.from_pretrained(checkpoints["qwen2_5_vl"]["target"])
    with pytest.raises(ValueError, match="streamer must have put"):
        engine.generate(video=frames, prompt="Describe the video.", max_new_tokens=4, streamer=object())


def test_draft_rule_pads_a_narrower_draft_vocabulary_to_the_targets():
    """Prefix ids and processor token ids may lie beyond a narrower draft vocabulary: the draft's logits
    are padded to the target's width with -inf (never proposed) before the processors run."""
    from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor, RepetitionPenaltyLogitsProcessor

    from specvlm.decoding.drafting import DraftRule
    from specvlm.decoding.logits import NextTokenRule

    width, vocab = 12, 8
    processors = LogitsProcessorList([
        RepetitionPenaltyLogitsProcessor(2.0),
        MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=2, min_new_tokens=5, eos_token_id=torch.tensor([10])),
    ])  # fmt: skip
    rule = NextTokenRule(processors=processors, prompt_ids=torch.tensor([[1, 11]]), do_sample=False)
    draft_rule = DraftRule.after(rule, [3, 9], width)  # 11 and 9 are target-only / beyond the draft's range
    logits = torch.full((2, vocab), 2.0)
    scores = draft_rule.scores(logits, torch.tensor([[5], [6]]))
    assert scores.shape == (2, vocab)
    penalised = {1, 3}  # in the prefix and within the draft's vocabulary (11 and 9 are not)
    for row, own in enumerate((5, 6)):
        expected = [1.0 if t in penalised | {own} else 2.0 for t in range(vocab)]
        assert scores[row].tolist() == expected


@pytest.mark.parametrize("method", ["ar", "specvlm"])
def test_a_per_call_configs_own_length_counts_as_stock_counts_it(checkpoints, frames, method):
    """``max_new_tokens`` of a per-call ``GenerationConfig`` is the answer's length when the keyword is not
    given (stock: the keyword overrides the config only when passed)."""
    path = checkpoints["llava_onevision"]["target"]
    engine = SpecVLM.from_pretrained(path, draft=checkpoints["llava_onevision"]["draft"])
    inputs = engine.build_inputs(frames, "Describe the video.")
    per_call = GenerationConfig(max_new_tokens=12, repetition_penalty=1.3, eos_token_id=None)
    stock = AutoModelForImageTextToText.from_pretrained(path).eval()
    with torch.no_grad():
        expected = stock.generate(**inputs, generation_config=per_call)[0, inputs["input_ids"].shape[1] :].tolist()
    assert len(expected) == 12
    assert engine.generate(inputs=inputs, generation_config=per_call, method=method).token_ids == expected
    shorter = engine.generate(inputs=inputs, generation_config=per_call, max_new_tokens=5, method=method)
    assert shorter.token_ids == expected[:5]  # the keyword, given, wins (the penalty still applies)


def test_the_checkpoints_own_length_applies_when_nothing_else_sets_one(checkpoints, frames):
    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"])
    engine.target.generation_config.max_new_tokens = 7
    engine.target.generation_config.eos_token_id = None
    assert engine.generate(video=frames, prompt="Describe the video.", method="ar").stats.new_tokens == 7
    engine.target.generation_config.max_new_tokens = None
    from specvlm.config import DEFAULT_MAX_NEW_TOKENS

    engine.target.generation_config.eos_token_id = None
    result = engine.generate(video=frames, prompt="Describe the video.", method="ar")
    assert result.stats.new_tokens == DEFAULT_MAX_NEW_TOKENS


@pytest.mark.parametrize("method", ["ar", "specvlm", "lookup"])
def test_a_callers_logits_processors_apply_as_stock_applies_them(checkpoints, frames, method):
    """A ``logits_processor=`` list joins the config's processors at every verified position, with that
    position's prefix (a processor reading the prefix: every third position it forces the token after the
    last one)."""
    from transformers import LogitsProcessor

    class NoImmediateRepeat(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            if input_ids.shape[-1] % 3 == 0:
                scores[torch.arange(scores.shape[0]), (input_ids[:, -1] + 1) % scores.shape[-1]] += 1e4
            return scores

    path = checkpoints["qwen2_5_vl"]["target"]
    engine = SpecVLM.from_pretrained(path, draft=checkpoints["qwen2_5_vl"]["draft"])
    engine.target.generation_config.eos_token_id = None
    inputs = engine.build_inputs(frames, "Describe the video.")
    stock = AutoModelForImageTextToText.from_pretrained(path).eval()
    with torch.no_grad():
        ids = stock.generate(**inputs, max_new_tokens=MAX_NEW, eos_token_id=None, logits_processor=[NoImmediateRepeat()])
    expected = ids[0, inputs["input_ids"].shape[1] :].tolist()
    plain = stock.generate(**inputs, max_new_tokens=MAX_NEW, eos_token_id=None)[0, inputs["input_ids"].shape[1] :].tolist()
    assert expected != plain  # the processor changes this model's answer: the test can tell
    result = engine.generate(inputs=inputs, max_new_tokens=MAX_NEW, method=method, logits_processor=[NoImmediateRepeat()])
    assert result.token_ids == expected


def test_stopping_criteria_are_refused_by_name_and_a_bad_processor_list_too(checkpoints, frames):
    from transformers import MaxLengthCriteria

    engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"])
    with pytest.raises(ValueError, match="stopping_criteria is not supported"):
        engine.generate(video=frames, prompt="Hi", max_new_tokens=3, stopping_criteria=[MaxLengthCriteria(5)])
    with pytest.raises(ValueError, match="logits_processor must be a list"):
        engine.generate(video=frames, prompt="Hi", max_new_tokens=3, logits_processor="no")
    assert len(engine.generate(video=frames, prompt="Hi", max_new_tokens=3, stopping_criteria=[]).token_ids) <= 3


def test_dtype_is_accepted_and_agrees_with_torch_dtype(checkpoints):
    import warnings

    path = checkpoints["llava_onevision"]["target"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the project's own loading warns about nothing deprecated
        warnings.filterwarnings("error", message=".*torch_dtype.*")
        engine = SpecVLM.from_pretrained(path, dtype=torch.float32)
    assert engine.target.dtype == torch.float32
    with pytest.raises(ValueError, match="disagree"):
        SpecVLM.from_pretrained(path, dtype=torch.float32, torch_dtype=torch.bfloat16)
