"""An experiment's raw data: a YAML file read as a mapping, ``--set key=value`` overrides applied to it,
benchmark entries selected by label.

What this module deliberately does not do: validate the result (:class:`specvlm_eval.config.EvalConfig`
does), or write files.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from specvlm_eval.config_values import ConfigError


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
