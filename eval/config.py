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

What this module deliberately does not do: touch files other than the YAML it is asked to read,
load models or datasets, or know what the settings mean beyond their validation (decoding settings
are validated by ``specvlm.DecodingConfig`` itself, so the eval harness and the core agree).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from specvlm import config as decoding
from specvlm.answers import EXTRACTION_MODES, canonical_mode

BENCHMARKS = ("synthetic", "videodetailcaption", "mvbench", "mlvu", "longvideobench", "videomme")
PROMPT_MODES = ("benchmark", "caption")
METHOD_NAMES = ("ar", "sd", "specvlm", "hf-assisted")
DTYPES = ("auto", "float32", "float16", "bfloat16")
#: The reference implementation's fixed detailed-description prompt (caption mode on real benchmarks).
REFERENCE_CAPTION_PROMPT = (
    "Please provide a detailed description of the video, focusing on the main subjects, their actions, "
    "and the background scenes."
)

# Decoding settings each method accepts, from the core's one definition (specvlm.config): everything
# else is an error, so no setting is silently ignored. The per-model ones (attn_backend, compile) are
# in the model section.
_DECODING_FIELDS = decoding.applies_to("specvlm")
METHOD_SETTINGS: dict[str, tuple[str, ...]] = {
    "ar": decoding.applies_to("ar"),
    "sd": decoding.applies_to("sd"),
    "specvlm": _DECODING_FIELDS,
    "hf-assisted": ("num_draft_tokens",),  # a constant num_assistant_tokens
}
# Settings always shown in a method key (the rest appear only when they differ from the default).
_KEY_FIELDS = {"sd": ("tree",), "specvlm": ("pruning", "drop_rate", "tree")}


class ConfigError(ValueError):
    """A configuration key or value is not valid; the message names it and what is allowed."""


# --------------------------------------------------------------------------- helpers


def _check_keys(cls, data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}: {data!r}")
    allowed = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}; allowed keys of {where}: {', '.join(allowed)}")
    return data


def _int(where: str, value: Any, minimum: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}={value!r} must be an integer >= {minimum}{' or null' if optional else ''}")
    return value


def _positive(where: str, value: Any, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}={value!r} must be a positive number{' or null' if optional else ''}")
    return float(value)


def _choice(where: str, value: Any, choices: tuple, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if value not in choices:
        raise ConfigError(f"{where}={value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
    return value


def _str(where: str, value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}={value!r} must be a non-empty string{' or null' if optional else ''}")
    return value


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}={value!r} must be true or false")
    return value


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML/JSON friendly)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ModelConfig:
    """Which models to load and how.

    ``target`` / ``draft``: a local path or hub id, ``zoo:<name>`` (``specvlm.zoo.checkpoint``) or
    ``tiny:<family>[:seed][:layers]`` (built offline with ``specvlm.zoo.tiny`` into ``tiny_cache``, default
    ``<output>/../.tiny-cache``). ``draft: null`` means self-drafting. ``device_map``: ``null`` puts the
    models on this process's GPU (``cuda:<LOCAL_RANK>``) when CUDA is available, else on the CPU;
    ``"auto"`` spreads a large target over all visible GPUs; anything else is passed to ``from_pretrained``.
    ``attn_backend``: the attention kernels of the SpecVLM loop (``auto``, ``sdpa``, ``cascade``, ``flash_attn``).
    ``compile``: run decode-time forwards through ``torch.compile`` (``off``, ``draft``: the draft's
    steps, ``all``: the target's too, plain decoding included); see ``specvlm.SpecVLM.from_pretrained``.
    ``tp_size`` (``--tp``): shard the target over groups of this many processes (``specvlm_eval.distributed``).
    """

    target: str
    draft: str | None = None
    torch_dtype: str | None = None
    device_map: str | dict | None = None
    tiny_cache: str | None = None
    attn_backend: str = decoding.DecodingConfig.attn_backend
    # every row alike: an evaluation's rows are compared with each other, so its default compiles nothing (the
    # core's "auto" would switch to compiled draft steps after a few rows); set it to compile
    compile: str = "off"
    tp_size: int = 1

    def __post_init__(self):
        _str("model.target", self.target)
        _str("model.draft", self.draft, optional=True)
        _choice("model.torch_dtype", self.torch_dtype, DTYPES, optional=True)
        if self.device_map is not None and not isinstance(self.device_map, (str, dict)):
            raise ConfigError(f"model.device_map={self.device_map!r} must be null, a string such as 'auto' or a mapping")
        _str("model.tiny_cache", self.tiny_cache, optional=True)
        _choice("model.attn_backend", self.attn_backend, decoding.allowed("attn_backend"))
        _choice("model.compile", self.compile, decoding.allowed("compile"))
        if _int("model.tp_size", self.tp_size, 1) > 1 and self.device_map is not None:
            raise ConfigError(f"model.tp_size={self.tp_size} shards the target over processes, one device each; "
                              f"model.device_map must be null (got {self.device_map!r})")


