"""One source for decoding settings: DecodingConfig's fields drive the API, the CLI and the eval config."""

from __future__ import annotations

import dataclasses

import pytest

from specvlm_eval.config import METHOD_SETTINGS, EvalConfig
from specvlm import DecodingConfig, SpecVLM
from specvlm import config as settings
from specvlm.cli import BENCH_SETTINGS, _parser, chosen_settings
from specvlm.plan import Plan


def test_every_setting_has_help_methods_and_a_valid_default():
    assert settings.NAMES == tuple(f.name for f in dataclasses.fields(DecodingConfig))
    for f in settings.SETTINGS:
        assert f.metadata["help"].strip(), f.name
        assert set(f.metadata["methods"]) <= set(settings.METHODS), f.name
        assert f.metadata["scope"] in ("method", "model"), f.name
        choices = settings.allowed(f.name)
        assert choices is None or f.default in choices, f.name
    DecodingConfig()  # the defaults validate


def test_settings_are_keyword_only():
    with pytest.raises(TypeError):
        DecodingConfig("uniform")  # positional construction would silently depend on field order


def test_api_docstrings_list_every_setting_with_its_default():
    for fn in (SpecVLM.from_pretrained, SpecVLM.generate):
        for f in settings.SETTINGS:
            assert f"{f.name} = {f.default!r}: {f.metadata['help']}" in fn.__doc__, (fn.__name__, f.name)


def test_unknown_setting_names_the_settings():
    with pytest.raises(TypeError, match=r"unknown setting 'drop_ratio'; the decoding settings are: pruning, drop_rate"):
        DecodingConfig().replace(drop_ratio=0.5)
    with pytest.raises(TypeError, match="unknown setting 'num_beams'"):
        SpecVLM.from_pretrained("/nonexistent/target", num_beams=4)  # refused before anything is loaded


def test_cli_flags_come_from_the_settings():
    parser = _parser()
    args = parser.parse_args(["generate", "--target", "t", "--video", "v", "--prompt", "p"])
    assert chosen_settings(args) == {}  # unset flags leave the config's defaults
    flags = ["--drop-rate", "0.5", "--tree", "[[0],[1]]", "--tree-top-k", "4", "--positions", "compact"]
    args = parser.parse_args(["generate", "--target", "t", "--video", "v", "--prompt", "p", *flags])
    chosen = chosen_settings(args)
    assert chosen == {"drop_rate": 0.5, "tree": [[0], [1]], "tree_top_k": 4, "positions": "compact"}
    assert DecodingConfig(**chosen).tree == ((0,), (1,))
    generate_flags = {a.dest for a in parser._subparsers._group_actions[0].choices["generate"]._actions}
    assert set(settings.NAMES) <= generate_flags
    bench_flags = {a.dest for a in parser._subparsers._group_actions[0].choices["bench"]._actions}
    assert set(BENCH_SETTINGS) <= bench_flags and not (set(settings.NAMES) - set(BENCH_SETTINGS)) & bench_flags


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--compile", "yes"], "invalid choice: 'yes'"),
        (["--tree", "[[0],"], "tree='[[0],' is not valid JSON paths"),
        (["--seed", "a"], "argument --seed: seed='a' must be an int"),
    ],
)
def test_cli_rejects_bad_setting_text(flags, message, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["generate", "--target", "t", "--video", "v", "--prompt", "p", *flags])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_eval_method_entries_accept_the_settings_that_apply_to_them():
    per_method = {f.name for f in settings.SETTINGS if f.metadata["scope"] == "method"}
    assert set(METHOD_SETTINGS["specvlm"]) == per_method
    assert set(METHOD_SETTINGS["sd"]) == {n for n in per_method if "sd" in settings.SETTINGS[settings.NAMES.index(n)].metadata["methods"]}
    assert METHOD_SETTINGS["ar"] == ()
    data = {
        "name": "t",
        "model": {"target": "tiny:llava_onevision"},
        "benchmarks": [{"name": "synthetic"}],
        "methods": ["ar", {"name": "specvlm", "window": "front", "seed": 3, "drop_rate": 0.5}],
    }
    config = EvalConfig.from_dict(data)
    assert config.to_dict()["methods"][1] == {"name": "specvlm", "window": "front", "seed": 3, "drop_rate": 0.5}
    assert EvalConfig.from_dict(config.to_dict()).method_specs() == config.method_specs()  # the saved config reloads


@pytest.mark.parametrize(
    ("method", "pruning", "drafts", "strategy", "capture"),
    [
        ("ar", "specvlm", False, None, False),
        ("sd", "specvlm", True, "none", False),  # sd is specvlm whose pruning keeps every video token
        ("specvlm", "specvlm", True, "verifier_guided", True),  # the old spelling runs verifier_guided
        ("specvlm", "uniform", True, "uniform", False),
    ],
)
def test_a_method_is_resolved_once_into_a_plan(method, pruning, drafts, strategy, capture):
    plan = Plan.resolve(method, DecodingConfig(pruning=pruning))
    assert (plan.drafts, plan.pruning, plan.capture_scores) == (drafts, strategy, capture)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match=r"unknown method 'beam'; choose one of \('ar', 'sd', 'specvlm', 'lookup'\)"):
        Plan.resolve("beam", DecodingConfig())
