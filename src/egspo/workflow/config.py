"""The workflow's configuration: command-line scalars typed, the selected preset merged with the top-level
overrides, and the cross-field rules a JSON schema cannot express (each error names the config key)."""

from __future__ import annotations

import copy
import re
from typing import Any

RESERVED_COMMON_KEYS = ("preset", "presets")

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?")


class ConfigError(ValueError):
    """A configuration the workflow cannot run; the message names the config key."""


def typed_scalar(text: str) -> Any:
    """'3' -> 3, '2e-4' -> 0.0002, 'true'/'false' -> bool, 'null'/'~' -> None; anything else unchanged.

    `snakemake --config seeds='[0]' 'rl={lr: 2e-4}'` parses nested values with YAML's BaseLoader, which keeps every
    scalar a string; this turns such strings back into the numbers, booleans and nulls they spell."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~"):
        return None
    return text


def coerce_cli_scalars(node: dict | list) -> dict | list:
    """Apply `typed_scalar` to every string value and list item of a nested config, in place; returns `node`."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        if isinstance(value, str):
            node[key] = typed_scalar(value)
        elif isinstance(value, (dict, list)):
            coerce_cli_scalars(value)
    return node


def deep_merge(base: dict, override: dict) -> dict:
    """`override` merged into a copy of `base`: mappings merge key by key, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def effective_config(raw: dict) -> dict:
    """The selected preset (`preset`) with every top-level key other than `preset` / `presets` deep-merged over it."""
    name = raw["preset"]
    if name not in raw["presets"]:
        raise ConfigError(f"config key 'preset': {name!r} is not a block of 'presets' "
                          f"(have: {', '.join(sorted(raw['presets']))})")
    overrides = {k: v for k, v in raw.items() if k not in RESERVED_COMMON_KEYS}
    return deep_merge(raw["presets"][name], overrides)
