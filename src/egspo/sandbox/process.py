"""One sandboxed run: stage the job, start the launcher, stream its outputs under the wall-clock deadline and the
output cap, kill it when needed, and interpret what came back. Nothing raises to the caller."""

from __future__ import annotations

import marshal
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from egspo.sandbox import launcher
from egspo.sandbox.fs_view import view_for
from egspo.sandbox.isolation import allocate_uid, needed_paths, reachable_by, release_uid
from egspo.sandbox.program import Limits, Program, SandboxResult, preload_modules
from egspo.sandbox.protocol import OutputTail, interpret

RESULT_CAP_BYTES = 1 << 20
LAUNCHER_PATH = launcher.__file__
HARNESS_SOURCE = (Path(__file__).parent / "harness.py").read_text(encoding="utf-8")


def _terminate(proc: subprocess.Popen) -> None:
    """Ask the launcher to kill the sandbox (it knows how), then make sure with SIGKILL to its process group."""
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=2.0)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(path: str) -> None:
    def retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        except OSError:
            pass
        func(p)

    shutil.rmtree(path, onerror=retry)


def _imports(program: Program, preload: list[str]) -> tuple[str, ...]:
    """The modules the harness imports before the candidate (pytest too for a pytest module)."""
    extra = ("pytest", "_pytest.config") if program.mode == "pytest" else ()
    return tuple(sorted({*preload, *extra}))


def run_one(program: Program, limits: Limits, mode: str) -> SandboxResult:
    """Run ``program`` once in isolation ``mode`` ("namespace" | "basic"); every failure is a SandboxResult."""
    start = time.monotonic()
    is_root = os.geteuid() == 0
    uid = gid = None
    if is_root:
        uid = allocate_uid()
        gid = uid
        if mode == "basic" and not reachable_by(uid, needed_paths()):
            # The interpreter is unreadable for other uids and namespaces are unavailable: the program would run
            # as root with nothing between it and the caller's files. Refuse instead of running it.
            release_uid(uid)
            return SandboxResult(False, "sandbox_error", "", "", time.monotonic() - start,
                                 detail="refused: running as root without namespaces, and the interpreter "
                                        f"({sys.executable}) is not readable by an unprivileged uid")
    staging = tempfile.mkdtemp(prefix="egspo-sandbox-")
    fds: list[int] = []
    proc = None
    try:
        job = {"mode": program.mode, "code": program.code, "tests": list(program.tests or ()),
               "test_setup": program.test_setup, "entry_points": list(program.entry_points),
               "test_module": program.test_module, "preload": preload_modules(program)}
        job_path = os.path.join(staging, "job.bin")
        with open(job_path, "wb") as f:
            marshal.dump(job, f)
        result_r, result_w = os.pipe()
        nonce_r, nonce_w = os.pipe()
        control_r, control_w = os.pipe()
        fds += [result_r, result_w, nonce_r, nonce_w, control_r, control_w]
        nonce = secrets.token_hex(16).encode()
        os.write(nonce_w, nonce + b"\n")
        os.close(nonce_w)
        fds.remove(nonce_w)
        cfg = {"mode": mode, "uid": uid, "gid": gid, "caller_uid": os.getuid(), "caller_gid": os.getgid(),
               "staging": staging, "python": sys.executable, "harness_source": HARNESS_SOURCE,
               "result_fd": result_w, "nonce_fd": nonce_r, "control_fd": control_w,
               "fs_view": view_for(_imports(program, job["preload"])) if mode == "namespace" else None,
               "tmpfs_bytes": int(limits.tmpfs_mb) << 20,
               "limits": {"cpu_s": int(math.ceil(limits.timeout_s)) + 1, "as_bytes": int(limits.memory_mb) << 20,
                          "nproc": int(limits.max_procs), "fsize_bytes": int(limits.max_file_mb) << 20}}
        config_path = os.path.join(staging, "launch.bin")
        with open(config_path, "wb") as f:
            marshal.dump(cfg, f)
        if uid is not None and mode == "basic":
            os.chown(staging, uid, gid)
            os.chown(job_path, uid, gid)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", LAUNCHER_PATH, config_path],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={},
            pass_fds=(result_w, nonce_r, control_w), start_new_session=True, close_fds=True)
        for fd in (result_w, nonce_r, control_w):
            os.close(fd)
            fds.remove(fd)
        return _collect(proc, result_r, control_r, nonce, program, limits, start)
    except Exception as exc:  # noqa: BLE001 - the caller never sees an exception from a run
        if proc is not None and proc.poll() is None:
            _terminate(proc)
        return SandboxResult(False, "sandbox_error", "", "", time.monotonic() - start,
                             detail=f"{type(exc).__name__}: {exc}")
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if proc is not None:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        _remove_tree(staging)
        release_uid(uid)


def _collect(proc, result_r, control_r, nonce, program, limits, start) -> SandboxResult:
    out, err, results, control = OutputTail(), OutputTail(), bytearray(), bytearray()
    sel = selectors.DefaultSelector()
    sinks = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, result_r: results, control_r: control}
    for fd in sinks:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    deadline = start + limits.timeout_s
    timed_out = overflow = False
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 1.0:
                break  # the launcher is gone and killed the rest; stop waiting for stray writers
            for key, _ in sel.select(timeout=min(0.1, deadline - now)):
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(key.fd)
                    continue
                sink = sinks[key.fd]
                if isinstance(sink, OutputTail):
                    sink.add(data)
                elif len(sink) < RESULT_CAP_BYTES:
                    sink += data
                if out.total + err.total > limits.max_output_bytes:
                    overflow = True
            if overflow:
                break
    finally:
        sel.close()
    if timed_out or overflow or proc.poll() is None:
        _terminate(proc)
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # drain what the launcher wrote last (its exit status line)
    for fd, sink in ((control_r, control), (result_r, results)):
        try:
            while chunk := os.read(fd, 65536):
                if len(sink) < RESULT_CAP_BYTES:
                    sink += chunk
        except (BlockingIOError, OSError):
            pass
    duration = time.monotonic() - start
    return interpret(program, nonce, results, control, out, err, timed_out, overflow, duration)

