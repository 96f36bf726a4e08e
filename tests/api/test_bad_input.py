"""Every bad input, to the API and on the command line, gives a clear error: its type and a message naming the
bad value and what is allowed, before any prefill (and before any weights load wherever that can be known).
Nothing silently continues: on the command line exit code 2 with one ``specvlm: error:`` line (argparse's own
usage + one error line for a malformed flag value), never a traceback; and an error in one call leaves the engine
usable: the same engine then produces exactly the tokens it produced before the error.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

import specvlm_pruning as pruning
from specvlm_eval import bench
from specvlm import SpecVLM, VideoDecodeError
from specvlm import engine as engine_module
from specvlm import loading as loading_module
from specvlm.cli import main as cli_main
from cli_helpers import _argparse_error, _error_line, _generate_argv  # noqa: F401
from specvlm.config import COMPILE_MODES, METHODS, POSITION_MODES
from specvlm.decoding.drafters import model as decoding
from specvlm.models import family_of
from specvlm.zoo.tiny import TinySpec, build_tiny, save_tiny
from tiny_pairs import CORE_FAMILIES as FAMILIES

PROMPT = "Describe the video."
SUPPORTED = ("llava_onevision", "qwen2_5_vl")


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def engine_and_reference(checkpoints, frames):
    """llava_onevision target + separate draft (module-scoped: errors must not corrupt it), and the
    result of a valid call made right after loading, before any error test used the engine. The draft
    starts with the first token (``lazy_draft_after=0``) so that the short answers here exercise it."""
    paths = checkpoints["llava_onevision"]
    engine = SpecVLM.from_pretrained(paths["target"], draft=paths["draft"], lazy_draft_after=0)
    return engine, engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, method="specvlm")


@pytest.fixture(scope="module")
def engine(engine_and_reference):
    return engine_and_reference[0]


@pytest.fixture(scope="module")
def reference(engine_and_reference):
    return engine_and_reference[1]


@pytest.fixture(scope="module")
def self_engine(checkpoints):
    """llava_onevision target drafting for itself, from the first token."""
    return SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], draft=None, lazy_draft_after=0)


@pytest.fixture
def corrupt_mp4(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    return path


def _tiny_llava_model():
    """A tiny stock ``LlavaForConditionalGeneration`` (model_type "llava"): an unsupported family."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
        ),
        text_config=Qwen2Config(
            vocab_size=300,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        ),
        image_token_id=299,
    )
    return LlavaForConditionalGeneration(config).eval()


def _assert_lists_supported(message: str) -> None:
    for family in SUPPORTED:
        assert family in message, message