@dataclass(frozen=True)
class GenerationSettings:
    """The same for every method: greedy decoding, one token cap, one stopping rule, warm-up runs.

    ``ignore_eos: true`` disables EOS for every method alike (each run decodes ``max_new_tokens``).
    ``warmup`` runs of each method kind happen on the first pending sample before timing and are not
    recorded; ``warmup_max_new_tokens`` (default ``max_new_tokens``) caps them.
    """

    max_new_tokens: int = decoding.DEFAULT_MAX_NEW_TOKENS
    ignore_eos: bool = False
    warmup: int = 1
    warmup_max_new_tokens: int | None = None

    def __post_init__(self):
        _int("generation.max_new_tokens", self.max_new_tokens, 1)
        _bool("generation.ignore_eos", self.ignore_eos)
        _int("generation.warmup", self.warmup, 0)
        _int("generation.warmup_max_new_tokens", self.warmup_max_new_tokens, 1, optional=True)


@dataclass(frozen=True)
class SyntheticSettings:
    """How to generate the synthetic benchmark when its directory does not exist (``specvlm.zoo.synthetic``).

    ``questions_per_video``: in ``benchmark`` mode each video contributes this many of its questions,
    rotating through the question kinds by video index (``null``: all of them).
    """

    num_samples: int = 8
    seed: int = 0
    num_frames: int = 16
    height: int = 64
    width: int = 64
    questions_per_video: int | None = 1

    def __post_init__(self):
        _int("synthetic.num_samples", self.num_samples, 1)
        _int("synthetic.seed", self.seed, 0)
        _int("synthetic.num_frames", self.num_frames, 8)
        _int("synthetic.height", self.height, 32)
        _int("synthetic.width", self.width, 32)
        _int("synthetic.questions_per_video", self.questions_per_video, 1, optional=True)
        if self.height % 2 or self.width % 2:
            raise ConfigError(f"synthetic height/width must be even (yuv420p), got {self.height}x{self.width}")


