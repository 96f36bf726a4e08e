"""The methods of an experiment: a method entry with its decoding settings and sweep, and each resolved
:class:`MethodSpec` with its stable result key (``specvlm[pruning=verifier_guided,drop_rate=0.9,tree=chain]``).

Each method accepts only the decoding settings it uses, from the core's one definition (``specvlm.config``);
old spellings of setting values (``pruning: specvlm``, ``tree: specvlm-25``) become the current names, and
every sweep combination is validated by ``specvlm.DecodingConfig`` itself, so the eval harness and the core agree.

What this module deliberately does not do: run a method (:mod:`specvlm_eval.methods`), or know the other
sections of an experiment.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from specvlm import config as decoding
from specvlm_eval.config_values import ConfigError, _choice, _int, _plain

METHOD_NAMES = ("ar", "sd", "specvlm", "hf-assisted")
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
