"""Pinned CPU numerics: one instruction set, one thread count and deterministic kernels for every `egspo` job.

PyTorch's own kernels (ATen), MKL's BLAS and oneDNN each pick a code path from the processor when they start. The
paths differ in vector width and FMA use, hence in rounding: the same 40-step SFT gives three different weight files
under AVX-512, AVX2 and the generic kernels (max difference ~2e-7), and SFT and RL amplify that into different models
(issue 16). The pin sets, before torch is imported:

    ATEN_CPU_CAPABILITY=avx2          PyTorch's vectorised kernels
    MKL_CBWR=AVX2,STRICT              MKL's conditional numerical reproducibility: the AVX2 code path, strict mode
    MKL_ENABLE_INSTRUCTIONS=AVX2      MKL's highest instruction set
    ONEDNN_MAX_CPU_ISA=AVX2           oneDNN's highest instruction set (DNNL_MAX_CPU_ISA: its older name)
    OMP_NUM_THREADS=MKL_NUM_THREADS=n the thread count (the workflow's `threads` of the rule; 1 when unset)

and after the import torch.set_num_threads(n), torch.set_num_interop_threads(1) and, where no GPU is visible,
torch.use_deterministic_algorithms(True, warn_only=True). AVX2 (with FMA) is on mainstream x86-64 processors since
2013 (Intel Haswell) / 2015 (AMD Excavator), so all of them run the same kernels. Without AVX2, or on another architecture (ARM), the instruction-set
variables are not set (ATEN_CPU_CAPABILITY=avx2 would stop the process with an illegal instruction there): the run
works, with a warning that its numbers may differ in the last bits from the committed ones.

EGSPO_NUMERICS=native switches the pin off (the processor's own kernels and the caller's thread settings).
This module imports torch only inside the functions that need it, so `pin_environment` can run first.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from collections.abc import MutableMapping
from pathlib import Path

SWITCH = "EGSPO_NUMERICS"
MODES = ("pinned", "native")
PINNED_ISA = "AVX2"
# variables that select a kernel library's instruction set, and their pinned values
ISA_VARIABLES = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
X86_MACHINES = ("x86_64", "amd64")


class PinUnsupported(UserWarning):
    """The processor cannot run the pinned kernels: results may differ in the last bits from the committed ones."""


def mode(env: MutableMapping[str, str] | None = None) -> str:
    """'pinned' (default) or 'native', from EGSPO_NUMERICS; any other value is an error naming the variable."""
    env = os.environ if env is None else env
    value = env.get(SWITCH, "pinned").strip().lower() or "pinned"
    if value not in MODES:
        raise ValueError(f"{SWITCH} must be one of {MODES}, got {env[SWITCH]!r}")
    return value


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The processor's feature flags from /proc/cpuinfo (Linux), or None where that file does not exist."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def processor_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The processor model ("model name" in /proc/cpuinfo), else what the platform module reports."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def pin_supported(machine: str | None = None, flags: set[str] | None | bool = False) -> tuple[bool, str]:
    """Whether this processor runs the pinned AVX2 kernels, and if not, why (for the warning).

    ``flags=False`` reads /proc/cpuinfo; None means the flags are unknown (no /proc/cpuinfo: macOS, Windows).
    """
    machine = (platform.machine() if machine is None else machine).lower()
    if machine not in X86_MACHINES:
        return False, f"the processor is {machine or 'of unknown architecture'}, not x86-64"
    flags = cpu_flags() if flags is False else flags
    if flags is None:
        return False, "its instruction sets cannot be read (no /proc/cpuinfo)"
    missing = sorted({"avx2", "fma"} - flags)
    if missing:
        return False, f"the processor lacks {' and '.join(missing)}"
    return True, ""


def thread_count(env: MutableMapping[str, str] | None = None) -> int:
    """Threads per job: OMP_NUM_THREADS as the workflow sets it from the rule's `threads` (1 when unset)."""
    env = os.environ if env is None else env
    text = env.get("OMP_NUM_THREADS", "").strip()
    if not text:
        return 1
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"OMP_NUM_THREADS must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"OMP_NUM_THREADS must be a positive integer, got {text!r}")
    return value


