"""Experiment configs: YAML -> validated dataclasses, overrides, sweeps, method keys, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from specvlm_eval.config import ConfigError, EvalConfig, apply_overrides, fingerprint_conflicts, load_config, load_yaml, save_config
from specvlm_eval.models import parse_tiny

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _base() -> dict:
    return {
        "name": "t",
        "model": {"target": "tiny:llava_onevision"},
        "benchmarks": [{"name": "synthetic"}],
        "methods": ["ar", {"name": "specvlm", "drop_rate": 0.5}],
    }


def test_defaults_and_method_keys():
    cfg = EvalConfig.from_dict(_base())
    assert cfg.output == "runs/t" and cfg.generation.max_new_tokens == 256 and cfg.generation.warmup == 1
    assert cfg.benchmarks[0].num_frames == 8 and cfg.benchmarks[0].prompt_modes == ("benchmark",)
    assert [s.key for s in cfg.method_specs()] == ["ar", "specvlm[pruning=verifier_guided,drop_rate=0.5,tree=chain]"]
    data = _base()
    data["methods"] = [
        {"name": "hf-assisted"},
        {"name": "sd", "tree": "specvlm-25"},
        {"name": "specvlm", "stage1_mass": 0.3, "tree": [[0], [1], [0, 0]], "sweep": {"pruning": ["specvlm", "random"]}},
        "ar",
    ]
    keys = [s.key for s in EvalConfig.from_dict(data).method_specs()]
    assert keys == [
        "ar",  # always first: the baseline
        "hf-assisted",
        "sd[tree=reference-25]",
        "specvlm[pruning=verifier_guided,drop_rate=0.9,tree=[[0],[1],[0,0]],stage1_mass=0.3]",
        "specvlm[pruning=random,drop_rate=0.9,tree=[[0],[1],[0,0]],stage1_mass=0.3]",
    ]


def test_sweep_expands_every_combination():
    data = _base()
    data["methods"] = ["ar", {"name": "specvlm", "sweep": {"pruning": ["specvlm", "uniform"], "drop_rate": [0.5, 0.9]}}]
    specs = EvalConfig.from_dict(data).method_specs()[1:]
    assert [(s.options["pruning"], s.options["drop_rate"]) for s in specs] == [
        ("verifier_guided", 0.5), ("verifier_guided", 0.9), ("uniform", 0.5), ("uniform", 0.9)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(colour="red"), "unknown key config.colour; allowed keys of config: name, model"),
        (lambda d: d["model"].update(dtype="bf16"), "unknown key model.dtype"),
        (lambda d: d["model"].update(torch_dtype="bf16"), "model.torch_dtype='bf16' is not allowed; choose one of auto, float32"),
        (lambda d: d["model"].update(compile="yes"), "model.compile='yes' is not allowed; choose one of auto, off, draft, all"),
        (lambda d: d["benchmarks"][0].update(name="kinetics"), "'kinetics' is not allowed; choose one of synthetic, videodetailcaption"),
        (lambda d: d["benchmarks"][0].update(prompt_modes=["qa"]), "prompt_modes='qa' is not allowed; choose one of benchmark, caption"),
        (lambda d: d["benchmarks"][0].update(num_frames=8, fps=1.0), "give num_frames or fps, not both"),
        (lambda d: d["benchmarks"][0].update(synthetic={"num_samples": 0}), "synthetic.num_samples=0 must be an integer >= 1"),
        (lambda d: d["methods"].append({"name": "medusa"}), "methods[].name='medusa' is not allowed; choose one of ar, sd, specvlm, hf-assisted"),
        (lambda d: d["methods"][1].update(pruning="topk"), "pruning='topk'; choose one of 'attention', 'none'"),
        (lambda d: d["methods"][1].update(drop_rate=1.5), "drop_rate must be in [0, 1), got 1.5"),
        (lambda d: d["methods"][1].update(tree="star"), "unknown tree 'star'"),
        (lambda d: d["methods"].append({"name": "ar", "drop_rate": 0.5}), "drop_rate does not apply to method 'ar'"),
        (lambda d: d["methods"].append({"name": "sd", "sweep": {"drop_rate": [0.5]}}), "sweep.drop_rate cannot be swept for method 'sd'"),
        (lambda d: d["methods"].pop(0), "methods must include 'ar'"),
        (lambda d: d["methods"].append({"name": "specvlm", "drop_rate": 0.5}), "is listed twice"),
        (lambda d: d["generation"].update(max_new_tokens=0), "generation.max_new_tokens=0 must be an integer >= 1"),
        (lambda d: d.update(benchmarks=[{"name": "mvbench"}]), "benchmarks[mvbench].root is required"),
    ],
)
def test_bad_config_names_key_and_choices(change, message):
    data = _base()
    data["generation"] = {}
    change(data)
    with pytest.raises(ConfigError) as err:
        EvalConfig.from_dict(data)
    assert message in str(err.value)


def test_overrides_dotted_indexed_wildcard_yaml_values(tmp_path):
    data = {**_base(), "benchmarks": [{"name": "synthetic"}, {"name": "mvbench", "root": "x"}]}
    out = apply_overrides(data, [
        "generation.max_new_tokens=16", "benchmarks.*.num_frames=4", "benchmarks.1.prompt_modes=[benchmark, caption]",
        "methods.1.drop_rate=0.75", "model.draft=null", "plots=false",
    ])  # fmt: skip
    cfg = EvalConfig.from_dict(out)
    assert cfg.generation.max_new_tokens == 16 and not cfg.plots and cfg.model.draft is None
    assert [b.num_frames for b in cfg.benchmarks] == [4, 4] and cfg.benchmarks[1].prompt_modes == ("benchmark", "caption")
    assert cfg.method_specs()[1].options["drop_rate"] == 0.75
    assert data["benchmarks"][0] == {"name": "synthetic"}  # the input is not mutated
    with pytest.raises(ConfigError, match="must look like key=value"):
        apply_overrides(data, ["generation.max_new_tokens"])
    with pytest.raises(ConfigError, match="index 5 is out of range"):
        apply_overrides(data, ["benchmarks.5.limit=1"])


def test_resolved_config_round_trips_and_fingerprint(tmp_path):
    cfg = EvalConfig.from_dict(_base())
    save_config(cfg, tmp_path / "config.yaml")
    again = EvalConfig.from_dict(load_yaml(tmp_path / "config.yaml"))
    assert again == cfg
    changed = load_config(tmp_path / "config.yaml", ["generation.warmup=3"], limit=2, output="elsewhere")
    assert changed.fingerprint() == cfg.fingerprint()  # warm-up, limit and output do not change any row
    assert changed.limit == 2 and changed.output == "elsewhere"
    eos = load_config(tmp_path / "config.yaml", ["generation.ignore_eos=true"]).fingerprint()
    assert fingerprint_conflicts(cfg.fingerprint(), eos) == ["generation.ignore_eos: saved False, now True"]
    more = load_config(tmp_path / "config.yaml", ["benchmarks.1={name: mvbench, root: x}", "methods.2=sd"])
    assert fingerprint_conflicts(cfg.fingerprint(), more.fingerprint()) == []  # adding benchmarks or methods resumes
    frames = load_config(tmp_path / "config.yaml", ["benchmarks.0.num_frames=4"]).fingerprint()
    assert fingerprint_conflicts(cfg.fingerprint(), frames) == ["benchmarks[synthetic].num_frames: saved 8, now 4"]


def test_tiny_references():
    assert parse_tiny("tiny:qwen2_5_vl") == ("qwen2_5_vl", 0, 2)
    assert parse_tiny("tiny:llava_onevision:1:1") == ("llava_onevision", 1, 1)
    with pytest.raises(ConfigError, match="tiny:<family>"):
        parse_tiny("tiny:gpt2")


def test_shipped_configs_are_valid():
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    for required in ("tiny", "synthetic", "llava_ov_72b_7b", "qwen2_5_vl_32b_7b", "qwen2_5_vl_7b_self", "qwen3_vl_8b_2b",
                     "internvl3_5_38b_1b"):
        assert required in names
    for name in names:
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg.method_specs()[0].key == "ar"
    synth = load_config(CONFIGS / "synthetic.yaml")
    assert (synth.model.target, synth.model.draft) == ("zoo:target", "zoo:draft")
    assert {s.name for s in synth.method_specs()} == {"ar", "sd", "specvlm", "hf-assisted"}
    assert {s.options.get("pruning") for s in synth.method_specs() if s.name == "specvlm"} >= {"verifier_guided", "uniform", "random"}
    assert synth.benchmarks[0].prompt_modes == ("benchmark", "caption")
    selfdraft = load_config(CONFIGS / "qwen2_5_vl_7b_self.yaml")
    assert selfdraft.model.draft is None and selfdraft.model.device_map == "auto" and selfdraft.model.torch_dtype == "bfloat16"
    assert sorted({b.num_frames for b in selfdraft.benchmarks}) == [64, 128]
    spec = [s for s in selfdraft.method_specs() if s.name == "specvlm"][0].options
    assert (spec["drop_rate"], spec["stage1_mass"], spec["tree"]) == (0.9, 0.4, "reference-25")
    assert selfdraft.generation.max_new_tokens == 256
