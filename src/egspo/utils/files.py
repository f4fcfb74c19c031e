"""Plain-file I/O shared by every stage: JSONL rows in, JSON / JSONL / text / whole directories out.

Every write is atomic and durable: the content goes to a temporary file (or ``OUT.tmp`` directory) in the target's
folder, is flushed to disk (``fsync`` of each file, then of the directory), and only then renamed into place, after
which the parent directory is fsynced too. So an interrupted job, or a power loss, never leaves a half-written or
renamed-but-empty output. A full disk raises :class:`~egspo.utils.errors.DiskFullError` naming the target, with the
temporary removed."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from egspo.utils.errors import DiskFullError, is_disk_full

#: a file system with less free space than this after a failed write counts as full (torch's writer reports a full
#: disk only as "file write failed")
_FULL_BELOW_BYTES = 1 << 20


def iter_jsonl_objects(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file; a line that is not UTF-8, not JSON, or not
    a JSON object raises ``error`` naming the file and the line."""
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise error(f"{path}: line {lineno}: not UTF-8 text (byte {raw[exc.start]:#04x} at column "
                            f"{exc.start + 1})") from None
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


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in file ``path``; a missing, empty, non-UTF-8, malformed or non-object file raises
    ValueError naming it (a corrupt metrics file must stop a report, not pass as a number)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file missing")
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _umask_mode() -> int:
    """0o666 minus the process umask: the mode an ordinary open() would give a new file (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file under ``root``, then every directory (deepest first), so the whole tree is on disk."""
    dirs = []
    for folder, _, files in os.walk(root):
        dirs.append(folder)
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for folder in reversed(dirs):
        fsync_dir(folder)


def _reraise_if_full(exc: BaseException, target: Path) -> None:
    """Raise :class:`DiskFullError` for ``target`` when ``exc`` came from a full file system."""
    full = is_disk_full(exc)
    if not full and isinstance(exc, (OSError, RuntimeError)):
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(target.parent).free < _FULL_BELOW_BYTES
    if full:
        raise DiskFullError(target) from exc


def atomic_write_file(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file next to ``path``, fsync it, rename it over ``path`` and fsync the
    folder; on any error the temporary is removed and ``path`` is untouched. The file gets the mode an ordinary
    ``open`` would give it. Every file this package writes goes through here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _reraise_if_full(exc, path)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (:func:`atomic_write_file`)."""
    return atomic_write_file(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically and durably (:func:`atomic_write_file`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Write a directory atomically and durably: fill ``OUT.tmp`` inside the block; then every file in it is fsynced
    and it replaces ``OUT`` (an existing ``OUT`` is moved aside and deleted only after the new one is in place), and
    the parent is fsynced. On error ``OUT.tmp`` is removed and ``OUT`` is untouched."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        fsync_tree(tmp)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _reraise_if_full(exc, out)
        raise
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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


__all__ = ["atomic_output_dir", "atomic_write_bytes", "atomic_write_file", "atomic_write_text", "fsync_dir", "fsync_tree",
           "iter_jsonl_objects", "read_json_object", "read_jsonl", "strict_json", "write_json_atomic", "write_jsonl_atomic"]