def pinned_variables(env: MutableMapping[str, str] | None = None, supported: bool | None = None) -> dict[str, str]:
    """The environment variables of the pin for this machine (empty in native mode)."""
    env = os.environ if env is None else env
    if mode(env) == "native":
        return {}
    supported = pin_supported()[0] if supported is None else supported
    threads = str(thread_count(env))
    variables = {name: threads for name in THREAD_VARIABLES}
    if supported:
        variables.update(ISA_VARIABLES)
    return variables


def pin_environment(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the pin's variables in ``env`` (os.environ by default); call before torch is imported.

    Returns what was set. Warns (PinUnsupported) where the processor cannot run the pinned kernels.
    """
    env = os.environ if env is None else env
    if mode(env) == "native":
        return {}
    supported, why = pin_supported()
    if not supported:
        warnings.warn(f"egspo: {why}, so PyTorch, MKL and oneDNN use this machine's own kernels: the run works, but "
                      f"its numbers are not promised to be bit-identical to results made with the pinned "
                      f"{PINNED_ISA} kernels", PinUnsupported, stacklevel=2)
        # a pin inherited from a machine that has AVX2 (a Slurm job from the login node's Snakemake) would stop
        # this process with an illegal instruction: drop it
        for name, value in ISA_VARIABLES.items():
            if env.get(name) == value:
                del env[name]
    variables = pinned_variables(env, supported)
    env.update(variables)
    return variables


def apply_torch_settings(env: MutableMapping[str, str] | None = None, torch_was_imported: bool = False) -> None:
    """After torch is imported: thread counts and deterministic algorithms; check PyTorch's kernel set.

    ``torch_was_imported``: torch was already imported when the pin's variables were set (an in-process call), so
    a kernel set PyTorch had already chosen cannot change: that gives a warning, not an error.
    """
    import torch

    env = os.environ if env is None else env
    if mode(env) == "native":
        return
    threads = thread_count(env)
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # the inter-op pool already ran work in this process; it does not change results
            pass
    if not torch.cuda.is_available():
        # CPU jobs only: on a GPU this flag needs CUBLAS_WORKSPACE_CONFIG and warns on every non-deterministic CUDA
        # kernel; GPU runs (the paper preset) are not promised to be bit-identical
        torch.use_deterministic_algorithms(True, warn_only=True)
    wanted = env.get("ATEN_CPU_CAPABILITY")
    if wanted is None:
        return
    actual = torch.backends.cpu.get_cpu_capability()
    if actual.lower() != wanted.lower():
        message = (f"egspo: PyTorch runs {actual} kernels, but the pin asks for ATEN_CPU_CAPABILITY={wanted}")
        if not torch_was_imported:
            raise RuntimeError(message + "; set it before torch is imported")
        warnings.warn(message + " (torch was imported before the pin was set)", PinUnsupported, stacklevel=2)


def pin() -> None:
    """Pin this process: the variables (effective only if torch is not yet imported), then torch's settings."""
    torch_was_imported = "torch" in sys.modules
    pin_environment()
    apply_torch_settings(torch_was_imported=torch_was_imported)


def describe() -> dict:
    """What the numbers of this process were made with: mode, instruction sets, threads, processor, versions."""
    import importlib.metadata as metadata

    import torch

    versions = {}
    for name in ("torch", "transformers", "tokenizers", "accelerate", "peft", "datasets", "numpy", "pandas",
                 "snakemake", "math-verify", "egspo"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    supported, why = pin_supported()
    return {
        "numerics": mode(),
        "pin_supported": supported,
        "pin_unsupported_reason": why or None,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_variables": {name: os.environ.get(name) for name in (*ISA_VARIABLES, *THREAD_VARIABLES)},
        "torch_threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "processor": processor_name(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def write_description(path: str | os.PathLike) -> Path:
    """Write :func:`describe` as JSON to ``path`` (atomically): where a run's tables came from. The pin's torch
    settings are applied first: the writer is `egspo report`, a command that computes no tensors and so skips them,
    and the file is to record what the model commands ran with (threads, deterministic algorithms), not the
    defaults of the process that wrote it."""
    import json

    from egspo.utils.files import atomic_write_text

    pin()
    return atomic_write_text(path, json.dumps(describe(), indent=1) + "\n")


def main() -> int:
    """`python -m egspo.utils.numerics`: pin this process as every `egspo` command does and print the result."""
    import json

    pin()
    print(json.dumps(describe(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
