"""What one configuration value must be: :class:`ConfigError` and the checks every section uses.

Each check (an integer with a minimum, a positive number, one of some choices, a non-empty string, a boolean,
a mapping with only known keys) raises :class:`ConfigError` naming the key as a dotted path and what is
allowed; ``_plain`` turns tuples back into lists for YAML and JSON.

What this module deliberately does not do: know any section or setting (:mod:`specvlm_eval.config_sections`,
:mod:`specvlm_eval.config_methods`), or read files.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any


class ConfigError(ValueError):
    """A configuration key or value is not valid; the message names it and what is allowed."""


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
