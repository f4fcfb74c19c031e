# Typed command-line overrides. `snakemake --config seeds='[0]' 'rl={lr: 2e-4}'` parses nested values with YAML's
# BaseLoader, which keeps every scalar a string ('0', '2e-4'); this turns such strings back into the numbers,
# booleans and nulls they spell, before the config is validated. Strings that spell nothing else stay strings.

import re

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?")


def typed_scalar(text):
    """'3' -> 3, '2e-4' -> 0.0002, 'true'/'false' -> bool, 'null'/'~' -> None; anything else unchanged."""
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


def coerce_cli_scalars(node):
    """Apply `typed_scalar` to every string value and list item of a nested config, in place; returns `node`."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        if isinstance(value, str):
            node[key] = typed_scalar(value)
        elif isinstance(value, (dict, list)):
            coerce_cli_scalars(value)
    return node