@dataclass(frozen=True)
class BenchmarkConfig:
    """One benchmark read from a local directory laid out like its published dataset (see docs/evaluation.md).

    ``label`` (default: ``name``) names the result group, so one benchmark can appear twice (for
    example at 64 and 128 frames). ``prompt_modes``: ``benchmark`` (the dataset's own question, with
    lettered options for multiple choice) and/or ``caption`` (a fixed detailed-description prompt,
    ``caption_prompt``). Frames: ``num_frames`` (uniform) or ``fps`` (optionally capped by
    ``max_frames``); neither means 8 frames. ``annotations`` overrides the annotation file(s) (a path
    or glob relative to ``root``); ``tasks`` keeps only those tasks; ``limit`` keeps the first N samples.
    ``apply_bounds`` (MVBench): sample frames only between a row's ``start`` and ``end`` seconds, as
    VideoChat2 does (``false``: over the whole file). ``allow_outside_root``: accept video paths in the
    annotations that resolve outside ``root`` (``..``, absolute paths); by default such a row is an error row.
    """

    name: str
    root: str | None = None
    label: str | None = None
    annotations: str | None = None
    prompt_modes: tuple[str, ...] = ("benchmark",)
    caption_prompt: str | None = None
    num_frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    tasks: tuple[str, ...] | None = None
    limit: int | None = None
    synthetic: SyntheticSettings | None = None
    apply_bounds: bool = True
    allow_outside_root: bool = False

    def __post_init__(self):
        where = f"benchmarks[{self.label or self.name}]"
        _choice(f"{where}.name", self.name, BENCHMARKS)
        if self.label is None:
            object.__setattr__(self, "label", self.name)
        _str(f"{where}.label", self.label)
        if "/" in self.label or "|" in self.label:
            raise ConfigError(f"{where}.label={self.label!r} must not contain '/' or '|'")
        if self.root is None and self.name != "synthetic":
            raise ConfigError(f"{where}.root is required: the local directory holding the {self.name} dataset")
        _str(f"{where}.root", self.root, optional=True)
        _str(f"{where}.annotations", self.annotations, optional=True)
        modes = (self.prompt_modes,) if isinstance(self.prompt_modes, str) else self.prompt_modes
        if not isinstance(modes, (list, tuple)) or not modes:
            raise ConfigError(f"{where}.prompt_modes={self.prompt_modes!r} must be one or a list of {PROMPT_MODES}")
        for mode in modes:
            _choice(f"{where}.prompt_modes", mode, PROMPT_MODES)
        if len(set(modes)) != len(modes):
            raise ConfigError(f"{where}.prompt_modes={list(modes)!r} lists a mode twice")
        object.__setattr__(self, "prompt_modes", tuple(modes))
        _str(f"{where}.caption_prompt", self.caption_prompt, optional=True)
        _int(f"{where}.num_frames", self.num_frames, 1, optional=True)
        _positive(f"{where}.fps", self.fps, optional=True)
        _int(f"{where}.max_frames", self.max_frames, 1, optional=True)
        if self.num_frames is not None and self.fps is not None:
            raise ConfigError(
                f"{where}: give num_frames or fps, not both (num_frames={self.num_frames}, fps={self.fps}); "
                "set num_frames: null to sample by fps"
            )
        if self.max_frames is not None and self.fps is None:
            raise ConfigError(f"{where}.max_frames={self.max_frames} only applies when sampling by fps")
        if self.num_frames is None and self.fps is None:
            object.__setattr__(self, "num_frames", 8)
        if self.tasks is not None:
            tasks = (self.tasks,) if isinstance(self.tasks, str) else self.tasks
            if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
                raise ConfigError(f"{where}.tasks={self.tasks!r} must be a list of task names")
            object.__setattr__(self, "tasks", tuple(tasks))
        _int(f"{where}.limit", self.limit, 1, optional=True)
        _bool(f"{where}.apply_bounds", self.apply_bounds)
        _bool(f"{where}.allow_outside_root", self.allow_outside_root)
        if self.synthetic is not None and self.name != "synthetic":
            raise ConfigError(f"{where}.synthetic only applies to the synthetic benchmark, not {self.name!r}")
        if isinstance(self.synthetic, dict):
            object.__setattr__(self, "synthetic", SyntheticSettings(**_check_keys(SyntheticSettings, self.synthetic, f"{where}.synthetic")))
        if self.name == "synthetic" and self.synthetic is None:
            object.__setattr__(self, "synthetic", SyntheticSettings())