@pytest.fixture
def no_prefill(monkeypatch):
    """Fail the test if the target's prefill starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("the prefill ran before the bad input was reported")

    monkeypatch.setattr(engine_module, "prefill_target", refuse)




def _cli(target, video, *extra):
    return cli_main(_generate_argv(target, video, *extra))


# ------------------------------------------------------------------------------------------ video


def test_missing_video_file(engine, tmp_path):
    missing = tmp_path / "missing.mp4"
    for call in (
        lambda: engine.generate(video=str(missing), prompt=PROMPT, max_new_tokens=2),
        lambda: engine.build_inputs(str(missing), PROMPT),
        lambda: engine.build_inputs(missing, PROMPT),  # a Path works like a str
    ):
        with pytest.raises(VideoDecodeError) as info:
            call()
        assert str(missing) in str(info.value)
        assert "does not exist" in str(info.value)
        assert info.value.path == str(missing)


def test_corrupt_video_file(engine, corrupt_mp4):
    for call in (
        lambda: engine.generate(video=str(corrupt_mp4), prompt=PROMPT, max_new_tokens=2),
        lambda: engine.build_inputs(str(corrupt_mp4), PROMPT),
    ):
        with pytest.raises(VideoDecodeError) as info:
            call()
        message = str(info.value)
        assert str(corrupt_mp4) in message
        assert "cannot be decoded" in message or "no decodable frames" in message, message


def test_video_decode_error_is_a_value_error():
    # callers that catch ValueError (the CLI does) also catch video errors
    assert issubclass(VideoDecodeError, ValueError)


def test_zero_frames(engine):
    empty = np.zeros((0, 64, 64, 3), np.uint8)
    for call in (
        lambda: engine.generate(video=empty, prompt=PROMPT, max_new_tokens=2),
        lambda: engine.build_inputs(empty, PROMPT),
        lambda: engine.build_inputs([], PROMPT),
    ):
        with pytest.raises(VideoDecodeError, match="zero frames") as info:
            call()
        assert "<frames array>" in str(info.value)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int16])  # uint16 is scaled: tests/inputs/test_images.py
def test_wrong_dtype_frames(engine, frames, dtype):
    bad = frames.astype(dtype)
    for call in (
        lambda: engine.generate(video=bad, prompt=PROMPT, max_new_tokens=2),
        lambda: engine.build_inputs(bad, PROMPT),
    ):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert np.dtype(dtype).name in message and "uint8" in message, message


@pytest.mark.parametrize(
    "shape,needle",
    [((8, 64, 64), "(T, H, W, 3)"), ((8, 64, 64, 4), "(T, H, W, 3)"), ((8, 0, 64, 3), "height and width")],
)
def test_wrong_shape_frames(engine, shape, needle):
    bad = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError) as info:
        engine.build_inputs(bad, PROMPT)
    assert str(shape) in str(info.value) and needle in str(info.value)


def test_video_of_wrong_type(engine):
    with pytest.raises(TypeError, match="video must be a path.*got int"):
        engine.build_inputs(123, PROMPT)


@pytest.mark.parametrize("prompt", ["", "   ", None, 5])
def test_bad_prompt(engine, frames, prompt):
    with pytest.raises(ValueError, match="prompt must be a non-empty string") as info:
        engine.build_inputs(frames, prompt)
    assert repr(prompt) in str(info.value)


def test_generate_needs_video_and_prompt_or_inputs(engine, frames):
    with pytest.raises(ValueError, match=r"pass `video` and / or `images` with `prompt`, `messages` \(a conversation\), or `inputs`"):
        engine.generate(video=frames, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"pass `video` and / or `images` with `prompt`, `messages` \(a conversation\), or `inputs`"):
        engine.generate(prompt=PROMPT, max_new_tokens=2)


# ------------------------------------------------------------------------------- decoding settings


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf"), True, "0.5"])
def test_bad_drop_rate_at_load(checkpoints, bad):
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], drop_rate=bad)
    message = str(info.value)
    assert "drop_rate" in message and "[0, 1)" in message, message
    assert repr(bad) in message, message


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
@pytest.mark.parametrize("method", METHODS)
def test_bad_drop_rate_per_call(engine, frames, bad, method):
    before = engine.config
    with pytest.raises(ValueError) as info:
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, method=method, drop_rate=bad)
    message = str(info.value)
    assert "drop_rate" in message and "[0, 1)" in message and repr(bad) in message, message
    assert engine.config == before  # a rejected override leaves the engine's settings alone


def test_unknown_pruning_strategy(checkpoints, engine, frames):
    available = pruning.available()
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], pruning="bogus")
    assert "'bogus'" in str(info.value) and ", ".join(map(repr, available)) in str(info.value)
    with pytest.raises(ValueError) as info:
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, pruning="bogus")
    assert "'bogus'" in str(info.value) and ", ".join(map(repr, available)) in str(info.value)


def test_unknown_method(engine, frames):
    with pytest.raises(ValueError) as info:
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, method="beam")
    message = str(info.value)
    assert "'beam'" in message
    for method in METHODS:
        assert repr(method) in message, message


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_num_draft_tokens(checkpoints, engine, frames, bad):
    with pytest.raises(ValueError, match=r"num_draft_tokens=.* must be an int >= 1") as info:
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], num_draft_tokens=bad)
    assert f"num_draft_tokens={bad!r}" in str(info.value)
    with pytest.raises(ValueError, match=r"must be an int >= 1") as info:
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, num_draft_tokens=bad)
    assert f"num_draft_tokens={bad!r}" in str(info.value)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])  # None: not given (the generation config's, as stock)
def test_bad_max_new_tokens(engine, frames, bad):
    with pytest.raises(ValueError, match=r"must be an int >= 1") as info:
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=bad)
    assert f"max_new_tokens={bad!r}" in str(info.value)


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan")])
def test_bad_stage1_mass(checkpoints, engine, frames, bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]") as info:
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], stage1_mass=bad)
    assert f"stage1_mass={bad!r}" in str(info.value)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, stage1_mass=bad)


@pytest.mark.parametrize("name, bad, allowed", [("positions", "relative", POSITION_MODES), ("compile", "yes", COMPILE_MODES)])
def test_unknown_mode_setting(checkpoints, engine, frames, name, bad, allowed):
    """A mode outside its allowed set is named, with every allowed mode, at load and per call."""
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], **{name: bad})
    message = str(info.value)
    assert f"{name}={bad!r}" in message and all(repr(m) in message for m in allowed), message
    with pytest.raises(ValueError, match=f"{name}={bad!r}"):
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, **{name: bad})


@pytest.mark.parametrize("method", ["sd", "specvlm"])
def test_compact_positions_need_a_separate_draft(self_engine, frames, method):
    with pytest.raises(ValueError) as info:
        self_engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, method=method, positions="compact")
    message = str(info.value)
    assert "positions='compact'" in message and "separate draft" in message, message


def test_compact_positions_with_self_draft_rejected_at_load(checkpoints):
    with pytest.raises(ValueError, match="positions='compact'.*separate draft"):
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], draft=None, positions="compact")


def test_compile_without_a_compiler_fails_before_any_work(engine, frames, monkeypatch):
    import torch._inductor.cpp_builder as cpp_builder

    def missing():
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    calls = []
    monkeypatch.setattr(engine, "_prefill_target", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError) as info:
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, compile="draft")
    message = str(info.value)
    assert "compile='draft'" in message and "C++ compiler" in message and "compile='off'" in message, message
    assert calls == []


def test_unknown_override_is_rejected(engine, frames):
    with pytest.raises(TypeError, match="dropp_rate"):
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, dropp_rate=0.5)


def test_prompt_without_text_after_video_cannot_be_scored(engine, frames):
    """Processed inputs cut right after the last video token: the verifier has no text query to score with."""
    inputs = engine.build_inputs(frames, PROMPT)
    ids = inputs["input_ids"][0]
    last_video = int((ids == engine.target.config.video_token_id).nonzero().max())
    cut = dict(inputs)
    cut["input_ids"] = inputs["input_ids"][:, : last_video + 1]
    cut["attention_mask"] = inputs["attention_mask"][:, : last_video + 1]
    with pytest.raises(ValueError, match="no text after the video"):
        engine.generate(inputs=cut, max_new_tokens=2, method="specvlm", pruning="specvlm")
    # strategies that need no scores still work on such a prompt
    result = engine.generate(inputs=cut, max_new_tokens=2, method="specvlm", pruning="uniform")
    assert 1 <= len(result.token_ids) <= 2


# -------------------------------------------------------------------------- settings of wrong type


@pytest.mark.parametrize(
    ("name", "bad", "needle"),
    [("seed", "a", "seed='a' must be an int"), ("stage1_mass", "0.4", "stage1_mass='0.4' must be a number")],
)
def test_string_settings_are_refused_at_load_and_per_call(pair, engine, frames, name, bad, needle, no_prefill):
    with pytest.raises(ValueError, match=needle):
        SpecVLM.from_pretrained(pair["target"], **{name: bad})
    before = engine.config
    with pytest.raises(ValueError, match=needle):
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=2, **{name: bad})
    assert engine.config == before


def test_cli_string_settings(pair, video_file, capsys, no_loading):
    error = _argparse_error(_generate_argv(pair["target"], video_file, "--seed", "a"), capsys)
    assert "argument --seed: seed='a' must be an int" in error
    error = _argparse_error(_generate_argv(pair["target"], video_file, "--stage1-mass", "much"), capsys)
    assert "argument --stage1-mass: stage1_mass='much' must be a number" in error


# ------------------------------------------------------------------------------------------- trees


@pytest.mark.parametrize("tree", [[1, 2], [[0], 1], [["a"]], 5])
def test_a_tree_that_is_not_a_list_of_paths(pair, tree):
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(pair["target"], draft=pair["draft"], tree=tree)
    message = str(info.value)
    assert message.startswith("tree=") and "a list of paths" in message and "[[0], [1], [0, 0]]" in message, message


def test_a_json_tree_given_as_text_to_the_api(engine):
    with pytest.raises(ValueError) as info:
        engine.generate(video=np.zeros((2, 8, 8, 3), np.uint8), prompt=PROMPT, tree="[1,2]")
    message = str(info.value)
    assert "unknown tree '[1,2]'" in message and "'chain'" in message and "a list of paths" in message, message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [("[1,2]", ("tree=[1, 2] is not a list of paths", "[[0], [1], [0, 0]]")),
     ("[[0],", ("is not valid JSON paths", "[[0],[1],[0,0]]")),
     ("[]", ("a tree needs at least one path", "[[0], [1], [0, 0]]")),
     ("[[0,1]]", ("path [0, 1] needs its parent [0]",)),
     ("star", ("unknown tree 'star'", "'reference-25'", "[[0], [1], [0, 0]]"))],
)  # fmt: skip
def test_cli_bad_tree_names_the_flag_before_loading(pair, video_file, text, fragments, capsys, no_loading):
    error = _argparse_error(_generate_argv(pair["target"], video_file, "--tree", text), capsys)
    assert "argument --tree:" in error, error
    for fragment in fragments:
        assert fragment in error, error


def _wide_tree(siblings: int, depth: int = 1):
    """``siblings`` children under one node at ``depth`` (a chain of best children above it)."""
    return [[0] * d for d in range(1, depth)] + [[0] * (depth - 1) + [r] for r in range(siblings)]


@pytest.mark.parametrize("depth", [1, 3])
def test_more_siblings_than_the_vocabulary(engine, pair, frames, depth, no_prefill):
    vocab = engine.shared_vocab
    too_wide = _wide_tree(vocab + 1, depth)
    with pytest.raises(ValueError) as info:
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, tree=too_wide)
    message = str(info.value)
    assert f"{vocab + 1} siblings" in message and f"vocabulary's {vocab} tokens" in message, message
    with pytest.raises(ValueError, match=f"{vocab + 1} siblings .* vocabulary's {vocab} tokens"):
        SpecVLM.from_pretrained(pair["target"], draft=pair["draft"], tree=too_wide)
    # as many siblings as the vocabulary has tokens pass the checks (and reach the prefill)
    with pytest.raises(AssertionError, match="the prefill ran"):
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, tree=_wide_tree(vocab, depth))


def test_cli_more_siblings_than_the_vocabulary(pair, video_file, capsys):
    wide = json.dumps(_wide_tree(400))  # the tiny checkpoints have 261 tokens
    assert cli_main(_generate_argv(pair["target"], video_file, "--draft", str(pair["draft"]), "--tree", wide)) == 2
    error = _error_line(capsys.readouterr().err)
    assert "400 siblings" in error and "vocabulary's 261 tokens" in error, error


# ------------------------------------------------------------------------------ model families


def test_unsupported_family_is_named_with_the_supported_ones(checkpoints):
    model = _tiny_llava_model()
    with pytest.raises(ValueError) as info:
        family_of(model.config)
    message = str(info.value)
    assert "'llava'" in message
    _assert_lists_supported(message)

    processor = AutoProcessor.from_pretrained(checkpoints["llava_onevision"]["target"])
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(model, processor=processor)
    assert "'llava'" in str(info.value)
    _assert_lists_supported(str(info.value))
    # as a draft too
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], draft=model)
    assert "'llava'" in str(info.value)
    _assert_lists_supported(str(info.value))


def test_loaded_model_needs_a_processor(checkpoints):
    model, _ = build_tiny(TinySpec(family="llava_onevision"))
    with pytest.raises(ValueError, match="pass `processor=`"):
        SpecVLM.from_pretrained(model)


def test_non_full_attention_layers_are_rejected():
    model, processor = build_tiny(TinySpec(family="qwen2_5_vl", num_layers=2))
    model.config.text_config.layer_types = ["sliding_attention", "full_attention"]
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(model, processor=processor)
    message = str(info.value)
    assert "sliding_attention" in message and "handles ['full_attention']" in message, message


@pytest.mark.parametrize("target_family,draft_family", [("llava_onevision", "qwen2_5_vl"), ("qwen2_5_vl", "llava_onevision")])
def test_family_mismatch(checkpoints, target_family, draft_family):
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(checkpoints[target_family]["target"], draft=checkpoints[draft_family]["draft"])
    message = str(info.value)
    assert f"target family {target_family!r}" in message and f"draft family {draft_family!r}" in message, message
    assert "differ" in message


def test_video_token_id_mismatch(checkpoints):
    draft = AutoModelForImageTextToText.from_pretrained(checkpoints["llava_onevision"]["draft"])
    target_id = draft.config.video_token_id
    draft.config.video_token_id = target_id - 1
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], draft=draft)
    message = str(info.value)
    assert "video token ids differ" in message
    assert f"target {target_id}" in message and f"draft {target_id - 1}" in message, message


@pytest.mark.parametrize("family", FAMILIES)
def test_draft_vocabulary_mismatch(checkpoints, tmp_path, family):
    draft_dir = save_tiny(TinySpec(family=family, seed=1, num_layers=1), tmp_path / "draft")
    tokenizer = AutoTokenizer.from_pretrained(draft_dir)
    size = len(tokenizer)
    assert tokenizer.add_tokens(["<only_in_draft>"]) == 1
    tokenizer.save_pretrained(draft_dir)
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(checkpoints[family]["target"], draft=draft_dir)
    message = str(info.value)
    assert "vocabularies differ" in message, message
    assert f"({size} vs {size + 1} tokens" in message, message
    assert "1 only in the draft's" in message and "0 entries only in the target's" in message, message


def test_draft_vocabulary_with_a_different_token_is_rejected(checkpoints, tmp_path):
    """Same size, one entry different: the mapping, not just the count, is compared."""
    draft_dir = save_tiny(TinySpec(family="llava_onevision", seed=1, num_layers=1), tmp_path / "draft")
    target_tok = AutoTokenizer.from_pretrained(checkpoints["llava_onevision"]["target"])
    # the draft's tokenizer gets one extra token; the target's processor gets another one
    draft_tok = AutoTokenizer.from_pretrained(draft_dir)
    draft_tok.add_tokens(["<draft_word>"])
    draft_tok.save_pretrained(draft_dir)
    target_tok.add_tokens(["<target_word>"])
    processor = AutoProcessor.from_pretrained(checkpoints["llava_onevision"]["target"])
    processor.tokenizer = target_tok
    target = AutoModelForImageTextToText.from_pretrained(checkpoints["llava_onevision"]["target"])
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(target, draft=draft_dir, processor=processor)
    message = str(info.value)
    n = len(target_tok)
    assert f"vocabularies differ ({n} vs {n} tokens; 1 entries only in the target's, 1 only in the draft's)" in message


def test_draft_without_tokenizer_files_is_reported(checkpoints, tmp_path, caplog):
    """A draft checkpoint with weights only loads, but says loudly that vocabularies were not compared."""
    draft = AutoModelForImageTextToText.from_pretrained(checkpoints["llava_onevision"]["draft"])
    draft.save_pretrained(tmp_path / "weights_only")
    with caplog.at_level("WARNING", logger="specvlm.loading"):
        engine = SpecVLM.from_pretrained(checkpoints["llava_onevision"]["target"], draft=tmp_path / "weights_only")
    assert engine.draft is not None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "specvlm.loading"]
    assert any(str(tmp_path / "weights_only") in m and "not compared" in m for m in warnings), warnings


@pytest.mark.parametrize(
    "family,change",
    [("llava_onevision", {"image_size": 32}), ("llava_onevision", {"patch_size": 16}), ("qwen2_5_vl", {"patch_size": 4})],
)
def test_draft_video_layout_mismatch(checkpoints, tmp_path, family, change):
    draft_dir = save_tiny(TinySpec(family=family, seed=1, num_layers=1, **change), tmp_path / "draft")
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(checkpoints[family]["target"], draft=draft_dir)
    message = str(info.value)
    assert "video-token layouts differ" in message, message
    (key, value), = change.items()
    assert f"'{key}': {value}" in message, message  # the draft's differing setting is shown


def test_matching_pair_loads(checkpoints):
    """The mismatch checks are not over-eager: the session's own pair loads."""
    for family in FAMILIES:
        paths = checkpoints[family]
        engine = SpecVLM.from_pretrained(paths["target"], draft=paths["draft"])
        assert engine.draft is not None and family_of(engine.draft.config) == family


