"""Isolated execution of untrusted generated code (HumanEval / MBPP / KodCode grading).

Every program runs in a fresh interpreter started by a small *launcher*; nothing of the child ever raises in the
caller. Isolation, strongest first (``isolation_mode()`` says which one this machine gets):

``namespace`` (root, or a user with unprivileged user namespaces)
    new PID, mount, network, IPC and UTS namespaces; the whole file system re-mounted read-only; private tmpfs on
    ``/tmp``, ``/var/tmp``, ``/dev/shm`` (the working directory lives in it and vanishes with the namespace); a fresh
    ``/proc`` that shows only the sandbox's processes; no network interface but a loopback that is down. As root
    the child also drops to a fresh unprivileged uid (so RLIMIT_NPROC is enforced: it is ignored for uid 0), and
    directories such as ``/root`` that the uid could not traverse are replaced by an empty tmpfs exposing only the
    interpreter's own directories. Killing the launcher kills the namespace's init, hence every process in it.
``basic`` (no namespaces)
    as root: a fresh unprivileged uid when the interpreter is reachable for it, and every process of that uid is
    killed afterwards; as a plain user: the caller's uid, a child sub-reaper that kills leftover descendants. The
    working directory is a fresh temporary directory removed afterwards. Sockets are refused by an audit hook.

Always: wall-clock timeout, RLIMIT_CPU / AS / NPROC / FSIZE / CORE, an empty environment, stdin from
``/dev/null``, stdout/stderr read incrementally with a byte cap (killed on overflow; only tails are kept), new
session, ``PR_SET_NO_NEW_PRIVS``, and an audit hook that refuses socket creation, heap scans (``gc.get_objects``
and friends) and ``sys.settrace`` / ``sys.setprofile`` once the candidate runs.

**Completion protocol.** The parent hands the harness a random per-run nonce through a pipe (read and closed before
the candidate runs). The harness streams ``<nonce> test <i> <ok>`` lines to a dedicated fd and ``<nonce> done`` after
the last test; *passed* = done line seen, every test passed and exit code 0. ``sys.exit(0)`` / ``os._exit(0)`` before
or during the tests therefore never pass.

**Tests run with fresh references.** Modules the tests import are imported *before* the candidate; their module and
class dictionaries (and ``builtins``) are snapshotted and restored before each test, so patching
``unittest.TestCase.assertEqual``, ``math.isclose`` or ``builtins.abs`` has no effect on the tests. Assert tests run in
their own namespace holding the candidate's names (minus those that shadow builtins, unless declared entry points)
and the trusted set-up code. Limits, stated honestly: code running in the same process can always, with effort,
subvert an in-process harness (walk frames to the nonce, patch function ``__code__`` during a test, return objects
whose ``__eq__`` is always true); these protections defeat early exits and accidental or generic monkey-patching,
not an adversary that targets this harness.

The child-side code (launcher and harness) sits between the ``CHILD-SIDE`` markers below; it uses the standard
library only and is sent verbatim to fresh interpreters with ``python -c``.
"""

from __future__ import annotations

import concurrent.futures
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
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# ======================================== CHILD-SIDE BEGIN ========================================
import os  # noqa: E402,F811  (the child side is also run on its own, with `python -c`)
import sys  # noqa: E402,F811

