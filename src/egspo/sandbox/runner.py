"""Isolated execution of untrusted generated code (HumanEval / MBPP / KodCode grading): the public API.

Every program runs in a fresh interpreter started by a small launcher (``launcher.py``, a script) that execs the
harness (``harness.py``) in the sandbox; nothing of the child ever raises in the caller. ``isolation_mode()`` says
which isolation this machine gets (``namespace`` or ``basic``); docs/sandbox.md describes both, the completion
protocol (a per-run nonce; ``sys.exit(0)`` never passes), the fresh references the tests run with, and the limits.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Sequence

from egspo.sandbox.process import run_one
from egspo.sandbox.program import (
    DEFAULT_MAX_FILE_MB,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_PROCS,
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TMPFS_MB,
    STATUSES,
    Limits,
    Program,
    SandboxResult,
)

_mode_lock = threading.Lock()
_detected_mode: str | None = None


def isolation_mode() -> str:
    """``"namespace"`` when a trivial program passes in namespace mode on this machine, else ``"basic"``
    (probed once per process)."""
    global _detected_mode
    with _mode_lock:
        if _detected_mode is None:
            probe = run_one(Program("import sys\nsys.stdout.write('ok')"), Limits(timeout_s=20, isolation="namespace"),
                            "namespace")
            _detected_mode = "namespace" if probe.passed and probe.stdout_tail == "ok" else "basic"
        return _detected_mode


def run_program(code: str | Program, *, tests: Sequence[str] | None = None, test_setup: str = "",
                entry_points: Sequence[str] = (), test_module: str | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB,
                max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, max_procs: int = DEFAULT_MAX_PROCS,
                max_file_mb: int = DEFAULT_MAX_FILE_MB, tmpfs_mb: int = DEFAULT_TMPFS_MB,
                isolation: str = "auto") -> SandboxResult:
    """Run one untrusted program (see ``Program``) in the sandbox and return its ``SandboxResult``.

    Bad arguments raise ``ValueError``; nothing the program does raises here."""
    program = code if isinstance(code, Program) else Program(
        code, tuple(tests) if tests is not None else None, test_setup, tuple(entry_points), test_module)
    limits = Limits(timeout_s, memory_mb, max_output_bytes, max_procs, max_file_mb, tmpfs_mb, isolation)
    return _run_safely(program, limits)


def _run_safely(program: Program, limits: Limits) -> SandboxResult:
    try:
        mode = isolation_mode() if limits.isolation == "auto" else limits.isolation
        return run_one(program, limits, mode)
    except Exception as exc:  # noqa: BLE001
        return SandboxResult(False, "sandbox_error", "", "", 0.0, detail=f"{type(exc).__name__}: {exc}")


def run_many(programs: Sequence[str | Program], max_workers: int | None = None, *,
             timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB,
             max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, max_procs: int = DEFAULT_MAX_PROCS,
             max_file_mb: int = DEFAULT_MAX_FILE_MB, tmpfs_mb: int = DEFAULT_TMPFS_MB,
             isolation: str = "auto") -> list[SandboxResult]:
    """Run many programs in parallel (a thread pool, each thread drives one sandboxed process); results in input
    order. ``max_workers`` defaults to the number of CPUs."""
    if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)
                                    or max_workers < 1):
        raise ValueError(f"max_workers must be a positive int, got {max_workers!r}")
    items = [p if isinstance(p, Program) else Program(p) for p in programs]
    limits = Limits(timeout_s, memory_mb, max_output_bytes, max_procs, max_file_mb, tmpfs_mb, isolation)
    if not items:
        return []
    if limits.isolation == "auto":
        isolation_mode()  # probe once, outside the pool
    workers = min(len(items), max_workers or os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda p: _run_safely(p, limits), items))


__all__ = ["Limits", "Program", "SandboxResult", "STATUSES", "isolation_mode", "run_many", "run_program"]
