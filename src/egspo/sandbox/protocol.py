"""The caller's side of the completion protocol: keep output tails, and turn the harness's nonce-tagged result lines
and the launcher's wait status into a :class:`SandboxResult`."""

from __future__ import annotations

import os
import signal

from egspo.sandbox.program import SandboxResult

TAIL_BYTES = 4096


class OutputTail:
    """The last :data:`TAIL_BYTES` of a stream, and its total length."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.buf += data
        if len(self.buf) > 2 * TAIL_BYTES:
            del self.buf[: len(self.buf) - TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.buf[-TAIL_BYTES:]).decode("utf-8", errors="replace")


def output_total(out: OutputTail, err: OutputTail) -> int:
    return out.total + err.total


def interpret(program, nonce, results, control, out, err, timed_out, overflow, duration) -> SandboxResult:
    """``passed`` iff the ``done`` line with the nonce was seen, every expected test passed, the exit code is 0 and no
    limit was hit; otherwise the first matching status of output_limit, timeout, sandbox_error, oom, crashed, failed,
    error."""
    tests: dict[int, bool] = {}
    outcomes: list[str] = []
    done = False
    total = None
    error = None
    for line in bytes(results).splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != nonce:
            continue  # not from the harness (or forged without the nonce)
        event = parts[1].decode(errors="replace")
        if event == "test" and len(parts) >= 5 and parts[2].isdigit():
            index = int(parts[2])
            tests[index] = tests.get(index, True) and parts[3] == b"1"
            outcomes.append(parts[4].decode(errors="replace"))
        elif event == "total" and len(parts) >= 3 and parts[2].isdigit():
            total = int(parts[2])
        elif event == "error" and len(parts) >= 4:
            error = f"{parts[2].decode(errors='replace')}: {parts[3].decode(errors='replace')}"
            outcomes.append(parts[3].decode(errors="replace"))
        elif event == "done":
            done = True
    expected = len(program.tests) if program.tests is not None else total if program.test_module is not None else 1
    expected = expected or 0
    n_passed = sum(1 for i, ok in tests.items() if ok and 0 <= i < expected)
    returncode = signum = None
    setup_error = None
    for line in bytes(control).decode(errors="replace").splitlines():
        if line.startswith("exit "):
            raw = int(line.split()[1])
            if os.WIFEXITED(raw):
                returncode = os.WEXITSTATUS(raw)
            elif os.WIFSIGNALED(raw):
                signum = os.WTERMSIG(raw)
                returncode = -signum
        elif line.startswith("error "):
            setup_error = line[6:]
    passed = (done and returncode == 0 and expected > 0 and n_passed == expected and not timed_out and not overflow)
    if passed:
        status = "passed"
    elif overflow:
        status = "output_limit"
    elif timed_out or signum in (signal.SIGXCPU,):
        status = "timeout"
    elif setup_error is not None:
        status = "sandbox_error"
    elif "MemoryError" in outcomes:
        status = "oom"
    elif signum is not None:
        status = "crashed"
    elif done:
        status = "failed"
    else:
        status = "error"
    if overflow:
        detail = f"output exceeded {output_total(out, err)} bytes"
    elif timed_out:
        detail = "wall-clock timeout"
    else:
        detail = setup_error or error or ("" if done or passed else
                                          f"exited before the tests finished (returncode {returncode})")
    return SandboxResult(passed, status, out.text(), err.text(), duration, returncode,
                         n_passed, expected, detail)
