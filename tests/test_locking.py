"""One writer per output (egspo.utils.locking, held by egspo.cli for every writing command): a second writer fails
at once naming the holder, a dead holder's lock is taken over with a warning, and the orphaned-job case through
Snakemake (kill snakemake, --unlock, --rerun-incomplete while the first job still runs) is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from egspo.cli import main
from egspo.utils.errors import UserError
from egspo.utils.locking import OutputLock, OutputLocked, lock_file_of

ROOT = Path(__file__).resolve().parents[1]
SLOW_WRITER = Path(__file__).with_name("slow_writer.py")
GOOD_SUDOKU = {"Puzzle": "1234341221434321", "Solution": "1234341221434321", "completion": "<answer>x</answer>"}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def _start_holder(out: Path, seconds: float = 120.0) -> subprocess.Popen:
    """A real process holding the lock of ``out`` (through egspo.cli.main) until killed."""
    proc = subprocess.Popen([sys.executable, str(SLOW_WRITER), "--out", str(out), "--seconds", str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "holding the lock", proc.stderr.read()
    return proc


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def _grade(inp: Path, out: Path, capsys) -> tuple[int, str]:
    """`egspo grade` in this process (the holder is another one): (exit status, stderr)."""
    capsys.readouterr()
    status = main(["grade", "--task", "sudoku", "--input", str(inp), "--output", str(out)])
    return status, capsys.readouterr().err


HOLD = """
import sys, time
from egspo.utils.locking import OutputLock
lock = OutputLock(sys.argv[1], command="holder").acquire()
print("holding the lock", flush=True)
time.sleep(120)
"""


def test_a_lock_held_by_another_process_refuses_egspo_and_is_free_after_it_dies(tmp_path, capsys):
    """Two real processes: a light holder (no torch import, so the default suite stays fast) and `egspo grade`."""
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(GOOD_SUDOKU) + "\n")
    out = tmp_path / "graded.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "holding the lock"
        status, err = _grade(inp, out, capsys)
        assert status == 2 and holder.poll() is None
        assert f"is being written by another process: pid {holder.pid} on host {socket.gethostname()}" in err
        assert "(holder)" in err and not out.exists()
    finally:
        _kill(holder)
    status, err = _grade(inp, out, capsys)
    assert status == 0 and f"left by pid {holder.pid} on host" in err and out.exists()


@pytest.mark.slow
def test_second_writer_fails_at_once_naming_the_holder_then_takes_over_after_its_death(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps(GOOD_SUDOKU) + "\n")
    out = tmp_path / "graded.jsonl"
    holder = _start_holder(out)
    try:
        status, err = _grade(inp, out, capsys)
        assert holder.poll() is None  # the second writer did not wait for the first one to finish
        assert status == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("egspo grade: error: ")
        assert f"{out} is being written by another process: pid {holder.pid} on host {socket.gethostname()}" \
            in lines[0]
        assert "since 20" in lines[0] and "slow-write" in lines[0]
        assert not out.exists()
        record = json.loads(lock_file_of(out).read_text())
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
    finally:
        _kill(holder)  # SIGKILL: no clean release, the lock file keeps the dead holder's record
    assert json.loads(lock_file_of(out).read_text())["pid"] == holder.pid
    status, err = _grade(inp, out, capsys)
    assert status == 0, err
    assert f"taking over the lock of {out} left by pid {holder.pid}" in err
    assert len(out.read_text().splitlines()) == 1
    assert not lock_file_of(out).exists()  # a clean release removes the lock file


def test_lock_in_one_process_refuses_a_second_and_release_frees_it(tmp_path):
    target = tmp_path / "run"
    with OutputLock(target, command="first"):
        with pytest.raises(OutputLocked, match=f"pid {os.getpid()} .*\\(first\\)"):
            OutputLock(target, command="second").acquire()
    with OutputLock(target, command="third"):
        assert json.loads(lock_file_of(target).read_text())["command"] == "third"
    assert list(tmp_path.iterdir()) == []


def test_lock_created_folders_are_removed_when_the_command_fails(tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text("{}\n")
    out = tmp_path / "new" / "deeper" / "graded.jsonl"
    status, err = _grade(inp, out, capsys)
    assert status == 2 and "line 1: missing field 'completion'" in err
    assert not (tmp_path / "new").exists()


def test_an_unwritable_output_location_fails_before_the_command_runs(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    status, err = _grade(tmp_path / "missing_input.jsonl", blocker / "graded.jsonl", capsys)
    assert status == 2
    assert f"egspo grade: error: cannot write the output {blocker / 'graded.jsonl'}" in err
    assert "missing_input" not in err  # the location is checked first, before the input is read


@pytest.mark.slow
def test_orphaned_snakemake_job_keeps_the_output_and_the_rerun_fails_naming_it(tmp_path):
    """Kill snakemake (its job lives on), --unlock, rerun with --rerun-incomplete: the rerun's job must fail at once
    naming the orphan instead of writing the same output beside it."""
    snakemake = Path(sys.executable).with_name("snakemake")
    if not snakemake.exists():
        pytest.skip("snakemake is not installed next to this interpreter")
    (tmp_path / "Snakefile").write_text(
        'rule write:\n'
        '    output: "out/result.txt"\n'
        f'    shell: "{sys.executable} {SLOW_WRITER} --out {{output}} --seconds 120 '
        '> attempt{config[attempt]}.log 2>&1"\n'
    )
    base = [str(snakemake), "--cores", "1", "--snakefile", "Snakefile"]
    first = subprocess.Popen([*base, "--config", "attempt=1"], cwd=tmp_path, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log1 = tmp_path / "attempt1.log"
    orphan_pid = None
    try:
        deadline = time.monotonic() + 120
        while "holding the lock" not in (log1.read_text() if log1.exists() else ""):
            assert first.poll() is None and time.monotonic() < deadline, "the first job never started"
            time.sleep(0.2)
        orphan_pid = json.loads(lock_file_of(tmp_path / "out" / "result.txt").read_text())["pid"]
        first.send_signal(signal.SIGKILL)  # snakemake dies; its job does not
        first.wait(timeout=30)
        subprocess.run([*base, "--unlock"], cwd=tmp_path, env=_env(), check=True, capture_output=True, timeout=120)
        rerun = subprocess.run([*base, "--rerun-incomplete", "--config", "attempt=2"], cwd=tmp_path, env=_env(),
                               capture_output=True, text=True, timeout=120)
        os.kill(orphan_pid, 0)  # the orphan still runs
        assert rerun.returncode != 0
        log2 = (tmp_path / "attempt2.log").read_text()
        assert "egspo slow-write: error: " in log2
        assert f"is being written by another process: pid {orphan_pid} on host {socket.gethostname()}" in log2
    finally:
        if first.poll() is None:
            first.kill()
        if orphan_pid is not None:
            try:
                os.kill(orphan_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_every_command_either_locks_its_outputs_or_is_read_only():
    from egspo import cli

    assert set(cli.COMMANDS) == set(cli.WRITES) | cli.READ_ONLY and not set(cli.WRITES) & cli.READ_ONLY


def test_an_existing_output_directory_that_is_not_writable_is_refused(tmp_path, monkeypatch):
    """(Simulated: the tests may run as root, for whom every directory is writable.)"""
    run = tmp_path / "run"
    run.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == run else real_access(path, mode))
    with pytest.raises(UserError, match=f"cannot write the output {run}: the directory is not writable"):
        OutputLock(run).acquire()
    assert list(tmp_path.iterdir()) == [run]
