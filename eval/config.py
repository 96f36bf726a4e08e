"""Typed, validated experiment configuration: YAML -> dataclasses, plus ``--set`` overrides.

An experiment file (``configs/*.yaml``) has the sections ``model``, ``generation``, ``benchmarks``
and ``methods`` plus a few top-level keys (``name``, ``output``, ``limit``, ``plots``). Every
section maps onto a frozen dataclass that validates itself on construction: an unknown key or a
bad value raises :class:`ConfigError` naming the key (as a dotted path) and the allowed choices.

Method entries may carry a ``sweep`` (a mapping of setting -> list of values); :meth:`EvalConfig.method_specs`
expands it into one :class:`MethodSpec` per combination, each with a stable key such as
``specvlm[pruning=verifier_guided,drop_rate=0.9,tree=chain]`` that identifies its result rows. Old spellings
of setting values (``pruning: specvlm``, ``tree: specvlm-25``, ``answer_extraction: specvlm``) are accepted
and replaced by the current names.

The parts, one module a job, all re-exported here: :mod:`~specvlm_eval.config_values` (:class:`ConfigError`
and the value checks), :mod:`~specvlm_eval.config_sections` (model, generation, synthetic, benchmarks),
:mod:`~specvlm_eval.config_methods` (:class:`MethodConfig`, :class:`MethodSpec`) and
:mod:`~specvlm_eval.config_files` (YAML, overrides, benchmark selection). This module holds
:class:`EvalConfig`, the whole experiment, and reads and writes it.

What this module deliberately does not do: touch files other than the YAML it is asked to read,
load models or datasets, or know what the settings mean beyond their validation (decoding settings
are validated by ``specvlm.DecodingConfig`` itself, so the eval harness and the core agree).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from specvlm.answers import EXTRACTION_MODES, canonical_mode
from specvlm_eval.config_files import apply_overrides, load_yaml, select_benchmarks
from specvlm_eval.config_methods import METHOD_NAMES, METHOD_SETTINGS, MethodConfig, MethodSpec
from specvlm_eval.config_sections import (
    BENCHMARKS,
    DTYPES,
    PROMPT_MODES,
    REFERENCE_CAPTION_PROMPT,
    BenchmarkConfig,
    GenerationSettings,
    ModelConfig,
    SyntheticSettings,
)
from specvlm_eval.config_values import ConfigError, _bool, _check_keys, _choice, _int, _plain, _positive, _str

__all__ = [
    "BENCHMARKS",
    "DTYPES",
    "METHOD_NAMES",
    "METHOD_SETTINGS",
    "PROMPT_MODES",
    "REFERENCE_CAPTION_PROMPT",
    "BenchmarkConfig",
    "ConfigError",
    "EvalConfig",
    "GenerationSettings",
    "MethodConfig",
    "MethodSpec",
    "ModelConfig",
    "SyntheticSettings",
    "apply_overrides",
    "fingerprint_conflicts",
    "load_config",
    "load_yaml",
    "save_config",
    "select_benchmarks",
]


@dataclass(frozen=True)
class EvalConfig:
    """A benchmark x method matrix on one target/draft pair.

    ``output`` (default ``runs/<name>``) receives ``config.yaml``, ``results.jsonl``, ``summary.json``,
    ``summary.md`` and the plots. ``limit`` keeps the first N samples of every benchmark group (the
    smaller of this and a benchmark's own ``limit``). ``barrier_timeout_s`` bounds how long finished
    ranks wait for the others in a multi-process run. ``answer_extraction`` reads the option letter out
    of an answer strictly, as SpecVLM does (``strict``; old spelling ``specvlm``), or as lmms-eval's task
    for that benchmark does (``lmms-eval``; see ``specvlm.answers``); it changes only the accuracy, so it
    is not part of the fingerprint, and a summary re-reads rows written under the other mode.
    """

    name: str
    model: ModelConfig
    benchmarks: tuple[BenchmarkConfig, ...]
    methods: tuple[MethodConfig, ...]
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    output: str | None = None
    limit: int | None = None
    plots: bool = True
    barrier_timeout_s: float = 86400.0
    answer_extraction: str = EXTRACTION_MODES[0]

    def __post_init__(self):
        _str("name", self.name)
        if self.output is None:
            object.__setattr__(self, "output", os.path.join("runs", self.name))
        _str("output", self.output)
        _int("limit", self.limit, 1, optional=True)
        _bool("plots", self.plots)
        _positive("barrier_timeout_s", self.barrier_timeout_s)
        object.__setattr__(self, "answer_extraction", canonical_mode(self.answer_extraction))
        _choice("answer_extraction", self.answer_extraction, EXTRACTION_MODES)
        if not self.benchmarks:
            raise ConfigError("benchmarks is empty; list at least one benchmark")
        labels = [b.label for b in self.benchmarks]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"benchmark label {dup[0]!r} appears twice; give each entry its own label")
        if not self.methods:
            raise ConfigError("methods is empty; list at least 'ar' and one other method")
        keys = [s.key for s in self.method_specs()]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ConfigError(f"method {dup[0]!r} is listed twice (after expanding sweeps)")
        if "ar" not in keys:
            raise ConfigError(
                f"methods must include 'ar', the baseline for speedup and lossless agreement; got {keys}"
            )

    def method_specs(self) -> list[MethodSpec]:
        """All methods after expanding sweeps, ``ar`` first, then in config order."""
        specs = [s for m in self.methods for s in m.expand()]
        return sorted(specs, key=lambda s: s.name != "ar")

    @classmethod
    def from_dict(cls, data: Any) -> "EvalConfig":
        data = copy.deepcopy(_check_keys(cls, data, "config"))
        for key in ("name", "model", "benchmarks", "methods"):
            if key not in data:
                raise ConfigError(f"missing key {key!r}; an experiment needs name, model, benchmarks and methods")
        data["model"] = ModelConfig(**_check_keys(ModelConfig, data["model"], "model"))
        data["generation"] = GenerationSettings(**_check_keys(GenerationSettings, data.get("generation") or {}, "generation"))
        for key, item_cls in (("benchmarks", BenchmarkConfig), ("methods", MethodConfig)):
            items = data[key]
            if not isinstance(items, list):
                raise ConfigError(f"{key} must be a list, got {type(items).__name__}")
            built = []
            for i, item in enumerate(items):
                if isinstance(item, str):
                    item = {"name": item}
                if item_cls is MethodConfig:
                    if not isinstance(item, dict):
                        raise ConfigError(f"{key}[{i}] must be a mapping or a name, got {type(item).__name__}: {item!r}")
                    if "name" not in item:
                        raise ConfigError(f"{key}[{i}] needs a name")
                    built.append(MethodConfig.from_entry(item, f"{key}[{i}]"))
                    continue
                entry = _check_keys(item_cls, item, f"{key}[{i}]")
                if "name" not in entry:
                    raise ConfigError(f"{key}[{i}] needs a name")
                built.append(item_cls(**entry))
            data[key] = tuple(built)
        return cls(**data)

    def to_dict(self) -> dict:
        """The resolved config (defaults filled in) as plain YAML-friendly data."""
        out = _plain(dataclasses.asdict(self))
        out["methods"] = [m.to_entry() for m in self.methods]
        return out

    def fingerprint(self) -> dict:
        """What result rows depend on: the model, the generation settings and each benchmark (by label).

        Warm-up, limits, the placement (device map, ``tp_size``) and the method list are left out: methods are keyed
        by their settings, so adding one (or a benchmark) to an existing run only adds rows.
        """
        d = self.to_dict()
        gen = {k: v for k, v in d["generation"].items() if not k.startswith("warmup")}
        benches = {b["label"]: {k: v for k, v in b.items() if k not in ("limit", "label")} for b in d["benchmarks"]}
        model = {k: v for k, v in d["model"].items() if k not in ("device_map", "tp_size")}
        return {"model": model, "generation": gen, "benchmarks": benches}


def fingerprint_conflicts(saved: dict, now: dict) -> list[str]:
    """Settings that differ between two fingerprints (benchmarks compared only where both have the label)."""
    out = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
        elif a != b:
            out.append(f"{where}: saved {a!r}, now {b!r}")

    walk(saved["model"], now["model"], "model")
    walk(saved["generation"], now["generation"], "generation")
    for label in sorted(set(saved["benchmarks"]) & set(now["benchmarks"])):
        walk(saved["benchmarks"][label], now["benchmarks"][label], f"benchmarks[{label}]")
    return out


def load_config(path: str | os.PathLike, overrides: list[str] | None = None, *, limit: int | None = None,
                output: str | None = None, benchmarks: list[str] | None = None) -> EvalConfig:
    """Read ``path``, apply overrides, then the CLI flags (benchmark selection, limit, output), and validate."""
    data = apply_overrides(load_yaml(path), overrides or [])
    if benchmarks:
        data = select_benchmarks(data, benchmarks)
    if limit is not None:
        data["limit"] = limit
    if output is not None:
        data["output"] = str(output)
    return EvalConfig.from_dict(data)


def save_config(config: EvalConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
