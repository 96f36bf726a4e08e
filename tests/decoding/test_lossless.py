"""Lossless: greedy SpecVLM output equals the stock target's greedy ``generate()`` (float32, CPU), as one matrix
over every family, prompt, draft kind, method, drop rate, tree and attention backend; then the lossless properties
that need more than one run (full acceptance by an unpruned self-draft, mixed acceptance lengths, compiled steps,
compact positions, an EOS, a video file).

Reference tokens come from a separately loaded stock model (stock SDPA attention, stock ``generate``: the session's
``stock_reference``), never from our own loop. EOS is disabled so every run spans several verify steps.

Families decoded alike form a suite: the same pairs (tests/tiny_pairs.py), answer length and engine settings.

* ``core``: LLaVA-OneVision and Qwen2.5-VL, 40 tokens, a separate draft and a self-draft running every layer,
  every tree kind (a user's paths included) and the log-sum-exp cascade attention backend, and prompt lookup;
* ``layers``: the same families' layer-skipping self-drafts (one layer, a ratio, "auto", every layer);
* ``families``: Qwen2-VL, Qwen3-VL (+ MoE), InternVL, LLaVA-OneVision-1.5 and GLM-4.1V / 4.5V (MoE) / 4.6V, 20
  tokens, the whole method x drop rate x tree x draft matrix (a self-draft with the library's default layers);
* ``hybrid`` (Qwen3.5 dense and MoE: Gated-DeltaNet linear attention in 3 of every 4 layers) and ``gemma4``
  (sliding-window + full attention, an E-model draft with KV-shared layers), chains only, 16 tokens, a differently
  seeded draft (almost every token rejected) and the target's own checkpoint as a separate draft (every token
  accepted with all visual tokens kept);
* ``images``: one image, two images and an image + video, pruned as one set of visual runs, 16 tokens;
* ``edges``: every family at the edges of its inputs (one frame, an odd number of frames, one image, a
  one-character prompt, a video with no text), 12 tokens, in a 320-position context.

The hybrid, Gemma 4 and edge suites run with one intra-op thread (the pure-torch fallbacks of the linear layers'
kernels are far slower with several threads on small CPUs); their stock references are computed under the same
setting. A representative subset of each suite runs by default, the rest is marked slow.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from specvlm import SpecVLM
from specvlm.zoo.tiny import GEMMA4_E_STYLE
from tiny_pairs import (
    CORE_FAMILIES, EDGE_CONTEXT, EDGE_FAMILIES, EDGE_LAYERS, EDGE_PROMPTS, IMAGE_PROMPTS, PAIRS_REQUIRED, Lazy, build_prompt,
    eos_free_engine, expected_kept,
)  # fmt: skip


@dataclass(frozen=True)
class Suite:
    """Families decoded alike: answer length, pair options, engine settings at load and per call."""

    max_new: int
    layers: dict = field(default_factory=dict)  # {family: (target, draft) layers} where not tiny_pairs.LAYERS
    max_positions: int | None = None
    draft_extra: dict | None = None
    engine: dict = field(default_factory=dict)
    call: dict = field(default_factory=dict)
    one_thread: bool = False


SUITES = {
    "core": Suite(40, engine={"tree_top_k": 4, "tree_total_tokens": 16}),
    "layers": Suite(20, call={"num_draft_tokens": 4}),
    "families": Suite(20),
    "hybrid": Suite(16, one_thread=True),
    "gemma4": Suite(16, draft_extra=GEMMA4_E_STYLE, one_thread=True),
    # the draft starts with the first token (lazy_draft_after=0): the image answers are short
    "images": Suite(16, call={"lazy_draft_after": 0}),
    "edges": Suite(12, layers=EDGE_LAYERS, max_positions=EDGE_CONTEXT, one_thread=True),
}


@dataclass(frozen=True)
class Case:
    """One decoding of one prompt. ``draft``: "separate" (the pair's draft), "same" (the target's own checkpoint as a
    separate draft) or "self" (no draft model); ``layers``: a self-draft's ``self_draft_layers`` (None: the engine's
    default); ``tree``: a name or a tuple of paths; ``backend``: an ``attn_backend`` (None: the default)."""

    suite: str
    family: str
    prompt: str
    draft: str
    method: str
    drop_rate: float
    tree: object = "chain"
    layers: object = None
    backend: str | None = None

    @property
    def id(self) -> str:
        tree = self.tree if isinstance(self.tree, str) else "user"
        layers = "" if self.layers is None else f"[{self.layers}]"
        backend = f"-{self.backend}" if self.backend else ""
        return f"{self.suite}-{self.family}-{self.prompt}-{self.draft}{layers}-{self.method}-{self.drop_rate}-{tree}{backend}"


USER_TREE = ((0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0))
TREES = ("chain", "specvlm-25", "dynamic")
DENSE_FAMILIES = ("qwen2_vl", "qwen3_vl", "internvl", "llava_onevision1_5", "glm4v")
FAMILIES = ("qwen2_vl", "qwen3_vl", "qwen3_vl_moe", "internvl", "llava_onevision1_5", "glm4v", "glm4v_moe", "glm46v")
HYBRID = ("qwen3_5", "qwen3_5_moe")
IMAGE_FAMILIES = ("llava_onevision", "qwen2_5_vl", "qwen3_vl", "internvl")


def _core():
    cases = []
    for family in CORE_FAMILIES:
        for draft in ("separate", "self"):
            layers = "all" if draft == "self" else None  # every layer: an unpruned self-draft accepts everything
            cases += [Case("core", family, "video", draft, "ar", 0.9, layers=layers)]
            cases += [Case("core", family, "video", draft, "sd", 0.0, layers=layers)]
            cases += [
                Case("core", family, "video", draft, "specvlm", drop_rate, tree, layers)
                for drop_rate in (0.0, 0.9)
                for tree in (*TREES, USER_TREE)
            ]
        cases += [Case("core", family, "video", "separate", "lookup", 0.0)]  # prompt lookup drafts chains
        # the log-sum-exp cascade (prefix without a mask + masked tree block) in scoring, drafting and verification
        cases += [
            Case("core", family, "video", draft, method, 0.9, tree, "all" if draft == "self" else None, "cascade")
            for tree in TREES
            for draft in ("separate", "self")
            for method in ("ar", "sd", "specvlm")
        ]
    return cases


# layer-skipping self-drafts: a 2-layer target drafting with one layer agrees rarely (full rejections)
LAYER_CASES = [
    Case("layers", family, "video", "self", "specvlm", 0.9, tree, layers)
    for family in CORE_FAMILIES
    for tree, layers in [("chain", (0,)), ("chain", (1,)), ("chain", 0.5), ("chain", "auto"), ("chain", "all"),
                         ("specvlm-25", (0,)), ("specvlm-25", "auto"), ("dynamic", (1,))]  # fmt: skip
]

# every method, draft kind, tree and drop rate at least once per dense family by default (the MoE variants share
# their dense family's adapter: tests/models/test_families.py pairs a MoE target with a dense draft)
FAMILIES_FAST = [
    Case("families", family, "video", draft, method, drop_rate, tree)
    for family in DENSE_FAMILIES
    for draft, method, drop_rate, tree in (
        ("separate", "ar", 0.9, "chain"),
        ("separate", "specvlm", 0.9, "specvlm-25"),
        ("separate", "sd", 0.0, "chain"),
        ("self", "specvlm", 0.9, "chain"),
        ("self", "specvlm", 0.0, "dynamic"),
        ("separate", "lookup", 0.0, "chain"),
    )
]
FAMILIES_MATRIX = [
    Case("families", family, "video", draft, method, drop_rate, tree)
    for family in FAMILIES
    for draft in ("separate", "self")
    for method in ("ar", "sd", "specvlm")
    for drop_rate in (0.0, 0.9)
    for tree in (TREES if method != "ar" else ("chain",))
]

HYBRID_FAST = [
    Case("hybrid", "qwen3_5", "video", "separate", "ar", 0.0),
    Case("hybrid", "qwen3_5", "video", "separate", "sd", 0.0),
    Case("hybrid", "qwen3_5", "video", "separate", "specvlm", 0.9),
    Case("hybrid", "qwen3_5", "video", "same", "sd", 0.0),
    Case("hybrid", "qwen3_5", "video", "same", "specvlm", 0.9),
    Case("hybrid", "qwen3_5_moe", "video", "separate", "specvlm", 0.9),
    Case("hybrid", "qwen3_5", "video", "separate", "lookup", 0.0),
]
HYBRID_MATRIX = [
    Case("hybrid", family, "video", draft, method, drop_rate)
    for family in HYBRID
    for draft in ("separate", "same")
    for method in ("ar", "sd", "specvlm")
    for drop_rate in (0.0, 0.9)
]

# Gemma 4: three frames of 64 soft tokens each, a sliding window (24) smaller than a frame
GEMMA_FAST = [
    Case("gemma4", "gemma4", "odd_frames", draft, method, drop_rate)
    for draft, method, drop_rate in (
        ("separate", "ar", 0.0),
        ("separate", "sd", 0.0),
        ("separate", "specvlm", 0.9),
        ("same", "sd", 0.0),
        ("same", "specvlm", 0.9),
        ("separate", "lookup", 0.0),
    )
]
GEMMA_MATRIX = [
    Case("gemma4", "gemma4", "odd_frames", draft, method, drop_rate)
    for draft in ("separate", "same")
    for method in ("ar", "sd", "specvlm")
    for drop_rate in (0.0, 0.9)
]

IMAGE_FAST = [
    Case("images", family, prompt, draft, "specvlm", 0.9, tree, "all" if draft == "self" else None)
    for family in IMAGE_FAMILIES
    for prompt in IMAGE_PROMPTS
    for draft, tree in (("separate", "specvlm-25"), ("self", "chain"))
]
IMAGE_MATRIX = [
    Case("images", family, prompt, draft, method, drop_rate, tree, "all" if draft == "self" else None)
    for family in IMAGE_FAMILIES
    for prompt in IMAGE_PROMPTS
    for draft in ("separate", "self")
    for method in ("ar", "sd", "specvlm")
    for drop_rate in (0.0, 0.9)
    for tree in (TREES if method != "ar" else ("chain",))
    if not (method == "ar" and draft == "self")
]

EDGE_CASES = [
    Case("edges", family, prompt, "separate", method, 0.5)
    for family in EDGE_FAMILIES
    for prompt in EDGE_PROMPTS
    for method in ("ar", "specvlm")
    if not (prompt == "one_frame" and family in PAIRS_REQUIRED)  # refused: tests/models/test_edges.py
]


def _matrix():
    fast = _core() + LAYER_CASES + FAMILIES_FAST + HYBRID_FAST + GEMMA_FAST + IMAGE_FAST + EDGE_CASES
    slow = [case for case in FAMILIES_MATRIX + HYBRID_MATRIX + GEMMA_MATRIX + IMAGE_MATRIX if case not in fast]
    assert len(set(fast)) == len(fast) and len(set(slow)) == len(slow)
    return [pytest.param(case, id=case.id) for case in fast] + [
        pytest.param(case, id=case.id, marks=pytest.mark.slow) for case in slow
    ]


@contextlib.contextmanager
def _threads(suite: Suite):
    threads = torch.get_num_threads()
    if suite.one_thread:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pair(pairs, suite_name: str, family: str):
    suite = SUITES[suite_name]
    return pairs(family, suite.layers.get(family), max_positions=suite.max_positions, draft_extra=suite.draft_extra)


@pytest.fixture(scope="module")
def engines(pairs):
    """{(suite, family, draft kind): engine with EOS disabled}, built on first use."""

    def build(key):
        suite, family, draft = key
        paths = _pair(pairs, suite, family)
        model = {"separate": paths["draft"], "same": paths["target"], "self": None}[draft]
        return eos_free_engine(paths["target"], draft=model, **SUITES[suite].engine)

    return Lazy(build)


@pytest.fixture(scope="module")
def references(pairs, engines, stock_reference, frames):
    """{(suite, family, prompt): (inputs, stock greedy new tokens)}, built on first use (under the suite's threads)."""

    def build(key):
        suite, family, prompt = key
        inputs = build_prompt(engines[suite, family, "self" if suite != "edges" else "separate"], prompt, frames)
        expected = stock_reference(_pair(pairs, suite, family)["target"], inputs, SUITES[suite].max_new)
        assert len(expected) == SUITES[suite].max_new
        return inputs, expected

    return Lazy(build)


def _settings(case: Case) -> dict:
    settings = dict(SUITES[case.suite].call, method=case.method, drop_rate=case.drop_rate)
    settings["tree"] = case.tree if isinstance(case.tree, str) else [list(path) for path in case.tree]
    if case.layers is not None:
        settings["self_draft_layers"] = case.layers if not isinstance(case.layers, tuple) else list(case.layers)
    if case.backend is not None:
        settings["attn_backend"] = case.backend
    return settings


def _decode(engines, references, case: Case):
    """(engine, inputs, expected, result) of ``case``."""
    engine = engines[case.suite, case.family, case.draft]
    inputs, expected = references[case.suite, case.family, case.prompt]
    result = engine.generate(inputs=inputs, max_new_tokens=len(expected), **_settings(case))
    return engine, inputs, expected, result


@pytest.mark.parametrize("case", _matrix())
def test_greedy_matches_stock(engines, references, case):
    with _threads(SUITES[case.suite]):
        engine, inputs, expected, result = _decode(engines, references, case)
    assert result.token_ids == expected, case
    stats = result.stats
    max_new = len(expected)
    assert stats.new_tokens == max_new and stats.stopped_by == "max_new_tokens"
    assert sum(stats.accepted_lengths) == max_new - 1  # the first token is the prefill's
    assert stats.target_steps == len(stats.accepted_lengths)
    layout = engine.target_adapter.layout(inputs)
    n = layout.num_tokens
    assert stats.video_tokens == n == sum(run.num_tokens for run in layout.runs)  # every image and video run
    kept = expected_kept(case.method, case.drop_rate, n)
    assert stats.kept_video_tokens == kept
    if case.method == "ar":
        assert stats.mean_accepted_tokens == 1.0 and stats.draft_kv_tokens == 0
        return
    if case.method == "lookup":  # n-grams of the context, no draft model
        assert stats.draft_kv_tokens == 0 and stats.draft_steps == 0 and stats.speculation == "on"
    else:  # the draft's prompt: every text token (timestamps, markers, newlines) + the kept visual tokens
        assert stats.draft_kv_tokens == stats.target_kv_tokens - n + kept
    config = engine.config.replace(**{k: v for k, v in _settings(case).items() if k != "method"})
    depth = config.tree_depth if case.tree == "dynamic" else config.tree_shape().depth
    assert max(stats.accepted_lengths) <= depth + 1
    if case.suite == "core":
        assert stats.target_steps > 1
        assert case.draft == "separate" or stats.target_steps < max_new - 1  # a self-draft of every layer agrees
        if case.method != "lookup":
            assert stats.draft_steps > 0
    if case.suite == "layers":
        assert stats.speculation in ("on", "stopped")
        if case.layers in ((0,), (1,), 0.5):
            assert stats.draft_layers == ([1] if case.layers == (1,) else [0])
            assert stats.speculation == "on" and stats.draft_steps > 0
        if case.layers == "all":
            assert stats.draft_layers == []


# ---- lossless properties of more than one run ---------------------------------------------------------------


SELF_ACCEPTS = [Case("core", family, "video", "self", method, 0.0, layers="all") for family in CORE_FAMILIES
                for method in ("sd", "specvlm")] + [
    pytest.param(Case("families", family, "video", "self", "specvlm", 0.0, layers="all"),
                 marks=[pytest.mark.slow] if family.endswith("_moe") else [])  # the tiny MoE decoders are slower
    for family in FAMILIES if family != "glm46v"
]  # fmt: skip


@pytest.mark.parametrize("case", SELF_ACCEPTS, ids=lambda case: case.id)
def test_self_draft_without_pruning_accepts_everything(engines, references, case):
    """The self-draft's cache is the target's own prefill cache (DeepStack already applied): with every visual token
    kept and every layer it drafts exactly the target's tokens, so every chain is accepted in full."""
    engine, _, expected, result = _decode(engines, references, case)
    assert result.token_ids == expected
    gamma = engine.config.num_draft_tokens
    lengths = result.stats.accepted_lengths
    assert lengths[:-1] == [gamma + 1] * (len(lengths) - 1)
    assert 1 <= lengths[-1] <= gamma + 1
    assert result.stats.draft_kv_tokens == result.stats.target_kv_tokens


@pytest.fixture(scope="module")
def noisy_drafts(checkpoints, tmp_path_factory):
    """{family: path}: a draft that is the target plus noise, so acceptance lengths are mixed and every
    rollback path runs."""
    out = {}
    for family in CORE_FAMILIES:
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


def _core_reference(references, family):
    return references["core", family, "video"]


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_partially_agreeing_draft_is_lossless(checkpoints, references, noisy_drafts, family):
    inputs, expected = _core_reference(references, family)
    engine = eos_free_engine(checkpoints[family]["target"], draft=noisy_drafts[family], drop_rate=0.5)
    for method in ("sd", "specvlm"):
        result = engine.generate(inputs=inputs, max_new_tokens=len(expected), method=method)
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
@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_compiled_decode_steps_are_lossless(checkpoints, references, noisy_drafts, family):
    """compile="draft" compiles only the draft's steps, compile="all" the target's too; chain and tree,
    with mixed acceptance lengths, the output stays the stock greedy output."""
    inputs, expected = _core_reference(references, family)
    max_new = len(expected)
    engine = eos_free_engine(checkpoints[family]["target"], draft=noisy_drafts[family], drop_rate=0.5)
    result = engine.generate(inputs=inputs, max_new_tokens=max_new, method="specvlm", compile="draft")
    assert result.token_ids == expected
    assert engine.draft_adapter._compiled is not None and engine.target_adapter._compiled is None
    for method, tree in (("ar", "chain"), ("specvlm", "chain"), ("specvlm", "specvlm-25")):
        result = engine.generate(inputs=inputs, max_new_tokens=max_new, method=method, tree=tree, compile="all")
        assert result.token_ids == expected, (method, tree)
        if method != "ar":
            assert len(set(result.stats.accepted_lengths)) > 1, result.stats.accepted_lengths
    assert engine.target_adapter._compiled is not None


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_compact_positions_stay_lossless(engines, references, family):
    inputs, expected = _core_reference(references, family)
    engine = engines["core", family, "separate"]
    result = engine.generate(inputs=inputs, max_new_tokens=len(expected), method="specvlm", positions="compact")
    assert result.token_ids == expected


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_stops_at_eos_like_stock(checkpoints, references, stock_reference, family):
    """Make a token the target emits mid-sequence the EOS: both must stop right after it."""
    inputs, expected = _core_reference(references, family)
    eos = expected[7]
    stop = expected.index(eos) + 1
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"], draft=None, self_draft_layers="all")
    engine.target.generation_config.eos_token_id = eos
    ref = stock_reference(checkpoints[family]["target"], inputs, len(expected), eos_token_id=eos, pad_token_id=eos)
    assert ref == expected[:stop]
    for method in ("ar", "sd", "specvlm"):
        result = engine.generate(inputs=inputs, max_new_tokens=len(expected), method=method, drop_rate=0.5)
        assert result.token_ids == ref
        assert result.stats.stopped_by == "eos"


def test_video_file_through_decord_and_pyav_matches_stock(checkpoints, engines, stock_reference, video_file):
    engine = engines["core", "qwen2_5_vl", "separate"]
    inputs = engine.build_inputs(video_file, "What moves?", num_frames=8)
    ref = stock_reference(checkpoints["qwen2_5_vl"]["target"], inputs, 24)
    result = engine.generate(video=video_file, prompt="What moves?", num_frames=8, max_new_tokens=24)
    assert result.token_ids == ref
    assert result.stats.video_tokens > 0 and 0 < result.stats.kept_video_tokens < result.stats.video_tokens


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_decoding_uses_no_deprecated_transformers_argument(engines, references, family):
    """The loop calls the stock text model with the argument names the installed transformers declares:
    a deprecated name would warn on every forward (and stop working when it is removed)."""
    inputs, expected = _core_reference(references, family)
    engine = engines["core", family, "separate"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = engine.generate(inputs=inputs, max_new_tokens=8, method="specvlm", drop_rate=0.5)
    assert result.token_ids == expected[:8]
    deprecated = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert deprecated == []


@pytest.mark.parametrize("family", CORE_FAMILIES)
def test_draft_keep_is_what_the_draft_is_prefilled_with(engines, references, family):
    """``draft_keep`` returns every text token plus the video tokens the pruning keeps: all of the
    prompt for "sd", the count ``generate`` reports for "specvlm"; ar has no draft to keep for."""
    inputs, _ = _core_reference(references, family)
    engine = engines["core", family, "separate"]
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
