"""Stage settings defined once: a dataclass per stage whose fields carry their help text, allowed values and range
(``setting(...)``, as TRL's configs do with field metadata); the stage's argparse flags, the value checks and the
YAML-schema fragment of its config.yaml block are all derived from those fields.

A field's ``config`` says where config.yaml sets it: the stage's own block (``"rl"``: also ``methods.<m>`` and
``task_settings.<t>.rl``; ``"sft"``), a key of another block (``"model.dtype"``, ``"model.lora.r"``), ``"workflow"``
(the workflow fills it in: paths, seed, style) or None (command line only; the help says why).

``validate_rl(settings)`` checks a merged ``rl`` + ``task_settings`` + ``methods`` mapping with the same code
`egspo rl` runs (`egspo.rl.config.RLConfig.validate`); the workflow calls it before any job starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

MISSING = dataclasses.MISSING
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def setting(default: Any = MISSING, *, help: str, choices: Sequence | Callable[[], Sequence] | None = None,
            minimum: float | None = None, maximum: float | None = None, exclusive_minimum: float | None = None,
            exclusive_maximum: float | None = None, config: str | None = None) -> Any:
    """A dataclass field with its help text, allowed values (a sequence, or a function returning one for registries
    filled at run time) or numeric range (of each item, for a ``list[int]`` / ``list[float]`` field), and where
    config.yaml sets it (see the module docstring). A list default is copied for each instance."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum,
            "exclusive_minimum": exclusive_minimum, "exclusive_maximum": exclusive_maximum, "config": config}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def default_of(f: dataclasses.Field) -> Any:
    """The field's default value (MISSING for a required field)."""
    return f.default_factory() if f.default_factory is not MISSING else f.default


def field_type(f: dataclasses.Field) -> tuple[type, bool]:
    """(type, whether None is allowed) of a field annotated ``int``, ``float``, ``str``, ``bool``, ``list[int]``,
    ``list[float]``, or one of these ``| None``; the type of a list field is its items' type (see `is_list`)."""
    text = f.type if isinstance(f.type, str) else f.type.__name__
    parts = [p.strip() for p in text.split("|")]
    optional = "None" in parts
    names = [p.removeprefix("list[").removesuffix("]") for p in parts if p != "None"]
    if len(names) != 1 or names[0] not in _TYPES:
        raise TypeError(f"setting {f.name!r}: unsupported annotation {text!r}")
    return _TYPES[names[0]], optional


def is_list(f: dataclasses.Field) -> bool:
    """Whether the field holds a non-empty list (``list[int]`` / ``list[float]``)."""
    return "list[" in (f.type if isinstance(f.type, str) else "")


def choices_of(f: dataclasses.Field) -> tuple | None:
    """The allowed values of a field (None: any value of its type)."""
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def settings_fields(cls) -> list[dataclasses.Field]:
    """The fields of a settings dataclass (each made with `setting`)."""
    fields = dataclasses.fields(cls)
    for f in fields:
        if "help" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with egspo.settings.setting")
    return list(fields)


def config_fields(cls, block: str) -> list[dataclasses.Field]:
    """Fields that config.yaml sets in ``block`` (``"rl"``, ``"sft"``)."""
    return [f for f in settings_fields(cls) if f.metadata["config"] == block]


# ---- values ----------------------------------------------------------------------------------------------------------


def check_values(obj) -> None:
    """ValueError naming the first field of ``obj`` whose value has the wrong type, is not an allowed value, or lies
    outside its range (NaN and infinities are out of every range)."""
    for f in settings_fields(type(obj)):
        value = getattr(obj, f.name)
        base, optional = field_type(f)
        if value is None:
            if optional:
                continue
            if default_of(f) is MISSING:
                raise ValueError(f"{f.name} is required")
            raise ValueError(f"{f.name} must be a {base.__name__}, got None")
        if is_list(f):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{f.name} must be a non-empty list of {base.__name__}, got {value!r}")
            for item in value:
                _check_value(f, base, item, f"{f.name} item")
        else:
            _check_value(f, base, value, f.name)


def _check_value(f: dataclasses.Field, base: type, value: Any, name: str) -> None:
    ok = isinstance(value, base) and not (base is not bool and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise ValueError(f"{name} must be a {base.__name__}, got {value!r}")
    allowed = choices_of(f)
    if allowed is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if base in (int, float) and not _in_range(f, value):
        raise ValueError(f"{name} is out of range {range_text(f)}: {value!r}")


def _in_range(f: dataclasses.Field, value: float) -> bool:
    m = f.metadata
    if not math.isfinite(value):
        return False
    return ((m["minimum"] is None or value >= m["minimum"]) and (m["maximum"] is None or value <= m["maximum"])
            and (m["exclusive_minimum"] is None or value > m["exclusive_minimum"])
            and (m["exclusive_maximum"] is None or value < m["exclusive_maximum"]))


def range_text(f: dataclasses.Field) -> str:
    """The field's range in words, e.g. ``[0, 1)``; "" when unbounded."""
    m = f.metadata
    low = f"[{m['minimum']}" if m["minimum"] is not None else \
        f"({m['exclusive_minimum']}" if m["exclusive_minimum"] is not None else None
    high = f"{m['maximum']}]" if m["maximum"] is not None else \
        f"{m['exclusive_maximum']})" if m["exclusive_maximum"] is not None else None
    if low is None and high is None:
        return ""
    return f"{low or '(-inf'}, {high or 'inf)'}"


def from_mapping(cls, values: Mapping[str, Any], where: str, **fixed: Any):
    """``cls(**values, **fixed)`` with unknown and missing keys reported as ``where: ... 'key'``."""
    fields = settings_fields(cls)
    names = {f.name for f in fields}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(names))})")
    missing = [f.name for f in fields if default_of(f) is MISSING and f.name not in values and f.name not in fixed]
    if missing:
        raise ValueError(f"{where}: missing required setting {missing[0]!r}")
    return cls(**{**values, **fixed})


