"""Bit-identical results: the numerics pin (egspo.utils.numerics) and the SFT -> RL -> eval chain's committed hashes
(egspo.verify.reproducibility, tests/data/chain_hashes.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from egspo.utils import numerics
from egspo.verify import reproducibility

SUPPORTED, WHY = numerics.pin_supported()
needs_pin = pytest.mark.skipif(not SUPPORTED, reason=f"the pinned AVX2 kernels cannot run here: {WHY}")
REGENERATE = (f"the chain's outputs differ from {reproducibility.HASHES}. If the change to the numbers is intended "
              f"(a changed algorithm, default or dependency), regenerate them with `{reproducibility.REGENERATE}` "
              f"and commit the file; otherwise the pin or a kernel is broken")


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any pin variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in (numerics.SWITCH, *numerics.ISA_VARIABLES, *numerics.THREAD_VARIABLES)}
    return {**env, "PYTHONHASHSEED": "0", **extra}


def _python(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


# ---- the pin's decisions, on given machines --------------------------------------------------------------

def test_pin_supported_needs_x86_64_with_avx2_and_fma():
    assert numerics.pin_supported("x86_64", {"avx", "avx2", "fma", "sse4_2"}) == (True, "")
    assert numerics.pin_supported("AMD64", {"avx2", "fma"})[0]
    ok, why = numerics.pin_supported("x86_64", {"avx", "sse4_2"})
    assert not ok and why == "the processor lacks avx2 and fma"
    ok, why = numerics.pin_supported("x86_64", {"avx2"})
    assert not ok and why == "the processor lacks fma"
    ok, why = numerics.pin_supported("aarch64", {"neon", "asimd"})
    assert not ok and "aarch64, not x86-64" in why
    ok, why = numerics.pin_supported("x86_64", None)
    assert not ok and "cannot be read" in why


def test_cpu_flags_and_processor_name_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\n"
                       "flags\t\t: fpu sse2 avx avx2 fma avx512f\n\nprocessor\t: 1\n")
    assert numerics.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx", "avx2", "fma", "avx512f"}
    assert numerics.processor_name(cpuinfo) == "AMD EPYC 9654 96-Core Processor"
    assert numerics.cpu_flags(tmp_path / "absent") is None


def test_pinned_variables_on_an_avx2_machine():
    env = {"OMP_NUM_THREADS": "3"}
    assert numerics.pinned_variables(env, supported=True) == {
        "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}
    # no thread count given: one thread, so the result does not depend on the machine's core count
    assert numerics.pinned_variables({}, supported=True)["MKL_NUM_THREADS"] == "1"
    assert numerics.pinned_variables({"EGSPO_NUMERICS": "native"}, supported=True) == {}


def test_pin_environment_overrides_a_callers_kernel_choice(monkeypatch):
    monkeypatch.setattr(numerics, "pin_supported", lambda: (True, ""))
    env = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"}
    numerics.pin_environment(env)
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_CBWR"] == "AVX2,STRICT"
    native = {"EGSPO_NUMERICS": "native", "ATEN_CPU_CAPABILITY": "default"}
    assert numerics.pin_environment(native) == {} and native["ATEN_CPU_CAPABILITY"] == "default"


def test_pin_environment_without_avx2_warns_and_drops_an_inherited_pin(monkeypatch):
    monkeypatch.setattr(numerics, "pin_supported", lambda: (False, "the processor is aarch64, not x86-64"))
    env = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2"}
    with pytest.warns(numerics.PinUnsupported, match="aarch64, not x86-64.*not promised to be bit-identical"):
        numerics.pin_environment(env)
    # ATEN_CPU_CAPABILITY=avx2 would stop the process with an illegal instruction there; threads stay pinned
    assert env == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


@pytest.mark.parametrize("name,value", [("EGSPO_NUMERICS", "fast"), ("OMP_NUM_THREADS", "0"),
                                        ("OMP_NUM_THREADS", "two")])
def test_bad_settings_are_errors_naming_the_variable(name, value):
    with pytest.raises(ValueError, match=f"{name} must be .*{value!r}"):
        numerics.pinned_variables({name: value}, supported=True)


@needs_pin
def test_a_fresh_process_runs_the_pinned_kernels_whatever_the_caller_set():
    done = _python(["-m", "egspo.utils.numerics"], _clean_env(ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="2"))
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["numerics"] == "pinned" and state["torch_cpu_capability"] == "AVX2"
    assert state["torch_threads"] == {"intra_op": 2, "inter_op": 1}
    assert state["deterministic_algorithms"] is True
    assert state["kernel_variables"]["MKL_CBWR"] == "AVX2,STRICT"
    native = _python(["-m", "egspo.utils.numerics"], _clean_env(EGSPO_NUMERICS="native", ATEN_CPU_CAPABILITY="default"))
    assert json.loads(native.stdout)["torch_cpu_capability"] == "DEFAULT"


_PROBE = """
import sys
from egspo.cli import run_command
status = run_command(sys.argv[1:])
imported = "torch" in sys.modules
import torch
print(status, imported, torch.are_deterministic_algorithms_enabled())
"""


def test_torch_free_commands_skip_torch_and_torch_commands_get_its_settings(tmp_path):
    """`egspo data` (torch-free) never imports torch, so it starts in a fraction of a second and gets none of
    torch's settings; `egspo gradcheck` imports torch and runs with deterministic algorithms on."""
    data = _python(["-c", _PROBE, "data", "--task", "sudoku", "--source", "tiny", "--out-dir", str(tmp_path / "d"),
                    "--n-train", "4", "--n-validation", "2", "--n-test", "2"], _clean_env())
    assert data.returncode == 0, data.stderr
    assert data.stdout.split()[-3:] == ["0", "False", "False"]
    grad = _python(["-c", _PROBE, "gradcheck", "--out", str(tmp_path / "g.csv")], _clean_env())
    assert grad.returncode == 0, grad.stderr
    assert grad.stdout.split()[-3:] == ["0", "True", "True"]


