"""math-verify (and the sympy it runs) under a hard time bound, from any thread.

math-verify bounds itself with ``signal.alarm``: that works only in the main thread, and even there a signal cannot
stop one long C-level integer operation (``parse`` of ``9^{9^{9}}`` computes the power). Every check therefore runs
in one long-lived worker process, ``python -m egspo.tasks.verify_worker`` (a plain subprocess: it never re-imports the
caller's main module, as multiprocessing's spawn would), which imports math-verify once and answers one JSON request
per line. The caller waits at most ``timeout_s`` for the answer; a check that has not finished by then is "not
equivalent", and its worker is killed and replaced by a fresh one on the next call. Inside the worker, math-verify's
own alarms stay on as a first, softer bound.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading

_lock = threading.Lock()
_worker: subprocess.Popen | None = None
READY = "ready"


def _serve() -> None:
    """The worker: ``{"gold", "prediction", "timeout"}`` per stdin line, ``true`` / ``false`` per stdout line."""
    from math_verify import parse, verify

    print(json.dumps(READY), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        inner = request["timeout"]
        try:
            gold = parse(f"\\boxed{{{request['gold']}}}", parsing_timeout=inner)
            pred = parse(f"\\boxed{{{request['prediction']}}}", parsing_timeout=inner)
            ok = bool(gold and pred and verify(gold, pred, timeout_seconds=inner))
        except Exception:  # noqa: BLE001 - any math-verify/sympy failure is "not equivalent"
            ok = False
        print(json.dumps(ok), flush=True)


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str | None:
    """One line of the worker's stdout within ``timeout_s`` (None on timeout or end of file)."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        return None
    line = proc.stdout.readline()
    return line or None


def _stop() -> None:
    global _worker
    if _worker is not None:
        proc, _worker = _worker, None
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            stream.close()


def _start(start_timeout_s: float) -> subprocess.Popen | None:
    """A fresh worker that has imported math-verify, or None when it is not ready within ``start_timeout_s``."""
    global _worker
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    _worker = subprocess.Popen([sys.executable, "-m", "egspo.tasks.verify_worker"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, encoding="utf-8",
                               errors="backslashreplace", env=env)
    line = _read_line(_worker, start_timeout_s)
    if line is not None and json.loads(line) == READY:
        return _worker
    _stop()
    return None


def verify_equivalent(gold: str, prediction: str, timeout_s: float, *, start_timeout_s: float = 120.0) -> bool:
    """``math_verify.verify(parse("\\boxed{gold}"), parse("\\boxed{prediction}"))`` computed in the worker; False when
    it takes longer than ``timeout_s`` (the worker is then killed), or the worker fails. A new worker first gets up
    to ``start_timeout_s`` to import math-verify and sympy."""
    with _lock:
        if _worker is None or _worker.poll() is not None:
            _stop()
            if _start(start_timeout_s) is None:
                return False
        request = {"gold": gold, "prediction": prediction, "timeout": max(1, int(timeout_s))}
        try:
            _worker.stdin.write(json.dumps(request) + "\n")
            _worker.stdin.flush()
            line = _read_line(_worker, timeout_s)
        except (OSError, ValueError):
            line = None
        if line is None:
            _stop()
            return False
        return bool(json.loads(line))


def shutdown() -> None:
    """Stop the worker (a later call starts a new one)."""
    with _lock:
        _stop()


if __name__ == "__main__":
    _serve()