@dataclass(frozen=True)
class MethodConfig:
    """One method entry: ``ar``, ``sd``, ``specvlm`` or ``hf-assisted`` with its decoding settings.

    Settings left out take the core defaults (``specvlm.DecodingConfig``). ``sweep`` maps settings to
    lists of values and expands into every combination (e.g. ``{pruning: [verifier_guided, uniform], drop_rate:
    [0.5, 0.9]}`` gives four methods). Each method accepts only the settings it uses:
    ``ar`` none; ``sd`` the drafting ones (``num_draft_tokens``, ``tree``, ``tree_*``); ``specvlm`` all;
    ``hf-assisted`` ``num_draft_tokens`` (a constant ``num_assistant_tokens``; default: transformers' heuristic).
    """

    name: str
    sweep: dict | None = None
    settings: dict = field(default_factory=dict)  # decoding settings (specvlm.config), by name

    @classmethod
    def from_entry(cls, entry: dict, where: str) -> "MethodConfig":
        """A method entry as written in YAML: ``name``, optional ``sweep`` and decoding settings."""
        allowed = ("name", "sweep") + _DECODING_FIELDS
        unknown = [k for k in entry if k not in allowed]
        if unknown:
            raise ConfigError(f"unknown key {where}.{unknown[0]}; allowed keys of {where}: {', '.join(allowed)}")
        settings = {k: decoding.canonical(k, v)  # an old spelling of a value becomes its current name
                    for k, v in entry.items() if k not in ("name", "sweep") and v is not None}  # fmt: skip
        sweep = entry.get("sweep")
        if isinstance(sweep, dict):  # old spellings of swept values too (an unknown key is refused below)
            sweep = {k: [decoding.canonical(k, v) for v in vs] if k in decoding.NAMES and isinstance(vs, list) else vs
                     for k, vs in sweep.items()}  # fmt: skip
        return cls(name=entry["name"], sweep=sweep, settings=settings)

    def to_entry(self) -> dict:
        """The entry as written in YAML (settings beside the name)."""
        return {"name": self.name, **({"sweep": _plain(self.sweep)} if self.sweep else {}), **_plain(self.settings)}

    def __post_init__(self):
        where = f"methods[{self.name}]"
        _choice("methods[].name", self.name, METHOD_NAMES)
        allowed = METHOD_SETTINGS[self.name]
        for f in self.settings:
            if f not in allowed:
                raise ConfigError(
                    f"{where}.{f} does not apply to method {self.name!r}; "
                    f"it accepts: {', '.join(allowed) if allowed else 'no settings'}"
                )
        if self.sweep is not None:
            if not isinstance(self.sweep, dict) or not self.sweep:
                raise ConfigError(f"{where}.sweep={self.sweep!r} must map settings to lists of values")
            for key, values in self.sweep.items():
                if key not in allowed:
                    raise ConfigError(
                        f"{where}.sweep.{key} cannot be swept for method {self.name!r}; "
                        f"it accepts: {', '.join(allowed) if allowed else 'no settings'}"
                    )
                if key in self.settings:
                    raise ConfigError(f"{where}: {key} is given both as a setting and in sweep")
                if not isinstance(values, (list, tuple)) or not values:
                    raise ConfigError(f"{where}.sweep.{key}={values!r} must be a non-empty list")
        self.expand()  # validates every combination through the core's DecodingConfig

    def expand(self) -> list["MethodSpec"]:
        """One :class:`MethodSpec` per sweep combination (a single one without a sweep)."""
        base = dict(self.settings)
        sweep = self.sweep or {}
        specs = []
        for combo in itertools.product(*sweep.values()):
            settings = {**base, **dict(zip(sweep.keys(), combo))}
            specs.append(MethodSpec.build(self.name, settings))
        return specs


