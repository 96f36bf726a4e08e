"""Decoding settings, defined once: :class:`DecodingConfig`.

Every setting is a field with its default, its help text, its allowed values and the methods it
applies to. Everything else is derived from these fields: the keywords of
``SpecVLM.from_pretrained`` and the per-call overrides of ``SpecVLM.generate`` (and their docstrings),
the ``specvlm`` command line's flags, and the settings an evaluation config's method entries accept.
Values are validated once, on construction; code that receives a ``DecodingConfig`` may trust it.
Old spellings are accepted there and replaced by the current names (:func:`canonical`: the pruning
``specvlm`` is ``verifier_guided``, the tree ``specvlm-25`` is ``reference-25``), so everything
downstream sees one name.

The paper's names are kept: ``drop_rate`` and ``stage1_mass`` (lambda).

What this module deliberately does not do: load models, or know about per-call generation settings
such as ``max_new_tokens`` and sampling (those belong to ``SpecVLM.generate``).
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field

import specvlm_pruning as pruning
from specvlm_pruning.budget import check_drop_rate
from specvlm_pruning.registry import DEFAULT_SEED, DEFAULT_STAGE1_MASS, DEFAULT_WINDOW
from specvlm_pruning.strategies import WINDOW_CHOICES
from specvlm.attention.context import BACKENDS
from specvlm.decoding import trees
from specvlm.decoding.drafting import DynamicTree
from specvlm.decoding.trees import TreeShape

#: The methods, all through one loop: ``ar`` plain decoding (the fair baseline), ``sd`` a draft that
#: sees every video token, ``specvlm`` a draft that sees the video tokens the pruning keeps, ``lookup``
#: prompt lookup (n-grams of the context drafted with no model at all).
METHODS = ("ar", "sd", "specvlm", "lookup")
#: What ``compile`` may compile: chosen where it pays, nothing, the draft's decode step, or every decode step.
COMPILE_MODES = ("auto", "off", "draft", "all")
#: ``overlap``: drafting in a worker while the target verifies: where it measures faster, always, or never.
OVERLAP_MODES = ("auto", "on", "off")
POSITION_MODES = ("original", "compact")
#: ``draft_vision``: where a separate draft computes its visual features (the kept frames, or all of them).
DRAFT_VISION_MODES = ("kept_frames", "all")
ATTENTION_BACKEND_CHOICES = ("auto",) + BACKENDS
#: ``max_new_tokens`` when neither the call, its generation config nor the checkpoint's sets one.
DEFAULT_MAX_NEW_TOKENS = 256
#: Chain length (draft tokens per target verification). The best length follows the draft's acceptance
#: rate; the embedded pair decodes fastest at 7 in a sweep of 4-8 (docs/performance.md).
DEFAULT_NUM_DRAFT_TOKENS = 7

#: ``self_draft_layers`` by name: choose a subset on the fly, or run every layer (plain self-drafting).
SELF_DRAFT_MODES = ("auto", "all")
#: ``lazy_draft_after``: answers of at most this many tokens (a multiple-choice letter or a few words)
#: never pay the draft's prefill; longer ones decode their first tokens without speculation.
DEFAULT_LAZY_DRAFT_AFTER = 8

_DRAFTING = ("sd", "specvlm", "lookup")  # the methods with a drafter
_MODEL_DRAFTING = ("sd", "specvlm")  # the methods with a draft model
_PRUNED = ("specvlm",)  # the methods whose draft sees a pruned video


def _parse_tree(text: str):
    """A ``tree`` value from text: a name, or JSON paths such as ``[[0],[1],[0,0]]``."""
    if not text.lstrip().startswith("["):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"tree={text!r} is not valid JSON paths ({err.msg}); e.g. [[0],[1],[0,0]]") from err


def _parse_layers(text: str):
    """A ``self_draft_layers`` value from text: 'auto', 'all', a ratio such as 0.5, or layer indices
    as JSON (``[0,2,5]``) or comma-separated (``0,2,5``)."""
    text = text.strip()
    if text in SELF_DRAFT_MODES:
        return text
    try:
        if text.startswith("["):
            return json.loads(text)
        if "," in text:
            return [int(t) for t in text.split(",") if t.strip()]
        return float(text) if "." in text else [int(text)]
    except ValueError as err:
        raise ValueError(
            f"self_draft_layers={text!r}: give 'auto', 'all', a ratio such as 0.5 or layer indices such as [0,2,5]"
        ) from err


def _parse_bool(text: str) -> bool:
    """A true/false setting from text: true/false, yes/no, on/off or 1/0."""
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{text!r} is not true or false (true/false, yes/no, on/off, 1/0)")


def _setting(default, help: str, *, choices=None, methods=_DRAFTING, scope: str = "method", parse=None, canonical=None):
    """A field of :class:`DecodingConfig` with what every consumer needs to know about it.

    choices: a tuple of allowed values, or a callable returning it (evaluated when asked)
    methods: the methods the setting changes (others ignore it)
    scope: "method" (an evaluation config sets it per method) or "model" (one value per loaded pair)
    parse: text -> value for the command line (default: the default's type)
    canonical: value -> the same value under its current name (old spellings accepted as aliases)
    """
    meta = {"help": help, "choices": choices, "methods": tuple(methods), "scope": scope, "parse": parse,
            "canonical": canonical}  # fmt: skip
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class DecodingConfig:
    """Validated decoding settings. Build it directly, or pass its fields as keywords to
    ``SpecVLM.from_pretrained`` (defaults for the engine) and ``SpecVLM.generate`` (one call)."""

    pruning: str = _setting(
        "verifier_guided", "how the draft's visual tokens are chosen: 'verifier_guided' (the target's attention "
        "guides it, two stages; old spelling 'specvlm'), or a baseline", choices=pruning.available,
        methods=_PRUNED, canonical=pruning.canonical)  # fmt: skip
    drop_rate: float = _setting(
        0.9, "share of the visual tokens the draft does not see; it keeps floor(N x (1 - drop_rate)), at least 1",
        methods=_PRUNED)  # fmt: skip
    stage1_mass: float = _setting(
        DEFAULT_STAGE1_MASS, "lambda: Stage I keeps the smallest top-scored set holding this share of the attention mass",
        methods=_PRUNED)  # fmt: skip
    num_draft_tokens: int = _setting(
        DEFAULT_NUM_DRAFT_TOKENS, "draft tokens per target verification (chain length)")
    positions: str = _setting(
        "original", "the kept tokens' position ids in the draft: their original ones, or re-numbered 0..K-1 "
        "as the reference implementation does", choices=POSITION_MODES, methods=_PRUNED)  # fmt: skip
    window: str = _setting(
        DEFAULT_WINDOW, "which part of the video the 'window' pruning keeps", choices=WINDOW_CHOICES, methods=_PRUNED)
    draft_vision: str = _setting(
        "kept_frames", "a separate draft's visual features: 'kept_frames' runs its vision tower only over the frames "
        "holding a video token it keeps (families whose tower encodes each frame on its own, e.g. "
        "LLaVA-OneVision; the kept tokens' features are exact), 'all' over every frame",
        choices=DRAFT_VISION_MODES, methods=_PRUNED)  # fmt: skip
    seed: int = _setting(DEFAULT_SEED, "seed of the 'random' pruning and of sampling", methods=_PRUNED)
    tree: object = _setting(
        "chain", "what the draft proposes: 'chain', 'reference-25' (the reference implementation's 25-node tree; "
        "old spelling 'specvlm-25'), 'dynamic' (EAGLE-2 style) or JSON paths of child ranks such as [[0],[1],[0,0]]",
        parse=_parse_tree, methods=_MODEL_DRAFTING, canonical=trees.canonical)  # fmt: skip
    tree_depth: int = _setting(DynamicTree.depth, "dynamic tree: levels drafted", methods=_MODEL_DRAFTING)
    tree_top_k: int = _setting(DynamicTree.top_k, "dynamic tree: best nodes expanded per level", methods=_MODEL_DRAFTING)
    tree_total_tokens: int = _setting(
        DynamicTree.total_tokens, "dynamic tree: nodes kept for verification", methods=_MODEL_DRAFTING)
    self_draft_layers: object = _setting(
        "auto", "self-drafting (draft=None) only: the target's decoder layers the draft runs: 'auto' (a few "
        "subsets are tried for a few steps each against plain decoding and the fastest is kept for the rest of "
        "the answer), 'all', a ratio of the layers to keep such as 0.5, or layer indices such as [0,2,5]",
        parse=_parse_layers, methods=_MODEL_DRAFTING)  # fmt: skip
    self_draft_memory: bool = _setting(
        True, "self-drafting with self_draft_layers='auto': the engine remembers each workload's measurements "
        "(keyed by the prompt's length and the drafting settings), so later answers of the same kind skip the "
        "trials (re-tried every few answers); False tries the subsets again for every answer",
        choices=(True, False), parse=_parse_bool, methods=_MODEL_DRAFTING)  # fmt: skip
    lazy_draft_after: int = _setting(
        DEFAULT_LAZY_DRAFT_AFTER, "decode the first tokens with the target alone and prefill the draft only once "
        "this many are committed, so short answers never pay for it (with no EOS to stop at, it is decided "
        "from max_new_tokens at once: a longer answer starts the draft right after its first token); 0 prefills "
        "the draft right after the target, before the first token", methods=_MODEL_DRAFTING)  # fmt: skip
    draft_stop_below: object = _setting(
        "auto", "adaptive chain length: a chain ends after a drafted token the draft gives less probability than "
        "this (one host read per drafted token), since the next ones would likely be rejected; 0 drafts every "
        "token; 'auto' is 0 for a draft model and layer-skipping's own threshold for a self-draft",
        parse=lambda text: text.strip() if text.strip() == "auto" else float(text), methods=_MODEL_DRAFTING)  # fmt: skip
    attn_backend: str = _setting(
        "auto", "attention kernels: 'auto' (flash_attn or the fused cascade on CUDA, sdpa on CPU), 'sdpa', "
        "'cascade' or 'flash_attn'", choices=ATTENTION_BACKEND_CHOICES, methods=METHODS, scope="model")  # fmt: skip
    compile: str = _setting(
        "auto", "decode-time forwards through torch.compile: 'auto' (a separate draft's greedy steps on CPU, once an "
        "engine has drafted a few answers: a one-shot call never waits for a compile, and a seeded sampled answer "
        "gives the same tokens on every call), 'off', 'draft' (the draft's steps "
        "from the first answer) or 'all' (the target's too); compiling takes seconds once, outputs are unchanged",
        choices=COMPILE_MODES, methods=METHODS, scope="model")  # fmt: skip
    never_slower: bool = _setting(
        True, "speculation that never loses: the answer's plain steps and drafted steps are timed, and when drafting "
        "commits fewer tokens per second than plain decoding the rest of the answer decodes plainly (remembered "
        "for the next answers of the same kind); False drafts to the end whatever it costs",
        choices=(True, False), parse=_parse_bool)  # fmt: skip
    overlap: str = _setting(
        "auto", "drafting that overlaps verification: the draft drafts the next chain in a worker of its own (a "
        "process on CPU, with the cores split; a thread for a draft on another device) while the target verifies "
        "this one, for a separate draft's greedy chains. 'auto': once an engine has drafted a few answers, a "
        "workload's answers try both ways and overlap is kept only where it measures faster; 'on': always (an "
        "answer that cannot overlap raises); 'off': never. Outputs are unchanged",
        choices=OVERLAP_MODES, methods=_MODEL_DRAFTING)  # fmt: skip

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, canonical(f.name, getattr(self, f.name)))
            choices = allowed(f.name)
            if choices is not None and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name}={getattr(self, f.name)!r}; choose one of {', '.join(map(repr, choices))}")
        for name in ("seed", "num_draft_tokens", "tree_depth", "tree_top_k", "tree_total_tokens", "lazy_draft_after"):
            value = getattr(self, name)
            minimum = 0 if name in ("seed", "lazy_draft_after") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}={value!r} must be an int >= {minimum}")
        for name in ("self_draft_memory", "never_slower"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        check_drop_rate(self.drop_rate)
        mass = self.stage1_mass
        if isinstance(mass, bool) or not isinstance(mass, numbers.Real) or not 0.0 <= float(mass) <= 1.0:
            raise ValueError(f"stage1_mass={mass!r} must be a number in [0, 1]")
        object.__setattr__(self, "self_draft_layers", _check_layers(self.self_draft_layers))
        stop = self.draft_stop_below
        if stop != "auto" and (isinstance(stop, bool) or not isinstance(stop, numbers.Real) or not 0.0 <= float(stop) < 1.0):
            raise ValueError(f"draft_stop_below={stop!r} must be 'auto' or a probability in [0, 1)")
        if isinstance(self.tree, (list, tuple)):
            object.__setattr__(self, "tree", tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in self.tree))
        self.tree_shape()  # validates the tree and its parameters

    def tree_shape(self) -> TreeShape | DynamicTree:
        """The static shape, or the dynamic-tree settings, this config drafts with."""
        shape = trees.resolve(self.tree, self.num_draft_tokens)
        if shape is None:
            return DynamicTree(depth=self.tree_depth, top_k=self.tree_top_k, total_tokens=self.tree_total_tokens)
        return shape

    def replace(self, **changes) -> "DecodingConfig":
        """A copy with ``changes`` applied (``None`` keeps a value); an unknown name raises TypeError."""
        check_names(changes)
        values = {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                  **{k: v for k, v in changes.items() if v is not None}}  # fmt: skip
        return DecodingConfig(**values)


def _check_layers(value):
    """A valid ``self_draft_layers`` value (a list becomes a sorted tuple), or ValueError."""
    bad = (
        f"self_draft_layers={value!r}: give 'auto', 'all', a ratio of layers to keep in (0, 1] "
        "or a non-empty list of distinct layer indices >= 0"
    )
    if isinstance(value, str):
        if value not in SELF_DRAFT_MODES:
            raise ValueError(bad)
        return value
    if isinstance(value, (list, tuple)):
        if not value or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in value):
            raise ValueError(bad)
        if len(set(value)) != len(value):
            raise ValueError(bad)
        return tuple(sorted(value))
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) <= 1.0:
        raise ValueError(bad)
    return float(value)


SETTINGS: tuple[dataclasses.Field, ...] = dataclasses.fields(DecodingConfig)
NAMES: tuple[str, ...] = tuple(f.name for f in SETTINGS)
_BY_NAME = {f.name: f for f in SETTINGS}


def check_names(settings) -> None:
    """Raise TypeError naming the first key of ``settings`` that is not a decoding setting."""
    unknown = [k for k in settings if k not in _BY_NAME]
    if unknown:
        raise TypeError(f"unknown setting {unknown[0]!r}; the decoding settings are: {', '.join(NAMES)}")


def canonical(name: str, value):
    """``value`` of setting ``name`` under its current name: an old spelling (an alias, such as the pruning
    ``"specvlm"`` for ``"verifier_guided"`` or the tree ``"specvlm-25"`` for ``"reference-25"``) gives the
    name it stands for; any other value is returned unchanged (validation is :class:`DecodingConfig`'s)."""
    convert = _BY_NAME[name].metadata["canonical"]
    return value if convert is None else convert(value)


def allowed(name: str) -> tuple | None:
    """The allowed values of setting ``name``, or ``None`` when any value of its type may do."""
    choices = _BY_NAME[name].metadata["choices"]
    return tuple(choices()) if callable(choices) else choices


def applies_to(method: str) -> tuple[str, ...]:
    """The settings an evaluation method entry may set: those that change ``method``, per method."""
    return tuple(f.name for f in SETTINGS if method in f.metadata["methods"] and f.metadata["scope"] == "method")


def describe() -> str:
    """One line per setting (name, default, help, choices), for docstrings and help text."""
    lines = []
    for f in SETTINGS:
        choices = allowed(f.name)
        extra = f" (one of {', '.join(map(str, choices))})" if choices and f.name != "tree" else ""
        lines.append(f"    {f.name} = {f.default!r}: {f.metadata['help']}{extra}")
    return "\n".join(lines)


def parse(name: str, text: str):
    """The value of setting ``name`` from command-line text (an old spelling gives the current name)."""
    f = _BY_NAME[name]
    if f.metadata["parse"] is not None:
        return canonical(name, f.metadata["parse"](text))
    kind = type(f.default)
    if kind is str:
        return canonical(name, text)
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} must be {'an int' if kind is int else 'a number'}") from None
