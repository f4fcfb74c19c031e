"""Sandbox uids (one fresh unprivileged uid per concurrent run as root) and the interpreter's directories."""

from __future__ import annotations

import os
import secrets
import sys
import threading
from collections.abc import Sequence

from egspo.sandbox.launcher import traversable

UID_BASE = 2_000_000_000  # sandbox uids: unused by any account; one fresh uid per concurrent run
UID_SPAN = 1 << 24

_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def allocate_uid() -> int:
    """A random sandbox uid not used by another run of this process."""
    with _uid_lock:
        while True:
            uid = UID_BASE + secrets.randbelow(UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def release_uid(uid: int | None) -> None:
    """Return ``uid`` to the pool (None: nothing to do)."""
    if uid is not None:
        with _uid_lock:
            _uids_in_use.discard(uid)


def needed_paths() -> list[str]:
    """Directories the sandboxed interpreter must read: its installation, the venv, site-packages."""
    import site

    paths = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable))}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    for p in site.getsitepackages():
        paths.add(os.path.realpath(p))
    existing = sorted(p for p in paths if os.path.exists(p) and p != "/")
    # keep only the outermost of nested paths
    return [p for p in existing if not any(p != q and p.startswith(q + "/") for q in existing)]


def reachable_by(uid: int, paths: Sequence[str]) -> bool:
    """Whether ``uid`` can traverse every ancestor of every path (to run the interpreter without namespaces)."""
    for path in paths:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            if not traversable("/" + "/".join(parts[:depth]), uid, uid):
                return False
    return True


_mode_lock = threading.Lock()
_detected_mode: str | None = None