@dataclass(frozen=True)
class MethodSpec:
    """A fully resolved method: its name, the explicit settings it runs with, and its result key."""

    name: str
    settings: tuple[tuple[str, Any], ...] = ()  # (setting, value) in _DECODING_FIELDS order

    @classmethod
    def build(cls, name: str, settings: dict) -> "MethodSpec":
        from specvlm import DecodingConfig

        where = f"methods[{name}]"
        explicit = {}
        if name in ("sd", "specvlm"):
            defaults = DecodingConfig()
            try:
                resolved = DecodingConfig(**{**{f: getattr(defaults, f) for f in _DECODING_FIELDS}, **settings})
            except (ValueError, TypeError) as err:
                raise ConfigError(f"{where}: {err}") from err
            for f in METHOD_SETTINGS[name]:
                value = getattr(resolved, f)
                explicit[f] = _plain(value) if isinstance(value, tuple) else value
        elif name == "hf-assisted":
            if "num_draft_tokens" in settings:
                explicit["num_draft_tokens"] = _int(f"{where}.num_draft_tokens", settings["num_draft_tokens"], 1)
        return cls(name=name, settings=tuple((k, _freeze(v)) for k, v in explicit.items()))

    @property
    def options(self) -> dict:
        """The settings as keyword overrides (lists for trees)."""
        return {k: _plain(v) for k, v in self.settings}

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``specvlm[pruning=verifier_guided,drop_rate=0.9,tree=chain]``."""
        from specvlm import DecodingConfig

        if not self.settings:
            return self.name
        defaults = DecodingConfig()
        always = _KEY_FIELDS.get(self.name, ())
        parts = []
        values = dict(self.settings)
        for f in always + tuple(f for f in _DECODING_FIELDS if f not in always):
            if f not in values:
                continue
            v = values[f]
            if f in always or self.name == "hf-assisted" or _plain(v) != _plain(getattr(defaults, f)):
                parts.append(f"{f}={_fmt(v)}")
        return f"{self.name}[{','.join(parts)}]" if parts else self.name


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return json.dumps(_plain(v), separators=(",", ":"))
    return str(v)


# --------------------------------------------------------------------------- the whole experiment


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


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, raising ConfigError naming the file on any problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key=value`` overrides: dotted keys, list items by index (``*`` for all of them, the
    length to append one), values parsed as YAML (``16``, ``null``, ``[a, b]``, ``{name: ar}``)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. generation.max_new_tokens=64)")
        key, raw = item.split("=", 1)
        path = [p for p in key.strip().split(".")]
        if not all(path):
            raise ConfigError(f"override key {key!r} has an empty part")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: the value is not valid YAML: {err}") from err
        _set(data, path, value, key)
    return data


def _set(node: Any, path: list[str], value: Any, key: str) -> None:
    head, rest = path[0], path[1:]
    if isinstance(node, list):
        if head == "*":
            targets = range(len(node))
        else:
            try:
                idx = int(head)
            except ValueError:
                raise ConfigError(f"override {key!r}: {head!r} must be a list index or '*'") from None
            if idx == len(node):  # one past the end appends a new item
                node.append({} if rest else None)
            elif not -len(node) <= idx < len(node):
                raise ConfigError(
                    f"override {key!r}: index {idx} is out of range (the list has {len(node)} items; "
                    f"index {len(node)} appends)"
                )
            targets = [idx]
        for i in targets:
            if rest:
                if isinstance(node[i], str):  # shorthand list entries such as "ar"
                    node[i] = {"name": node[i]}
                _set(node[i], rest, value, key)
            else:
                node[i] = copy.deepcopy(value)
        return
    if not isinstance(node, dict):
        raise ConfigError(f"override {key!r}: cannot set {head!r} inside a {type(node).__name__}")
    if not rest:
        node[head] = value
        return
    if node.get(head) is None:
        node[head] = {}
    _set(node[head], rest, value, key)


def select_benchmarks(data: dict, labels: list[str]) -> dict:
    """Keep only the benchmark entries whose label (or name, when unlabelled) is in ``labels``."""
    entries = data.get("benchmarks")
    if not isinstance(entries, list):
        raise ConfigError("benchmarks must be a list")
    def label(e):
        return e if isinstance(e, str) else (e.get("label") or e.get("name"))
    known = [label(e) for e in entries]
    unknown = [x for x in labels if x not in known]
    if unknown:
        raise ConfigError(f"benchmark {unknown[0]!r} is not in the config; its benchmarks are: {', '.join(map(str, known))}")
    return {**data, "benchmarks": [e for e in entries if label(e) in labels]}


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
