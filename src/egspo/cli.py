"""`egspo <command>`: the entry point that Snakemake rules and users call.

Each command lives in its own module, which defines ``configure(parser)`` (adds the command's arguments) and
``run(args) -> int | None``. Modules are imported only when their command runs, so ``egspo --help`` stays fast.

Errors: a user error (:class:`egspo.utils.errors.UserError`, any ``ValueError``, a missing / unreadable / unwritable
file, a full disk, an output another process is writing) prints one line ``egspo <command>: error: <message>`` and
exits 2; any other exception prints one line and exits 1. ``egspo --debug <command> ...`` shows the traceback.
Every command that writes outputs holds their locks (:mod:`egspo.utils.locking`) for its whole run; taking them is
also the check that the output locations are writable, done before any model work. Negative numbers are accepted as
flag values (``--lr -1e-3``); the command's own checks decide whether they are allowed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from egspo.utils import numerics

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gradcheck": ("egspo.verify.gradcheck", "exact-enumeration check of every gradient estimator against the true gradient"),
    "grade": ("egspo.evaluation.grading", "score completions of a task: reward and correctness per row, accuracy summary"),
    "data": ("egspo.tasks.prepare", "write a task's train / validation / test JSONL files (tiny generators or real loaders)"),
    "build-model": ("egspo.models.tiny", "build the tiny preset's masked-diffusion model and tokenizer as a HF directory"),
    "sft": ("egspo.sft.trainer", "masked-diffusion supervised warm start (LLaDA's 1/t-weighted masked cross-entropy)"),
    "rl": ("egspo.rl.command", "RL post-training: diffu-GRPO, EGSPO, EGSPO-SA (checkpoint / resume)"),
    "eval": ("egspo.evaluation.evaluate", ("greedy generation over a grid (models x generation lengths x splits, each model "
                                  "loaded once), then grading: JSONL + metrics JSON per cell")),
    "merge": ("egspo.models.merge", "merge a LoRA adapter checkpoint into its base model and save a plain HF model dir"),
    "report": ("egspo.report.build", "tables (CSV + Markdown) and figures (PNG + PDF) in results/ from run outputs"),
    "fidelity": ("egspo.fidelity.check", "check DIR: recompute an authors-reference fixture directory in authors mode"),
    "trace": ("egspo.evaluation.trace", "record per-step entropy, selected steps and one-step-fill rewards of trajectories "
                             "for Figure 2"),
}


# What each command writes, from its parsed arguments: the outputs it locks for its whole run.
def _eval_outputs(args: argparse.Namespace) -> list[str]:
    from egspo.evaluation.evaluate import plan

    models, _, jobs = plan(args)
    if args.out_dir is None:
        return [str(job.out) for job in jobs]
    return [os.path.join(args.out_dir, name) for name, _ in models]


#: commands that compute no tensors: they skip torch's settings of the numerics pin (importing torch costs seconds)
#: unless something they ran imported torch anyway
TORCH_FREE = frozenset({"grade", "data", "report"})

#: commands that write nothing (every other command has a WRITES entry; tests/test_locking.py checks this)
READ_ONLY = frozenset({"fidelity"})

#: the `egspo report` flags that name outputs (a stem or a file)
REPORT_OUTPUTS = ("table", "gains", "figure", "environment", "per_seed", "pairs_table")

WRITES: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "gradcheck": lambda a: [a.out],
    "grade": lambda a: [a.output],
    "data": lambda a: [os.path.join(a.out_dir, f"{s}.jsonl") for s in a.splits.split(",") if s],
    "build-model": lambda a: [a.out],
    "sft": lambda a: [a.out],
    "rl": lambda a: [a.out],
    "eval": _eval_outputs,
    "merge": lambda a: [a.out],
    "report": lambda a: [v for k in REPORT_OUTPUTS if (v := getattr(a, k, None))],
    "trace": lambda a: [a.out],
}

# argparse reads a token as a negative number (a value, not an option) only in its own narrow form ("-1", "-.5");
# this one also takes exponents and inf / nan, so `--lr -1e-3` reaches the command's own range check.
_NEGATIVE_NUMBER = re.compile(r"^-(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with :data:`_NEGATIVE_NUMBER` (sub-parsers inherit the class)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER


def _is_main_process() -> bool:
    """False on the non-zero ranks of a multi-process launch (they share rank 0's outputs and lock)."""
    return os.environ.get("RANK", "0") == "0"


def _user_error(exc: BaseException) -> bool:
    from egspo.utils.errors import is_disk_full

    return isinstance(exc, (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                            FileExistsError)) or is_disk_full(exc)


def _message(exc: BaseException) -> str:
    from egspo.utils.errors import DiskFullError, is_disk_full

    if is_disk_full(exc) and not isinstance(exc, DiskFullError):
        where = getattr(exc, "filename", None)
        return f"no space left on the device{f' writing {where}' if where else ''} ({exc})"
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, ValueError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def _run_command(name: str, module, args: argparse.Namespace, command: str) -> int:
    from egspo.utils.locking import hold_output_locks

    outputs = WRITES.get(name, lambda a: [])(args) if _is_main_process() else []
    with hold_output_locks((Path(o) for o in outputs), command=command[:300]):
        return int(module.run(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="egspo", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints usage / help, exits
        return 2
    name = argv[0]
    try:
        return run_command(argv)
    except KeyboardInterrupt:
        print(f"egspo {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place every command's errors are reported
        if debug:
            traceback.print_exc()
        user = _user_error(exc)
        hint = "" if debug or user else " (an internal error: rerun with --debug for the traceback)"
        print(f"egspo {name}: error: {_message(exc)}{hint}", file=sys.stderr)
        return 2 if user else 1


def run_command(argv: list[str]) -> int:
    """Parse and run ``egspo COMMAND ARGS...`` with the command's outputs locked; errors propagate (the entry point
    for code and tests; :func:`main` reports them)."""
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise ValueError(f"unknown command {name!r}; commands: {', '.join(COMMANDS)}")
    module_name, help_text = COMMANDS[name]
    # pinned CPU kernels and threads (egspo.utils.numerics): the variables must be set before torch is imported
    torch_was_imported = "torch" in sys.modules
    numerics.pin_environment()
    module = importlib.import_module(module_name)
    parser = ArgumentParser(prog=f"egspo {name}", description=help_text)
    module.configure(parser)
    args = parser.parse_args(rest)
    if name not in TORCH_FREE or "torch" in sys.modules:
        numerics.apply_torch_settings(torch_was_imported=torch_was_imported)
    return _run_command(name, module, args, " ".join(["egspo", *argv]))


if __name__ == "__main__":
    sys.exit(main())
