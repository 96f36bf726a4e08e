"""The model, generation, synthetic and benchmark sections of an experiment: frozen dataclasses that check
themselves on construction.

An unknown key or a bad value raises :class:`~specvlm_eval.config_values.ConfigError` naming the key (as a
dotted path) and the allowed choices; defaults left out are filled in (a benchmark's label, its 8 frames).

What this module deliberately does not do: the methods (:mod:`specvlm_eval.config_methods`), the whole
experiment or reading YAML (:mod:`specvlm_eval.config`), or load models or datasets.
"""

from __future__ import annotations

from dataclasses import dataclass

from specvlm import config as decoding
from specvlm_eval.config_values import ConfigError, _bool, _check_keys, _choice, _int, _positive, _str

BENCHMARKS = ("synthetic", "videodetailcaption", "mvbench", "mlvu", "longvideobench", "videomme")
PROMPT_MODES = ("benchmark", "caption")
DTYPES = ("auto", "float32", "float16", "bfloat16")
#: The reference implementation's fixed detailed-description prompt (caption mode on real benchmarks).
REFERENCE_CAPTION_PROMPT = (
    "Please provide a detailed description of the video, focusing on the main subjects, their actions, "
    "and the background scenes."
)


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
