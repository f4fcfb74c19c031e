"""The harness: the sandboxed program itself. The launcher execs ``python -I -B -c <this file's text> RESULT_FD
NONCE_FD`` (the text is read by the caller, so the file need not be visible inside the sandbox). Standard library only.

It reads the per-run nonce and closes its fd, imports the modules the trusted tests need, snapshots every module
dict, runs the candidate, restores the snapshot before each test, and streams ``<nonce> test <i> <ok> <outcome>``
lines and ``<nonce> done`` to RESULT_FD (see docs/sandbox.md, completion protocol and fresh references).
"""

import os
import sys


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


def harness_main(result_fd, nonce_fd):
    """Run the job in ./job.bin; exits the process (never returns)."""
    import builtins
    import marshal

    write, exit_now, compile_, exec_ = os.write, os._exit, compile, exec
    stdout, stderr, builtins_dict = sys.stdout, sys.stderr, builtins.__dict__
    nonce = os.read(nonce_fd, 256).strip()
    os.close(nonce_fd)

    def emit(*fields):
        data = nonce + b" " + " ".join(fields).encode() + b"\n"
        while data:
            data = data[write(result_fd, data):]

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


if __name__ == "__main__":
    harness_main(int(sys.argv[1]), int(sys.argv[2]))