# -------------------------------------------------------------------- unreadable model.safetensors


def _corrupt_copy(src, dst, kind: str):
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    data = weights.read_bytes()
    if kind == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        weights.write_bytes(np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    else:  # a few bytes: not even a header length
        weights.write_bytes(b"\x01\x02")
    return dst, weights


@pytest.mark.parametrize("kind", ["truncated", "garbage", "tiny"])
@pytest.mark.parametrize("role", ["target", "draft"])
def test_unreadable_safetensors_is_named_before_loading(pair, tmp_path, kind, role, monkeypatch, capsys):
    bad, weights = _corrupt_copy(pair[role], tmp_path / role, kind)
    target, draft = (bad, pair["draft"]) if role == "target" else (pair["target"], bad)
    with monkeypatch.context() as m:  # the file is checked before any weights load
        m.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
        with pytest.raises(ValueError) as info:
            SpecVLM.from_pretrained(str(target), draft=str(draft))
    message = str(info.value)
    assert str(weights) in message and "not a readable safetensors file" in message and role in message, message
    assert cli_main(_generate_argv(target, "clip.mp4", "--draft", str(draft))) == 2
    error = _error_line(capsys.readouterr().err)
    assert str(weights) in error and "not a readable safetensors file" in error


def test_unreadable_safetensors_found_while_loading_names_the_checkpoint(pair, tmp_path):
    """A hub checkpoint is only read once downloaded: the loader's own error names the checkpoint."""
    bad, _ = _corrupt_copy(pair["draft"], tmp_path / "draft", "garbage")
    with pytest.raises(ValueError, match="draft checkpoint .*draft.* not a readable safetensors file"):
        loading_module.load_model(str(bad), None, None, "draft")


# ------------------------------------------------------------------------- a GPU that is not there


# ids: conftest skips tests with a keyword "cuda" (those need a GPU; these need none)
@pytest.mark.parametrize("device_map", ["cuda", "cuda:0", 0, torch.device("cuda", 0), {"": "cuda:0"}],
                         ids=["name", "name:index", "index", "torch.device", "dict"])  # fmt: skip
def test_cuda_device_map_without_a_gpu(pair, device_map, monkeypatch, no_loading):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(pair["target"], device_map=device_map)
    message = str(info.value)
    assert f"device_map={device_map!r}" in message and "no CUDA device is available" in message, message
    assert "'cpu'" in message and "'auto'" in message, message


def test_cuda_device_map_beyond_the_gpus_there_are(pair, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device_map='cuda:3' names CUDA device 3, but this machine has 1"):
        SpecVLM.from_pretrained(pair["target"], device_map="cuda:3")


@pytest.mark.parametrize("device_map", ["gpu", "cuda:x", -1, 1.5])
def test_malformed_device_map(pair, device_map):
    with pytest.raises(ValueError) as info:
        SpecVLM.from_pretrained(pair["target"], device_map=device_map)
    message = str(info.value)
    assert f"device_map={device_map!r}" in message and "'auto'" in message and "'cuda:N'" in message, message


@pytest.mark.parametrize("value", ["cuda", "cuda:0", "0"], ids=["name", "name:index", "index"])
def test_cli_cuda_device_map_without_a_gpu(pair, video_file, value, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    assert cli_main(_generate_argv(pair["target"], video_file, "--device-map", value)) == 2
    error = _error_line(capsys.readouterr().err)
    shown = repr(int(value)) if value.isdigit() else repr(value)
    assert f"device_map={shown}" in error and "no CUDA device is available" in error, error


# ------------------------------------------------------------------------------ context overflow


def test_context_overflow(checkpoints, frames):
    path = checkpoints["llava_onevision"]["target"]
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    engine = SpecVLM.from_pretrained(model, processor=processor, draft=None, num_draft_tokens=5)
    inputs = engine.build_inputs(frames, PROMPT)
    length = inputs["input_ids"].shape[1]
    limit = length + 10
    model.config.text_config.max_position_embeddings = limit
    assert engine.target_adapter.max_positions == limit
    for method in METHODS:
        with pytest.raises(ValueError) as info:
            engine.generate(inputs=inputs, max_new_tokens=20, method=method)
        message = str(info.value)
        assert "context overflow" in message
        assert f"max_position_embeddings={limit}" in message, message
        assert "max_new_tokens=20" in message and f"position {length + 20 - 2}" in message, message
        assert f"position {length - 1}" in message, message  # where the prompt ends
    # exactly at the limit is allowed (the last position fed is limit - 1), and the same engine still works
    engine.target.generation_config.eos_token_id = None
    result = engine.generate(inputs=inputs, max_new_tokens=limit - length + 1, method="sd")
    assert len(result.token_ids) == limit - length + 1
    with pytest.raises(ValueError, match="context overflow"):
        engine.generate(inputs=inputs, max_new_tokens=limit - length + 2, method="sd")


def test_context_overflow_is_found_before_the_prefill(checkpoints, frames, monkeypatch):
    engine = SpecVLM.from_pretrained(checkpoints["qwen2_5_vl"]["target"])
    inputs = engine.build_inputs(frames, PROMPT)
    calls = []
    monkeypatch.setattr(engine, "_prefill_target", lambda *a, **k: calls.append(a))
    limit = engine.target_adapter.max_positions
    with pytest.raises(ValueError, match="context overflow"):
        engine.generate(inputs=inputs, max_new_tokens=limit + 1)
    assert not calls


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_a_prompt_holding_the_video_placeholder_is_refused(checkpoints, frames, family):
    engine = SpecVLM.from_pretrained(checkpoints[family]["target"])
    token = engine.processor.video_token
    with pytest.raises(ValueError, match=f"the prompt contains the processor's video token {re.escape(repr(token))}"):
        engine.generate(video=frames, prompt=f"What happens in {token}?", max_new_tokens=2)
    conversation = [{"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": token}]}]
    with pytest.raises(ValueError, match="video token"):
        engine.generate(messages=conversation, max_new_tokens=2)


def test_inputs_without_the_videos_pixels_are_refused(engine, frames):
    inputs = engine.build_inputs(frames, PROMPT)
    del inputs["pixel_values_videos"]
    with pytest.raises(ValueError, match="inputs has no 'pixel_values_videos'"):
        engine.generate(inputs=inputs, max_new_tokens=2)


# --------------------------------------------------------------------------------- bench arguments


@pytest.mark.parametrize("extra", [[], ["--target", "t", "--draft", "d"]])
def test_bench_bad_drop_rate_is_refused_before_any_model_loads(extra, capsys, no_loading, monkeypatch):
    monkeypatch.setattr(bench, "bench_pair", lambda *a, **k: pytest.fail("bench ran"))
    assert cli_main(["bench", "--drop-rate", "1.5", *extra]) == 2
    error = _error_line(capsys.readouterr().err)
    assert "drop_rate" in error and "1.5" in error and "[0, 1)" in error, error


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [(["--repeats", "0"], "argument --repeats: 0 must be an integer >= 1"),
     (["--max-new-tokens", "-3"], "argument --max-new-tokens: -3 must be an integer >= 1"),
     (["--min-video-tokens", "many"], "argument --min-video-tokens: 'many' is not an integer")],
)  # fmt: skip
def test_bench_bad_counts_are_refused_by_the_parser(flags, fragment, capsys, no_loading):
    assert fragment in _argparse_error(["bench", *flags], capsys)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [(["--keep", "0"], "--keep 0.0 must be in (0, 1]"), (["--tau", "0.5"], "--tau 0.5 must be a number >= 1"),
     (["--target-shape", "qwen9"], "--target-shape 'qwen9' is not a known shape")],
)  # fmt: skip
def test_bench_cuda_settings_are_checked_first(flags, fragment, capsys, monkeypatch):
    monkeypatch.setattr(bench, "bench_shapes", lambda *a, **k: pytest.fail("bench ran"))
    assert cli_main(["bench", "--device", "cuda", *flags]) == 2
    assert fragment in _error_line(capsys.readouterr().err)


