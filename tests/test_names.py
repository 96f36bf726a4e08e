"""One meaning per name (issue 32, point 1): the pruning strategy ``verifier_guided``, the tree ``reference-25``, the
answer mode ``strict`` and the attention implementation ``context_attention``, each formerly spelt with the
product's name, and ``visual_tokens`` / ``kept_visual_tokens`` (formerly ``video_tokens`` / ``kept_video_tokens``).

Every old spelling is still accepted wherever a user writes it (the Python API, both command lines, YAML
configs, lmms-eval model_args) and becomes the new name where values are validated, so settings, stats, result
rows and summaries show only the new names; results written by older versions are still read (a run resumes
from them)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import specvlm_pruning as pruning
from specvlm_eval import cli as eval_cli
from specvlm_eval import metrics, results
from specvlm_eval.config import ConfigError, EvalConfig, MethodSpec, load_config
from specvlm import SpecVLM, attention
from specvlm import cli as specvlm_cli
from specvlm import config as settings
from specvlm.answers import EXTRACTION_MODES, extract_answer, extract_choice
from specvlm.config import DecodingConfig
from specvlm.decoding import target as decoding_target
from specvlm.decoding import trees
from specvlm.models import VideoLayout, VisualLayout
from specvlm.stats import GenerationStats

OLD_TO_NEW = {"pruning": ("specvlm", "verifier_guided"), "tree": ("specvlm-25", "reference-25")}
OLD_KEY = "specvlm[pruning=specvlm,drop_rate=0.9,tree=specvlm-25]"
NEW_KEY = "specvlm[pruning=verifier_guided,drop_rate=0.9,tree=reference-25]"


# --------------------------------------------------------------------------- the core's settings


@pytest.mark.parametrize("name", sorted(OLD_TO_NEW))
def test_an_old_setting_spelling_becomes_the_new_name(name):
    old, new = OLD_TO_NEW[name]
    assert getattr(DecodingConfig(**{name: old}), name) == new
    assert getattr(DecodingConfig().replace(**{name: old}), name) == new  # per-call overrides
    assert settings.parse(name, old) == new  # command-line text
    assert settings.canonical(name, old) == new and settings.canonical(name, new) == new


def test_lists_of_choices_and_errors_name_only_the_new_names():
    assert "verifier_guided" in pruning.available() and "specvlm" not in pruning.available()
    assert settings.allowed("pruning") == tuple(pruning.available())
    assert trees.TREE_KINDS == ("chain", "reference-25", "dynamic")
    with pytest.raises(ValueError, match="verifier_guided") as err:
        DecodingConfig(pruning="specvlm2")
    assert "'specvlm'" not in str(err.value)
    with pytest.raises(ValueError, match="'reference-25'") as err:
        DecodingConfig(tree="specvlm-26")
    assert "specvlm-25" not in str(err.value)


def test_the_pruning_strategy_answers_to_both_names():
    scores = torch.tensor([0.1, 5.0, 0.2, 0.3, 4.0, 0.1, 0.2, 0.1, 0.3, 0.2])
    new = pruning.select("verifier_guided", scores, (1, 2, 5), 0.6)
    old = pruning.select("specvlm", scores, (1, 2, 5), 0.6)
    assert torch.equal(old.kept, new.kept) and torch.equal(old.stage1, new.stage1) and new.stage1.numel() > 0
    assert pruning.needs_scores("specvlm") and pruning.canonical("specvlm") == "verifier_guided"
    assert pruning.aliases() == {"specvlm": "verifier_guided"}
    with pytest.raises(ValueError, match="already registered"):
        pruning.register("specvlm")  # an old spelling cannot be taken by another strategy


def test_the_tree_answers_to_both_names():
    assert trees.resolve("specvlm-25", 5).paths == trees.resolve("reference-25", 5).paths == trees.REFERENCE_25
    assert DecodingConfig(tree="specvlm-25").tree_shape().size == 25


def test_old_names_of_classes_and_constants_still_import():
    assert VideoLayout is VisualLayout
    assert decoding_target.Sequence is decoding_target.DecodingState
    assert trees.SPECVLM_25 is trees.REFERENCE_25
    assert attention.specvlm_attention is attention.context_attention


def test_the_attention_implementation_is_registered_under_its_name_and_its_old_one():
    from transformers import AttentionInterface

    assert attention.register() == attention.ATTN_IMPLEMENTATION == "context_attention"
    for name in ("context_attention", "specvlm_attention"):
        assert AttentionInterface._global_mapping[name] is attention.context_attention


# --------------------------------------------------------------------------- the API on a tiny pair


@pytest.fixture(scope="module")
def engine(checkpoints):
    pair = checkpoints["llava_onevision"]
    return SpecVLM.from_pretrained(pair["target"], draft=pair["draft"], pruning="specvlm", tree="specvlm-25")


def test_from_pretrained_and_per_call_overrides_take_the_old_spellings(engine, frames):
    assert (engine.config.pruning, engine.config.tree) == ("verifier_guided", "reference-25")
    assert engine.target.config.get_text_config()._attn_implementation == "context_attention"
    inputs = engine.build_inputs(frames, "Describe the video.")
    prepared = engine.prepare(inputs=inputs, max_new_tokens=4, pruning="specvlm", tree="specvlm-25")
    assert (prepared.config.pruning, prepared.config.tree) == ("verifier_guided", "reference-25")
    assert prepared.plan.pruning == "verifier_guided"
    kwargs = dict(inputs=inputs, max_new_tokens=6, ignore_eos=True, lazy_draft_after=0)
    old = engine.generate(**kwargs, pruning="specvlm", tree="specvlm-25")
    new = engine.generate(**kwargs, pruning="verifier_guided", tree="reference-25")
    assert old.token_ids == new.token_ids and old.stats.kept_visual_tokens == new.stats.kept_visual_tokens > 0


def test_stats_say_visual_and_keep_the_old_names_readable():
    stats = GenerationStats(method="specvlm", visual_tokens=40, kept_visual_tokens=4)
    assert (stats.video_tokens, stats.kept_video_tokens) == (40, 4)  # read-only, for old code
    with pytest.raises(AttributeError):
        stats.video_tokens = 3
    out = stats.to_dict()
    assert (out["visual_tokens"], out["kept_visual_tokens"]) == (40, 4)
    assert "video_tokens" not in out and "kept_video_tokens" not in out
    assert "visual_tokens=40 kept_visual_tokens=4" in stats.summary()


# --------------------------------------------------------------------------- command lines


def test_the_specvlm_command_line_reads_old_spellings():
    base = ["generate", "--target", "t", "--video", "v", "--prompt", "p"]
    args = specvlm_cli._parser().parse_args(base + ["--pruning", "specvlm", "--tree", "specvlm-25"])
    assert (args.pruning, args.tree) == ("verifier_guided", "reference-25")
    memory = specvlm_cli._parser().parse_args(["memory", "--target", "t", "--frames", "8", "--tree", "specvlm-25"])
    assert memory.tree == "reference-25"


def test_the_specvlm_command_line_refuses_an_unknown_pruning_naming_the_new_names(capsys):
    with pytest.raises(SystemExit) as exit_:
        specvlm_cli._parser().parse_args(["generate", "--target", "t", "--video", "v", "--prompt", "p", "--pruning", "nope"])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "'nope'" in error and "'verifier_guided'" in error and "'specvlm'" not in error


def _config(tmp_path, checkpoints, methods, **extra) -> dict:
    pair = checkpoints["llava_onevision"]
    return {
        "name": "names",
        "output": str(tmp_path / "run"),
        "model": {"target": str(pair["target"]), "draft": str(pair["draft"]), "torch_dtype": "float32"},
        "generation": {"max_new_tokens": 4, "ignore_eos": True, "warmup": 0},
        "benchmarks": [{"name": "synthetic", "root": str(tmp_path / "synth"), "prompt_modes": ["benchmark"], "num_frames": 8,
                        "synthetic": {"num_samples": 1, "num_frames": 8, "height": 64, "width": 64, "questions_per_video": 1}}],
        "methods": methods,
        **extra,
    }  # fmt: skip


def test_a_yaml_config_with_old_spellings_loads_under_the_new_names(tmp_path, checkpoints):
    methods = ["ar", {"name": "sd", "tree": "specvlm-25"},
               {"name": "specvlm", "pruning": "specvlm", "drop_rate": 0.9, "tree": "specvlm-25"},
               {"name": "specvlm", "sweep": {"pruning": ["specvlm", "uniform"]}, "drop_rate": 0.5}]  # fmt: skip
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, checkpoints, methods, answer_extraction="specvlm")))
    config = load_config(path, [])
    assert config.answer_extraction == "strict" == EXTRACTION_MODES[0]
    assert [s.key for s in config.method_specs()] == [
        "ar", "sd[tree=reference-25]", NEW_KEY,
        "specvlm[pruning=verifier_guided,drop_rate=0.5,tree=chain]", "specvlm[pruning=uniform,drop_rate=0.5,tree=chain]",
    ]  # fmt: skip
    saved = yaml.safe_dump(config.to_dict())  # the resolved config saved next to the results
    assert "specvlm-25" not in saved and "pruning: specvlm" not in saved and "- specvlm\n" not in saved
    # the specvlm-eval command line's overrides (--set), as its parser hands them to load_config
    args = eval_cli._parser().parse_args([str(path), "--set", "methods.2.pruning=specvlm", "--set", "answer_extraction=specvlm"])
    again = load_config(path, args.overrides)
    assert again.answer_extraction == "strict" and NEW_KEY in [s.key for s in again.method_specs()]
    with pytest.raises(ConfigError, match="verifier_guided"):
        load_config(path, ["methods.2.pruning=nope"])
    with pytest.raises(ConfigError, match="strict, lmms-eval"):
        load_config(path, ["answer_extraction=nope"])


def test_lmms_eval_model_args_take_the_old_spellings():
    # the lmms-eval plugin builds its method from model_args through MethodSpec.build (eval/lmms.py)
    spec = MethodSpec.build("specvlm", {"pruning": "specvlm", "tree": "specvlm-25"})
    assert spec.key == NEW_KEY and spec.options["pruning"] == "verifier_guided"


# --------------------------------------------------------------------------- answers


def test_the_answer_mode_strict_was_specvlm():
    text, options = "The answer is (C)", ("a", "b", "c", "d")
    assert extract_answer(text, 4, options, mode="specvlm") == extract_answer(text, 4, options, mode="strict")
    assert extract_answer("A man walks a dog.", 4, options, mode="strict") is None == extract_choice("A man walks a dog.", 4)
    assert EvalConfig.from_dict({**_minimal(), "answer_extraction": "specvlm"}).answer_extraction == "strict"
    row = {"status": "ok", "options": list(options), "text": text, "answer": "C", "prediction": "C", "correct": True,
           "benchmark": "synthetic", "answer_extraction": "specvlm"}  # fmt: skip
    assert metrics.regrade([row], "strict") == [row]  # graded under the same mode: not read again


def _minimal() -> dict:
    return {"name": "m", "model": {"target": "t"}, "benchmarks": [{"name": "synthetic", "root": "r"}], "methods": ["ar"]}


# --------------------------------------------------------------------------- result files


def _old_row(row: dict) -> dict:
    """``row`` as an older version wrote it: old spellings in its key, method and settings, old field names."""
    old = {({"visual_tokens": "video_tokens", "kept_visual_tokens": "kept_video_tokens"}).get(k, k): v for k, v in row.items()}
    for field in ("key", "method"):
        old[field] = old[field].replace("verifier_guided", "specvlm").replace("reference-25", "specvlm-25")
    if old.get("settings"):
        old["settings"] = {k: {"verifier_guided": "specvlm", "reference-25": "specvlm-25"}.get(v, v) if isinstance(v, str) else v
                           for k, v in old["settings"].items()}  # fmt: skip
    if "answer_extraction" in old:
        old["answer_extraction"] = "specvlm"
    return old


def test_rows_written_with_old_names_are_read_under_the_new_ones(tmp_path):
    row = {"key": f"synthetic/benchmark/0|{OLD_KEY}", "method": OLD_KEY, "method_name": "specvlm", "status": "ok",
           "settings": {"pruning": "specvlm", "drop_rate": 0.9, "tree": "specvlm-25"}, "video_tokens": 40,
           "kept_video_tokens": 4, "answer_extraction": "specvlm", "sample_id": "0", "benchmark": "synthetic",
           "token_ids": [5, 6], "new_tokens": 2, "e2e_s": 0.5}  # fmt: skip
    (tmp_path / results.RESULTS).write_text(json.dumps(row) + "\n")
    (read,) = results.read_rows(tmp_path / results.RESULTS)
    assert read["key"] == f"synthetic/benchmark/0|{NEW_KEY}" and read["method"] == NEW_KEY
    assert read["settings"] == {"pruning": "verifier_guided", "drop_rate": 0.9, "tree": "reference-25"}
    assert (read["visual_tokens"], read["kept_visual_tokens"], read["answer_extraction"]) == (40, 4, "strict")
    assert "video_tokens" not in read and "kept_video_tokens" not in read
    assert results.finished_keys(tmp_path) == {f"synthetic/benchmark/0|{NEW_KEY}"}
    assert results.upgrade(read) == read  # a current row comes back unchanged
    user_tree = {"key": "s|sd[tree=[[0],[1]]]", "method": "sd[tree=[[0],[1]]]", "settings": {"tree": [[0], [1]]}}
    assert results.upgrade(user_tree) == user_tree
    summary = metrics.summarize_method([read], {})
    assert (summary["visual_tokens_mean"], summary["kept_visual_tokens_mean"]) == (40, 4)


def test_a_run_resumes_from_rows_an_older_version_wrote(tmp_path, checkpoints):
    """specvlm-eval with a config in the old spellings writes the new names; rows rewritten in the old spellings
    (as an older version left them) count as done: the rerun decodes nothing and summarises them."""
    methods = ["ar", {"name": "specvlm", "pruning": "specvlm", "drop_rate": 0.9, "tree": "specvlm-25", "lazy_draft_after": 0}]
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, checkpoints, methods, answer_extraction="specvlm", plots=False)))
    out = tmp_path / "run"
    assert eval_cli.main([str(path), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / results.RESULTS).read_text().splitlines()]
    spec = [r for r in rows if r["method_name"] == "specvlm"]
    assert spec and all(r["method"] == "specvlm[pruning=verifier_guided,drop_rate=0.9,tree=reference-25,lazy_draft_after=0]"
                        and r["settings"]["pruning"] == "verifier_guided" and r["kept_visual_tokens"] > 0
                        and "kept_video_tokens" not in r and r["answer_extraction"] == "strict" for r in spec)  # fmt: skip

    (out / results.RESULTS).write_text("".join(json.dumps(_old_row(r)) + "\n" for r in rows))
    assert eval_cli.main([str(path), "--no-progress"]) == 0
    again = [json.loads(line) for line in (out / results.RESULTS).read_text().splitlines()]
    assert again == rows  # nothing decoded again (timings included), every row rewritten in the new names
    summary = json.loads((out / "summary.json").read_text())
    (group,) = summary["groups"].values()
    assert summary["answer_extraction"] == "strict"
    assert group["methods"][spec[0]["method"]]["kept_visual_tokens_mean"] > 0
