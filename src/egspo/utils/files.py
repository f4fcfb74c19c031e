"""Plain-file I/O shared by every stage: JSONL rows in, JSON / JSONL / text out, always written atomically (a
temporary file in the target's folder, then ``os.replace``), so an interrupted job never leaves a half-written
output behind."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def iter_jsonl_objects(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file; a line that is not JSON, or not a JSON
    object, raises ``error`` naming the file and the line."""
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}: line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise error(f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines skipped); a missing file, malformed line, non-object line or an empty file
    raises ValueError naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    rows = [row for _, row in iter_jsonl_objects(path)]
    if not rows:
        raise ValueError(f"data file {str(path)!r} has no rows")
    return rows


def _umask_mode() -> int:
    """0o666 minus the process umask: the mode an ordinary open() would give a new file (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(value: Any) -> Any:
    """Strict-JSON form of ``value``: non-finite floats become the strings "inf" / "-inf" / "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """One strict-JSON object per line (non-finite floats as strings, other objects via ``str``)."""
    atomic_write_text(path, "".join(json.dumps(strict_json(row), ensure_ascii=False, allow_nan=False, default=str)
                                    + "\n" for row in rows))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


__all__ = ["atomic_write_text", "read_jsonl", "strict_json", "write_json_atomic", "write_jsonl_atomic"]
