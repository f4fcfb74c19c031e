"""One writer per output: a command that writes an output (a run directory, a model directory, a file) holds an
exclusive lock on it for its whole run, so a second command writing the same output fails at once instead of
interleaving rows or deleting the first one's checkpoints.

The lock is ``fcntl.flock`` on ``PARENT/.NAME.lock``, a file next to the output ``PARENT/NAME`` (not inside it, so it
survives the output being replaced by an atomic rename or deleted by Snakemake before a rerun). The lock file holds
the holder's pid, host, start time and command line as JSON; the kernel releases the lock when the holder dies, so
a lock left by a dead process is taken over, with a warning naming it. A clean release deletes the lock file (and
the folders the lock created, if still empty); so that two processes can never hold two different files of the same
name, a process that got the lock checks that its file is still the one at the path, and retries otherwise.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from egspo.utils.errors import UserError


class OutputLocked(UserError):
    """Another live process holds the lock of an output; the message names it (pid, host, start time)."""


def lock_file_of(output: str | os.PathLike) -> Path:
    """The lock file of ``output``: ``.NAME.lock`` in the output's folder."""
    output = Path(os.path.abspath(output))
    return output.parent / f".{output.name}.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('started', '?')} "
            f"({holder.get('command', '?')})")


def _read_holder(handle) -> dict:
    handle.seek(0)
    text = handle.read()
    try:
        holder = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


class OutputLock:
    """Exclusive, non-blocking lock of one output for the lifetime of a ``with`` block (or acquire / release)."""

    def __init__(self, output: str | os.PathLike, command: str | None = None):
        self.output = Path(output)
        self.path = lock_file_of(output)
        self.command = command or " ".join(["egspo", *sys.argv[1:]])[:300]
        self._handle = None
        self._created_dirs: list[Path] = []

    def acquire(self) -> OutputLock:
        """Take the lock or raise :class:`OutputLocked`; a folder that cannot be written raises UserError naming it
        (this is also the check that the output location is writable, before any model work)."""
        if self.output.is_dir() and not os.access(self.output, os.W_OK | os.X_OK):
            raise UserError(f"cannot write the output {self.output}: the directory is not writable")
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        for _ in range(100):
            handle = self._open()
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(handle)
                handle.close()
                self._refuse(exc, holder)
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()  # the previous holder deleted the file between our open and our lock: use the new one
        else:
            raise UserError(f"could not lock {self.path}: it kept being replaced")
        stale = _read_holder(handle)
        if stale:
            print(f"egspo: warning: taking over the lock of {self.output} left by {_describe(stale)}, which is no "
                  f"longer running", file=sys.stderr)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "command": self.command}
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        self._handle = handle
        self._created_dirs = missing
        return self

    def _open(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write the output {self.output}: {exc.strerror or exc} "
                            f"({exc.filename or self.path.parent})") from None

    def _refuse(self, exc: OSError, holder: dict) -> None:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise UserError(f"cannot lock {self.path}: {exc.strerror}") from None
        note = ""
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                and not _pid_alive(holder["pid"]):
            note = "; that process has exited, but a child it started still holds the lock"
        raise OutputLocked(f"{self.output} is being written by another process: {_describe(holder)}{note}. "
                           f"Wait for it or stop it (lock file {self.path})") from None

    def release(self) -> None:
        """Delete the lock file (while still holding it), unlock, and remove the folders acquire created if empty."""
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None
        for folder in self._created_dirs:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


@contextlib.contextmanager
def hold_output_locks(outputs: Iterable[str | os.PathLike], command: str | None = None) -> Iterator[list[OutputLock]]:
    """Lock every output (duplicates once, in sorted order) for the block; any refusal releases those taken."""
    with contextlib.ExitStack() as stack:
        unique = sorted({os.path.abspath(o) for o in outputs})
        yield [stack.enter_context(OutputLock(o, command)) for o in unique]


__all__ = ["OutputLock", "OutputLocked", "hold_output_locks", "lock_file_of"]