# ------------------------------------------------- the command line: one line, whatever goes wrong


def test_cli_missing_video(checkpoints, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    assert _cli(checkpoints["llava_onevision"]["target"], missing) == 2
    captured = capsys.readouterr()
    error = _error_line(captured.err)
    assert str(missing) in error and "does not exist" in error
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_cli_corrupt_video(checkpoints, corrupt_mp4, capsys):
    assert _cli(checkpoints["llava_onevision"]["target"], corrupt_mp4) == 2
    captured = capsys.readouterr()
    assert str(corrupt_mp4) in _error_line(captured.err) and captured.out == ""


def test_cli_bad_settings(checkpoints, video_file, capsys):
    target = checkpoints["llava_onevision"]["target"]
    assert _cli(target, video_file, "--drop-rate", "1.5") == 2
    err = _error_line(capsys.readouterr().err)
    assert "drop_rate" in err and "1.5" in err and "[0, 1)" in err
    with pytest.raises(SystemExit) as info:  # argparse checks the choices (exit code 2, choices listed)
        _cli(target, video_file, "--pruning", "bogus")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "'bogus'" in err and "uniform" in err
    assert _cli(target, video_file, "--num-draft-tokens", "0") == 2
    assert "num_draft_tokens=0" in _error_line(capsys.readouterr().err)
    assert _cli(target, video_file, "--max-new-tokens", "0") == 2  # the later flag wins
    assert "max_new_tokens=0" in _error_line(capsys.readouterr().err)
    # argparse itself rejects an unknown method (exit code 2, choices listed)
    with pytest.raises(SystemExit) as info:
        _cli(target, video_file, "--method", "beam")
    assert info.value.code == 2
    assert "beam" in capsys.readouterr().err


def test_cli_success_for_contrast(checkpoints, video_file, capsys):
    paths = checkpoints["llava_onevision"]
    assert _cli(paths["target"], video_file, "--draft", str(paths["draft"]), "--json", "--num-frames", "4") == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert 1 <= len(payload["token_ids"]) <= 2 and payload["stats"]["new_tokens"] == len(payload["token_ids"])
    assert "specvlm: error" not in captured.err


def test_argparse_errors_are_one_line(pair, video_file, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(_generate_argv(pair["target"], video_file, "--max-frames", "0"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("specvlm generate: error: argument --max-frames: 0 must be an integer >= 1")
    with pytest.raises(SystemExit):
        cli_main(["demo", "--num-frames", "0"])
    assert capsys.readouterr().err == "specvlm demo: error: argument --num-frames: 0 must be an integer >= 1 (see specvlm demo -h)\n"


@pytest.mark.parametrize("flag", ["--prompt", "--system"])
def test_text_that_is_not_utf8_is_named(pair, video_file, flag, capsys, no_loading):
    """Bytes that are not UTF-8 reach Python as lone surrogates (os.fsdecode); the tokenizer used to end
    in a raw TypeError traceback."""
    bad = "describe " + os.fsdecode(b"\xff\xfe") + " it"
    argv = _generate_argv(pair["target"], video_file)
    argv = [bad if (a == PROMPT and flag == "--prompt") else a for a in argv] + (["--system", bad] if flag == "--system" else [])
    assert cli_main(argv) == 2
    error = _error_line(capsys.readouterr().err)
    assert f"{flag} holds text that is not UTF-8" in error and r"b'\xff' at byte offset 9" in error


def test_a_checkpoint_path_that_is_not_utf8_is_named(pair, video_file, tmp_path, capsys, no_loading):
    """safetensors opens UTF-8 paths only: said before loading, instead of 'truncated or corrupt'."""
    odd = tmp_path / os.fsdecode(b"target-\xff")
    shutil.copytree(pair["target"], odd)
    assert cli_main(_generate_argv(odd, video_file)) == 2
    error = _error_line(capsys.readouterr().err)
    assert "--target" in error and "not valid UTF-8" in error and "rename the checkpoint directory" in error


def test_output_files_are_checked_writable_before_any_work(pair, video_file, tmp_path, capsys, no_loading):
    """Checked by opening the file (so it holds for root too); the message names the flag and the path."""
    under_a_file = tmp_path / "a_file"
    under_a_file.write_text("x")
    for dest, reason in ((under_a_file / "out.json", "is a file, not a directory"),
                         ("/proc/specvlm-out.json", "cannot be written"), ("", "is an empty path")):  # fmt: skip
        assert cli_main(_generate_argv(pair["target"], video_file, "--json", str(dest))) == 2
        error = _error_line(capsys.readouterr().err)
        assert f"--json {str(dest)!r}" in error and reason in error, error
    fresh = tmp_path / "fresh.json"
    with pytest.raises(AssertionError, match="a model was loaded"):  # the check passes and leaves nothing behind
        cli_main(_generate_argv(pair["target"], video_file, "--json", str(fresh)))
    assert not fresh.exists()


def test_ctrl_c_is_one_line_and_exit_130(pair, video_file, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SpecVLM, "generate", interrupted)
    assert cli_main(_generate_argv(pair["target"], video_file)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("specvlm:")] == [
        "specvlm: interrupted (Ctrl-C); generate stopped"
    ]


# ---------------------------------------------------------------- errors do not corrupt the engine


def test_engine_survives_errors(engine, self_engine, frames, corrupt_mp4, tmp_path, monkeypatch, reference):
    snapshot = (list(reference.token_ids), reference.text, reference.stats.to_dict())
    config = engine.config
    failures = [
        lambda: engine.generate(video=str(tmp_path / "nope.mp4"), prompt=PROMPT, max_new_tokens=6),
        lambda: engine.generate(video=str(corrupt_mp4), prompt=PROMPT, max_new_tokens=6),
        lambda: engine.generate(video=np.zeros((0, 64, 64, 3), np.uint8), prompt=PROMPT, max_new_tokens=6),
        lambda: engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, drop_rate=1.0),
        lambda: engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, method="nope"),
    ]
    for fail in failures:
        with pytest.raises(ValueError):
            fail()

    # a failure in the middle of decoding (after both prefills and some draft steps)
    calls = {"n": 0}
    real = decoding.propose

    def flaky(*args, **kwargs):
        real(*args, **kwargs)  # the draft cache has advanced when the failure hits
        calls["n"] += 1
        raise RuntimeError("injected failure")

    monkeypatch.setattr(decoding, "propose", flaky)
    with pytest.raises(RuntimeError, match="injected failure"):
        engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, method="specvlm")
    assert calls["n"] == 1
    monkeypatch.undo()

    again = engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, method="specvlm")
    assert again.token_ids == reference.token_ids
    assert again.stats.kept_video_tokens == reference.stats.kept_video_tokens
    assert again.stats.accepted_lengths == reference.stats.accepted_lengths
    assert engine.config == config
    # the result computed before the errors is untouched
    assert (reference.token_ids, reference.text) == snapshot[:2]
    assert {k: v for k, v in reference.stats.to_dict().items() if not k.endswith("_s")} == {
        k: v for k, v in snapshot[2].items() if not k.endswith("_s")
    }