# ---- command line ----------------------------------------------------------------------------------------------------


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _comma_list(parse: Callable[[str], Any]) -> Callable[[str], list]:
    def parse_list(text: str) -> list:
        try:
            return [parse(x) for x in text.split(",") if x.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}") from exc

    return parse_list


def _optional(parse: Callable[[str], Any], none_words: tuple[str, ...]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() in none_words else parse(text)

    return parse_optional


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field (``--name-with-dashes``, dest the field name): type, choices, default and help from the
    field. Booleans take an optional true/false (bare ``--flag`` = true); lists are comma-separated; an optional int
    takes none / 0 for unset, an optional bool none / auto."""
    for f in settings_fields(cls):
        base, optional = field_type(f)
        allowed = choices_of(f)
        kwargs: dict[str, Any] = {"dest": f.name}
        default = default_of(f)
        if default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        words = ("", "none", "null") + (("auto",) if base is bool else ("0",) if base is int else ())
        words = tuple(w for w in words if allowed is None or w not in allowed)  # an allowed value stays a value
        parse = _comma_list(base) if is_list(f) else base
        if base is bool:
            kwargs.update(type=_optional(parse_bool, words) if optional else parse_bool, nargs="?", const=True)
        else:
            kwargs["type"] = _optional(parse, words) if optional else parse
        if allowed is not None and base is str and not is_list(f):
            kwargs["choices"] = allowed
        rng = range_text(f)
        shown = "" if default is MISSING else f" (default {default!r})"
        kwargs["help"] = f.metadata["help"] + (f"; range {rng}" if rng else "") + shown
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def from_namespace(cls, args: argparse.Namespace):
    """The settings object of parsed flags (attributes that are not fields are ignored)."""
    names = {f.name for f in settings_fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


# ---- JSON schema -----------------------------------------------------------------------------------------------------


def property_schema(f: dataclasses.Field) -> dict[str, Any]:
    """The JSON-schema of one field's config.yaml value."""
    base, optional = field_type(f)
    allowed = choices_of(f)
    if allowed is not None:
        schema: dict[str, Any] = {"enum": list(allowed)}
    else:
        schema = {"type": {int: "integer", float: "number", str: "string", bool: "boolean"}[base]}
        if base is str:
            schema["minLength"] = 1
        m = f.metadata
        for key, name in (("minimum", "minimum"), ("maximum", "maximum"), ("exclusive_minimum", "exclusiveMinimum"),
                          ("exclusive_maximum", "exclusiveMaximum")):
            if m[key] is not None:
                schema[name] = m[key]
    if is_list(f):
        schema = {"type": "array", "minItems": 1, "items": schema}
    if optional:
        schema = {"oneOf": [{"type": "null"}, schema]}
    return {"description": f.metadata["help"], **schema}


def block_schema(cls, block: str, exclude: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """``properties`` of the config.yaml block ``block``: one entry per field set there (minus ``exclude``)."""
    return {f.name: property_schema(f) for f in config_fields(cls, block) if f.name not in exclude}


# ---- the workflow's entry points -------------------------------------------------------------------------------------


def _placeholders(cls) -> dict[str, str]:
    """Stand-ins for the required settings the workflow fills in per job (paths, names)."""
    return {f.name: "-" for f in settings_fields(cls)
            if default_of(f) is MISSING and f.metadata["config"] == "workflow"}


def validate_rl(settings: Mapping[str, Any], world_size: int = 1, where: str = "rl"):
    """Check merged RL settings (config keys ``rl`` + ``task_settings.<t>.rl`` + ``methods.<m>``) with the checks
    `egspo rl` runs, minus the ones that need the run's files; returns the RLConfig. ValueError naming the key."""
    from egspo.rl.config import RLConfig

    cfg = from_mapping(RLConfig, settings, where, **_placeholders(RLConfig))
    try:
        cfg.validate(world_size, check_files=False)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return cfg


def validate_sft(settings: Mapping[str, Any], where: str = "sft"):
    """Check merged SFT settings (config keys ``sft`` + ``task_settings.<t>.sft``, without the workflow's own
    ``enabled`` / ``data`` / ``seed``) with the checks `egspo sft` runs; returns the SFTConfig."""
    from egspo.sft.config import SFTConfig

    cfg = from_mapping(SFTConfig, settings, where, **{**_placeholders(SFTConfig), "task": "-"})
    try:
        cfg.validate()
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return cfg


__all__ = ["add_arguments", "block_schema", "check_values", "choices_of", "config_fields", "default_of",
           "field_type", "from_mapping", "from_namespace", "is_list", "parse_bool", "property_schema", "range_text",
           "setting", "settings_fields", "validate_rl", "validate_sft"]