def test_write_description_records_versions_processor_and_the_model_commands_settings(tmp_path):
    """Written by `egspo report` (a torch-free command, run in a fresh process here as the workflow runs it), the
    file still records the settings every model command runs with: one inter-op thread, deterministic algorithms."""
    out = tmp_path / "environment.json"
    done = _python(["-c", f"from egspo.utils.numerics import write_description; write_description({str(out)!r})"],
                   _clean_env())
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    import torch
    assert data["versions"]["torch"] == torch.__version__
    assert data["python"] == ".".join(map(str, sys.version_info[:3]))
    assert data["processor"] == numerics.processor_name() and data["numerics"] == "pinned"
    assert set(data["kernel_variables"]) == {*numerics.ISA_VARIABLES, *numerics.THREAD_VARIABLES}
    assert data["deterministic_algorithms"] is True and data["torch_threads"]["inter_op"] == 1
    assert data["torch_threads"]["intra_op"] == int(data["kernel_variables"]["OMP_NUM_THREADS"])


# ---- what the chain hashes ------------------------------------------------------------------------------

def test_numeric_rows_drop_times_and_the_run_directory(tmp_path):
    work = tmp_path / "run"
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(json.dumps({"step": 1, "reward_std": 0.5, "time_update_s": 0.1, "model": f"{work}/ckpt"}) + "\n")
    b.write_text(json.dumps({"model": "<work>/ckpt", "time_update_s": 9.0, "reward_std": 0.5, "step": 1}) + "\n")
    assert reproducibility.numeric_rows(a, work) == reproducibility.numeric_rows(b, work)
    b.write_text(json.dumps({"model": "<work>/ckpt", "reward_std": 0.50000001, "step": 1}) + "\n")
    assert reproducibility.numeric_rows(a, work) != reproducibility.numeric_rows(b, work)
    assert reproducibility.is_time_field("generation_s") and not reproducibility.is_time_field("reward_std")


def test_differences_name_changed_missing_and_new_outputs():
    lines = reproducibility.differences({"a": "1" * 64, "b": "2" * 64}, {"a": "1" * 64, "b": "3" * 64, "c": "4" * 64})
    assert lines == ["b: committed 222222222222, this run 333333333333", "c: committed absent, this run 444444444444"]


# ---- the proof: the chain reproduces the committed hashes ----------------------------------------------

def _chain(env: dict[str, str], work: Path) -> dict[str, str]:
    done = _python(["-m", "egspo.verify.reproducibility", "--print", "--work", str(work)], env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.rindex("{\n"):])


@needs_pin
def test_chain_reproduces_the_committed_hashes(tmp_path):
    expected = json.loads(reproducibility.HASHES.read_text())
    actual = _chain(_clean_env(), tmp_path)
    assert not reproducibility.differences(expected, actual), (
        REGENERATE + ":\n" + "\n".join(reproducibility.differences(expected, actual)))


@pytest.mark.slow
@needs_pin
def test_pin_makes_two_kernel_sets_give_the_committed_hashes(tmp_path):
    """Unpinned, the generic and the AVX2 kernels (and AVX-512 where the processor has it) give different weights;
    pinned, a process told to use either gives the committed hashes."""
    expected = json.loads(reproducibility.HASHES.read_text())
    kernel_sets = ["default", "avx2"] + (["avx512"] if "avx512f" in (numerics.cpu_flags() or set()) else [])
    unpinned = {isa: _chain(_clean_env(EGSPO_NUMERICS="native", ATEN_CPU_CAPABILITY=isa), tmp_path / f"native_{isa}")
                for isa in kernel_sets}
    weights = {isa: {k: v for k, v in h.items() if k.endswith(".safetensors")} for isa, h in unpinned.items()}
    for isa in kernel_sets[1:]:
        assert weights[isa] != weights["default"], f"unpinned {isa} and generic kernels gave identical weights"
    for isa in kernel_sets:
        pinned = _chain(_clean_env(ATEN_CPU_CAPABILITY=isa), tmp_path / f"pinned_{isa}")
        assert not reproducibility.differences(expected, pinned), (
            f"pinned run asked for {isa}: " + REGENERATE + ":\n" + "\n".join(reproducibility.differences(expected, pinned)))


@pytest.mark.slow
@needs_pin
def test_thread_count_is_part_of_the_result(tmp_path):
    """The README's claim: a rule's `threads` changes the numbers (reductions split by thread), so the pin fixes it."""
    expected = json.loads(reproducibility.HASHES.read_text())
    two = _chain(_clean_env(OMP_NUM_THREADS="2"), tmp_path)
    assert two["sft/model.safetensors"] != expected["sft/model.safetensors"]


def test_warnings_module_is_quiet_for_a_supported_machine(monkeypatch):
    monkeypatch.setattr(numerics, "pin_supported", lambda: (True, ""))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert numerics.pin_environment({})["ATEN_CPU_CAPABILITY"] == "avx2"