_RESULT_FD = 3  # harness -> parent: "<nonce> <event> ..." lines
_NONCE_FD = 4  # parent -> harness: the nonce, read and closed before the candidate runs
_SETUP_FAILED_EXIT = 125

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_NOATIME, _MS_NODIRATIME, _MS_BIND, _MS_REC, _MS_PRIVATE = 1024, 2048, 4096, 16384, 1 << 18
_MS_RELATIME, _MS_STRICTATIME = 1 << 21, 1 << 24
_MOUNT_OPTION_FLAGS = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC, "noatime": _MS_NOATIME,
                       "nodiratime": _MS_NODIRATIME, "relatime": _MS_RELATIME, "strictatime": _MS_STRICTATIME}
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 36, 38
_SANDBOX_HOME = "/tmp/sandbox"  # the program's working directory in namespace mode (on the private tmpfs)


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _check(ret, what):
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _mounts():
    """(mount point, per-mount flags) from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            flags = 0
            for opt in fields[5].split(","):
                flags |= _MOUNT_OPTION_FLAGS.get(opt, 0)
            out.append((point, flags))
    return out


def _traversable(path, uid, gid):
    st = os.stat(path)
    if st.st_uid == uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == gid:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


_SCRATCH_MOUNTS = ("/tmp", "/var/tmp", "/dev/shm")  # replaced by a private tmpfs in namespace mode


def _bind_back(libc, items):
    """Bind each (path, O_PATH fd opened before its parent was covered) back at ``path``, read-only."""
    for needed, fd in items:
        os.makedirs(os.path.dirname(needed), mode=0o755, exist_ok=True)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(needed, mode=0o755, exist_ok=True)
        else:
            open(needed, "a").close()
        _mount(libc, f"/proc/self/fd/{fd}", needed, None, _MS_BIND | _MS_REC)
        _mount(libc, None, needed, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        os.close(fd)


def _build_fs_view(libc, cfg):
    """Namespace mode, still root in the new mount namespace: read-only everything, private tmpfs, fresh /proc,
    expose the interpreter's directories through untraversable ancestors, create the working directory."""
    uid, gid = cfg["uid"], cfg["gid"]
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    # Paths the sandbox uid must reach but cannot: open them now, show them through a tmpfs later.
    exposures = {}  # untraversable ancestor -> [(needed path, O_PATH fd)]
    if uid is not None:
        for needed in cfg["needed_paths"]:
            parts = needed.strip("/").split("/")
            for depth in range(1, len(parts)):
                ancestor = "/" + "/".join(parts[:depth])
                if not _traversable(ancestor, uid, gid):
                    exposures.setdefault(ancestor, []).append((needed, os.open(needed, os.O_PATH)))
                    break
    for point, flags in _mounts():
        try:
            _mount(libc, None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags)
        except OSError:
            if point == "/":
                raise
    for ancestor, items in exposures.items():
        _mount(libc, "tmpfs", ancestor, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
        _bind_back(libc, items)
        _mount(libc, None, ancestor, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    size = f"size={cfg['tmpfs_bytes']}"
    for point in _SCRATCH_MOUNTS:
        if os.path.isdir(point):
            # an interpreter installed under a scratch folder (a checkout in /tmp) must stay visible, read-only
            keep = [(needed, os.open(needed, os.O_PATH)) for needed in cfg["needed_paths"]
                    if needed.startswith(point + "/")]
            _mount(libc, "tmpfs", point, "tmpfs", _MS_NOSUID | _MS_NODEV, f"{size},mode=1777")
            _bind_back(libc, keep)
    _mount(libc, "proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    os.mkdir(_SANDBOX_HOME, 0o700)
    if uid is not None:
        os.chown(_SANDBOX_HOME, uid, gid)
    return _SANDBOX_HOME


def _child_exec(cfg, libc, alive_r, job_bytes):
    """In the forked child: file-system view, limits, credentials, then exec the harness. Never returns."""
    import resource
    import select

    if cfg["mode"] == "namespace":
        workdir = _build_fs_view(libc, cfg)
        with open(os.path.join(workdir, "job.bin"), "wb") as f:
            f.write(job_bytes)
        if cfg["uid"] is not None:
            os.chown(os.path.join(workdir, "job.bin"), cfg["uid"], cfg["gid"])
    else:
        workdir = cfg["staging"]
    os.chdir(workdir)
    lim = cfg["limits"]
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_AS, (lim["as_bytes"], lim["as_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (lim["nproc"], lim["nproc"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["fsize_bytes"], lim["fsize_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    # Set after the uid change (a credential change clears it); then make sure the launcher did not die first.
    _check(libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PDEATHSIG)")
    if select.select([alive_r], [], [], 0)[0]:
        os._exit(_SETUP_FAILED_EXIT)
    os.dup2(cfg["result_fd"], _RESULT_FD)
    os.dup2(cfg["nonce_fd"], _NONCE_FD)
    os.closerange(_NONCE_FD + 1, 65536)
    python = cfg["python"]
    os.execve(python, [python, "-I", "-B", "-c", cfg["child_source"], "harness"], {})


def _write_user_maps(uid, gid):
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid} {gid} 1")


def _children_of(pid):
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat_line = f.read()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(name))
    return kids


def _launcher_main(config_path):
    """Start the sandboxed child, relay its wait status on the control fd, and clean up everything it left."""
    import marshal
    import signal

    with open(config_path, "rb") as f:
        cfg = marshal.load(f)
    ctl = cfg["control_fd"]

    def report(msg):
        os.write(ctl, (msg + "\n").encode())

    child = None
    child_reaped = False

    def reap_all():
        while True:  # every child of ours (the sandbox and, as sub-reaper, its orphans) until none is left
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
            except InterruptedError:
                continue

    def kill_everything():
        if child is None:
            return
        if cfg["mode"] == "namespace":
            if not child_reaped:  # init of the PID namespace: the kernel kills the rest before it is reaped
                os.kill(child, signal.SIGKILL)
        elif cfg["uid"] is not None:
            sweeper = os.fork()
            if sweeper == 0:  # every process of the sandbox uid, wherever it went (kill(-1) skips the caller)
                try:
                    os.setuid(cfg["uid"])
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
        else:
            for _ in range(1000):  # orphans re-parent to us (sub-reaper); kill until none is left
                kids = _children_of(os.getpid())
                if not kids:
                    break
                for k in kids:
                    try:
                        os.kill(k, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    try:
                        os.waitpid(k, 0)
                    except ChildProcessError:
                        pass
        reap_all()

    def on_term(signum, frame):
        kill_everything()
        os._exit(_SETUP_FAILED_EXIT)

    signal.signal(signal.SIGTERM, on_term)
    try:
        libc = _libc()
        with open(os.path.join(cfg["staging"], "job.bin"), "rb") as f:
            job_bytes = f.read()
        if cfg["mode"] == "namespace":
            flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
            if os.geteuid() != 0:
                flags |= _CLONE_NEWUSER
            _check(libc.unshare(flags), "unshare")
            if flags & _CLONE_NEWUSER:
                _write_user_maps(cfg["caller_uid"], cfg["caller_gid"])
        else:
            _check(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(CHILD_SUBREAPER)")
        alive_r, alive_w = os.pipe()
        child = os.fork()
        if child == 0:
            try:
                os.close(alive_w)
                _child_exec(cfg, libc, alive_r, job_bytes)
            except BaseException as exc:  # noqa: BLE001 - report any set-up failure, never run the program
                try:
                    report(f"error {type(exc).__name__}: {exc}")
                finally:
                    os._exit(_SETUP_FAILED_EXIT)
        os.close(alive_r)
        os.close(cfg["result_fd"])
        os.close(cfg["nonce_fd"])
        while True:
            try:
                _, status = os.waitpid(child, 0)
                child_reaped = True
                break
            except InterruptedError:
                continue
        kill_everything()
        report(f"exit {status}")
        os._exit(0)
    except BaseException as exc:  # noqa: BLE001
        kill_everything()
        report(f"error {type(exc).__name__}: {exc}")
        os._exit(_SETUP_FAILED_EXIT)


# ---- the harness: runs as the sandboxed program ----------------------------------------------------------------


def _snapshot_modules():
    """Shallow copies of every loaded module's dict and of the dicts of the (heap) classes it defines."""
    modules = {}
    for name, mod in list(sys.modules.items()):
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        classes = []
        for value in list(d.values()):
            if isinstance(value, type) and value.__flags__ & (1 << 9) and getattr(value, "__module__", None) == name:
                classes.append((value, dict(value.__dict__)))
        modules[name] = (mod, dict(d), classes)
    return modules, dict(sys.modules), list(sys.path), list(sys.meta_path), list(sys.path_hooks)


def _restore_modules(snapshot):
    """Undo rebinding, additions and deletions in the snapshotted dicts (identity comparisons only)."""
    modules, sys_modules, path, meta_path, path_hooks = snapshot
    for name, (mod, saved, classes) in modules.items():
        current = mod.__dict__
        for key in [k for k in current if k not in saved]:
            del current[key]
        for key, value in saved.items():
            if current.get(key, _restore_modules) is not value:
                current[key] = value
        for cls, saved_cls in classes:
            now = cls.__dict__
            for key in [k for k in now if k not in saved_cls]:
                try:
                    delattr(cls, key)
                except (AttributeError, TypeError):
                    pass
            for key, value in saved_cls.items():
                if now.get(key, _restore_modules) is not value:
                    try:
                        setattr(cls, key, value)
                    except (AttributeError, TypeError):
                        pass
    for name, mod in sys_modules.items():
        if sys.modules.get(name) is not mod:
            sys.modules[name] = mod
    sys.path[:] = path
    sys.meta_path[:] = meta_path
    sys.path_hooks[:] = path_hooks


def _harness_main():
    import builtins
    import marshal

    write, exit_now, compile_, exec_ = os.write, os._exit, compile, exec
    stdout, stderr, builtins_dict = sys.stdout, sys.stderr, builtins.__dict__
    nonce = os.read(_NONCE_FD, 256).strip()
    os.close(_NONCE_FD)

    def emit(*fields):
        data = nonce + b" " + " ".join(fields).encode() + b"\n"
        while data:
            data = data[write(_RESULT_FD, data):]

    def finish(code):
        for stream in (stdout, stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        exit_now(code)

    armed = [False]
    always_refused = ("socket.__new__", "socket.bind", "socket.connect", "socket.sendto", "socket.sendmsg")
    refused_when_armed = ("gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.settrace", "sys.setprofile")

    def guard(event, args):
        if event in always_refused or (armed[0] and event in refused_when_armed):
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(guard)
    with open("job.bin", "rb") as f:
        job = marshal.load(f)
    os.unlink("job.bin")
    mode = job["mode"]
    preload = list(job["preload"])
    if mode == "pytest":
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        preload += ["pytest", "_pytest.config"]
    for name in preload:
        try:
            __import__(name)
        except BaseException:  # noqa: BLE001 - a missing module fails the test later, visibly
            pass
    if mode == "pytest":
        import _pytest.config

        for plugin in _pytest.config.default_plugins:
            try:
                __import__("_pytest." + plugin)
            except BaseException:  # noqa: BLE001
                pass
    snapshot = _snapshot_modules()
    module_name = "__main__" if mode == "script" else "solution"
    module = type(sys)(module_name)
    module.__file__ = os.path.join(os.getcwd(), "solution.py")
    module.__builtins__ = builtins
    sys.modules[module_name] = module
    armed[0] = True
    try:
        exec_(compile_(job["code"], module.__file__, "exec"), module.__dict__)
    except BaseException as exc:  # noqa: BLE001 - SystemExit included: exiting early is a failure
        emit("error", "candidate", type(exc).__name__)
        finish(1)
    _restore_modules(snapshot)
    sys.stdout, sys.stderr = stdout, stderr
    if mode == "script":
        emit("test", "0", "1", "-")
        emit("done")
        finish(0)
    if mode == "asserts":
        entry_points = set(job.get("entry_points") or ())
        all_ok = True
        for index, test in enumerate(job["tests"]):
            _restore_modules(snapshot)
            sys.stdout, sys.stderr = stdout, stderr
            namespace = {k: v for k, v in module.__dict__.items()
                         if not k.startswith("__") and (k not in builtins_dict or k in entry_points)}
            namespace.update(__name__="__test__", __builtins__=builtins)
            outcome = "-"
            try:
                if job.get("test_setup"):
                    exec_(compile_(job["test_setup"], "<test setup>", "exec"), namespace)
                    for name in entry_points:
                        if name in module.__dict__:
                            namespace[name] = module.__dict__[name]
                exec_(compile_(test, f"<test {index}>", "exec"), namespace)
                ok = True
            except BaseException as exc:  # noqa: BLE001
                ok, outcome = False, type(exc).__name__
            all_ok &= ok
            emit("test", str(index), "1" if ok else "0", outcome)
        emit("done")
        finish(0 if all_ok else 1)
    # pytest mode: a fresh directory (created after the candidate ran), no conftest, no ini file, no plugins
    import tempfile

    import pytest

    test_dir = tempfile.mkdtemp(prefix="tests-", dir=os.getcwd())
    test_path = os.path.join(test_dir, "test_solution.py")
    with open(test_path, "w") as f:
        f.write(job["test_module"])
    index_of = {}
    outcome_of = {}

    class Reporter:
        def pytest_collection_finish(self, session):
            for item in session.items:
                index_of[item.nodeid] = len(index_of)
            emit("total", str(len(index_of)))

        def pytest_collectreport(self, report):
            if report.failed:
                emit("error", "collect", "CollectError")

        def pytest_runtest_logreport(self, report):
            index = index_of.get(report.nodeid)
            if index is None:
                return
            if report.failed or report.skipped:
                outcome_of[index] = report.when + ":" + report.outcome
            elif report.when == "call":
                outcome_of.setdefault(index, "-")

        def pytest_runtest_logfinish(self, nodeid, location):
            index = index_of.get(nodeid)
            if index is not None:
                outcome = outcome_of.get(index, "nocall")
                emit("test", str(index), "1" if outcome == "-" else "0", outcome)

    args = [test_path, "-q", "--noconftest", "-p", "no:cacheprovider", "-p", "no:pastebin", "-p", "no:junitxml",
            "-p", "no:faulthandler", "-p", "no:stepwise", "--rootdir", test_dir,
            "-c", os.devnull, "--tb=short"]
    try:
        pytest.main(args, plugins=[Reporter()])
    except BaseException as exc:  # noqa: BLE001
        emit("error", "pytest", type(exc).__name__)
        finish(1)
    emit("done")
    all_ok = bool(index_of) and len(outcome_of) == len(index_of) and all(v == "-" for v in outcome_of.values())
    finish(0 if all_ok else 1)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] in ("launch", "harness"):
    if sys.argv[1] == "launch":
        _launcher_main(sys.argv[2])
    else:
        _harness_main()
    raise SystemExit(0)
# ========================================= CHILD-SIDE END =========================================

STATUSES = ("passed", "failed", "error", "timeout", "oom", "output_limit", "crashed", "sandbox_error")
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_MAX_OUTPUT_BYTES = 1 << 20
DEFAULT_MAX_PROCS = 32
DEFAULT_MAX_FILE_MB = 16
DEFAULT_TMPFS_MB = 64
_TAIL_BYTES = 4096
_RESULT_CAP_BYTES = 1 << 20
_UID_BASE = 2_000_000_000  # sandbox uids: unused by any account; one fresh uid per concurrent run
_UID_SPAN = 1 << 24


def _child_source() -> str:
    text = Path(__file__).read_text(encoding="utf-8")
    begin = text.index("# " + "=" * 40 + " CHILD-SIDE BEGIN")
    end = text.index("# " + "=" * 41 + " CHILD-SIDE END")
    return text[begin:end]


_CHILD_SOURCE = _child_source()


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one program. ``passed`` iff the harness confirmed (nonce) that every test ran and passed and the
    process exited 0. ``tests_passed / tests_total`` is the fraction used as a reward (0 when nothing ran)."""

    passed: bool
    status: str
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    returncode: int | None = None
    tests_passed: int = 0
    tests_total: int = 0
    detail: str = ""

    @property
    def fraction_passed(self) -> float:
        return self.tests_passed / self.tests_total if self.tests_total else 0.0


@dataclass(frozen=True)
class Program:
    """What to run. ``code`` is the untrusted candidate. Without tests it runs as ``__main__`` and passes when it
    completes. ``tests``: trusted snippets (each one test) run after the candidate in a namespace holding its
    names; ``test_setup`` (trusted) runs in that namespace before each test; ``entry_points`` are candidate names
    the tests may use even where they shadow a builtin. ``test_module``: pytest source that imports the candidate
    as module ``solution``; each collected test item counts as one test."""

    code: str
    tests: tuple[str, ...] | None = None
    test_setup: str = ""
    entry_points: tuple[str, ...] = ()
    test_module: str | None = None

    def __post_init__(self):
        if not isinstance(self.code, str):
            raise ValueError(f"Program.code must be a str, got {type(self.code).__name__}")
        if self.tests is not None and self.test_module is not None:
            raise ValueError("Program: give either tests (assert snippets) or test_module (pytest), not both")
        if self.tests is not None:
            object.__setattr__(self, "tests", tuple(self.tests))
            if not self.tests:
                raise ValueError("Program.tests is empty: a program without tests would pass vacuously")

    @property
    def mode(self) -> str:
        return "pytest" if self.test_module is not None else "asserts" if self.tests is not None else "script"


@dataclass(frozen=True)
class Limits:
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_procs: int = DEFAULT_MAX_PROCS
    max_file_mb: int = DEFAULT_MAX_FILE_MB
    tmpfs_mb: int = DEFAULT_TMPFS_MB
    isolation: str = "auto"

    def __post_init__(self):
        for name in ("timeout_s", "memory_mb", "max_output_bytes", "max_procs", "max_file_mb", "tmpfs_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"sandbox limit {name} must be a positive number, got {value!r}")
        if self.memory_mb < 64:
            raise ValueError(f"sandbox limit memory_mb must be >= 64 (the interpreter needs it), got {self.memory_mb}")
        if self.isolation not in ("auto", "namespace", "basic"):
            raise ValueError(f"isolation must be 'auto', 'namespace' or 'basic', got {self.isolation!r}")


def _imported_modules(source: str) -> list[str]:
    """Top-level module names imported anywhere in ``source`` (for pre-importing before the candidate)."""
    import ast
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _preload(program: "Program") -> list[str]:
    """Modules the trusted test code imports: the harness imports them before the candidate runs."""
    trusted = "\n".join([program.test_setup, *(program.tests or ()), program.test_module or ""])
    return list(dict.fromkeys(_imported_modules(trusted)))


# ---- uid allocation and isolation probe -------------------------------------------------------------------------

_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _allocate_uid() -> int:
    with _uid_lock:
        while True:
            uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int | None) -> None:
    if uid is not None:
        with _uid_lock:
            _uids_in_use.discard(uid)


def _needed_paths() -> list[str]:
    """Directories the sandboxed interpreter must read: its installation, the venv, site-packages."""
    import site

    paths = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable))}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    for p in site.getsitepackages():
        paths.add(os.path.realpath(p))
    existing = sorted(p for p in paths if os.path.exists(p) and p != "/")
    # keep only the outermost of nested paths
    return [p for p in existing if not any(p != q and p.startswith(q + "/") for q in existing)]


def _reachable_by(uid: int, paths: Sequence[str]) -> bool:
    for path in paths:
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            if not _traversable("/" + "/".join(parts[:depth]), uid, uid):
                return False
    return True


_mode_lock = threading.Lock()
_detected_mode: str | None = None


def isolation_mode() -> str:
    """``"namespace"`` when a trivial program passes in namespace mode on this machine, else ``"basic"``
    (probed once per process)."""
    global _detected_mode
    with _mode_lock:
        if _detected_mode is None:
            probe = _run(Program("import sys\nsys.stdout.write('ok')"), Limits(timeout_s=20, isolation="namespace"),
                         "namespace")
            _detected_mode = "namespace" if probe.passed and probe.stdout_tail == "ok" else "basic"
        return _detected_mode


# ---- one run ----------------------------------------------------------------------------------------------------


class _Tail:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.buf += data
        if len(self.buf) > 2 * _TAIL_BYTES:
            del self.buf[: len(self.buf) - _TAIL_BYTES]

    def text(self) -> str:
        return bytes(self.buf[-_TAIL_BYTES:]).decode("utf-8", errors="replace")


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


def _run(program: Program, limits: Limits, mode: str) -> SandboxResult:
    start = time.monotonic()
    is_root = os.geteuid() == 0
    uid = gid = None
    if is_root:
        uid = _allocate_uid()
        gid = uid
        if mode == "basic" and not _reachable_by(uid, _needed_paths()):
            # The interpreter is unreadable for other uids and namespaces are unavailable: the program would run
            # as root with nothing between it and the caller's files. Refuse instead of running it.
            _release_uid(uid)
            return SandboxResult(False, "sandbox_error", "", "", time.monotonic() - start,
                                 detail="refused: running as root without namespaces, and the interpreter "
                                        f"({sys.executable}) is not readable by an unprivileged uid")
    staging = tempfile.mkdtemp(prefix="egspo-sandbox-")
    fds: list[int] = []
    proc = None
    try:
        job = {"mode": program.mode, "code": program.code, "tests": list(program.tests or ()),
               "test_setup": program.test_setup, "entry_points": list(program.entry_points),
               "test_module": program.test_module, "preload": _preload(program)}
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
               "staging": staging, "python": sys.executable, "child_source": _CHILD_SOURCE,
               "result_fd": result_w, "nonce_fd": nonce_r, "control_fd": control_w,
               "needed_paths": _needed_paths() if mode == "namespace" else [],
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
            [sys.executable, "-I", "-S", "-B", "-c", _CHILD_SOURCE, "launch", config_path],
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
        _release_uid(uid)


def _collect(proc, result_r, control_r, nonce, program, limits, start) -> SandboxResult:
    out, err, results, control = _Tail(), _Tail(), bytearray(), bytearray()
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
                if isinstance(sink, _Tail):
                    sink.add(data)
                elif len(sink) < _RESULT_CAP_BYTES:
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
                if len(sink) < _RESULT_CAP_BYTES:
                    sink += chunk
        except (BlockingIOError, OSError):
            pass
    duration = time.monotonic() - start
    return _interpret(program, nonce, results, control, out, err, timed_out, overflow, duration)


def _output_total(out: _Tail, err: _Tail) -> int:
    return out.total + err.total


def _interpret(program, nonce, results, control, out, err, timed_out, overflow, duration) -> SandboxResult:
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
        detail = f"output exceeded {_output_total(out, err)} bytes"
    elif timed_out:
        detail = "wall-clock timeout"
    else:
        detail = setup_error or error or ("" if done or passed else
                                          f"exited before the tests finished (returncode {returncode})")
    return SandboxResult(passed, status, out.text(), err.text(), duration, returncode,
                         n_passed, expected, detail)


# ---- public API -------------------------------------------------------------------------------------------------


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
        return _run(program, limits, mode)
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