def test_self_draft_engine_survives_a_failed_draft_prefill(self_engine, frames):
    before = self_engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, method="sd")
    # refused before any prefill (a self-draft reuses the target's cache, so compact positions cannot apply)
    with pytest.raises(ValueError, match="compact"):
        self_engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, method="sd", positions="compact")
    after = self_engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, method="sd")
    assert after.token_ids == before.token_ids
    assert after.stats.accepted_lengths == before.stats.accepted_lengths
    ar = self_engine.generate(video=frames, prompt=PROMPT, max_new_tokens=6, method="ar")
    assert ar.token_ids == before.token_ids


@pytest.mark.parametrize("kind", ["missing", "file", "not_a_checkpoint"])
@pytest.mark.parametrize("role", ["target", "draft"])
def test_bad_checkpoint_paths_are_named_before_loading(checkpoints, tmp_path, kind, role, capsys):
    bad = {"missing": tmp_path / "nope", "file": tmp_path / "weights.bin", "not_a_checkpoint": tmp_path / "empty"}[kind]
    if kind == "file":
        bad.write_bytes(b"\0")
    elif kind == "not_a_checkpoint":
        bad.mkdir()
    why = {"missing": "does not exist", "file": "is a file", "not_a_checkpoint": "has no config.json"}[kind]
    good = checkpoints["llava_onevision"]["target"]
    target, draft = (bad, good) if role == "target" else (good, bad)
    with pytest.raises(ValueError, match=f"{role} checkpoint .* {why}"):
        SpecVLM.from_pretrained(str(target), draft=str(draft))
    argv = ["generate", "--target", str(target), "--draft", str(draft), "--video", "v.mp4", "--prompt", "p"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and why in err and "Traceback" not in err
