"""`egspo <command>`: the entry point that Snakemake rules and users call.

Each command lives in its own module, which defines ``configure(parser)`` (adds the command's arguments) and
``run(args) -> int | None``. Modules are imported only when their command runs, so ``egspo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "gradcheck": ("egspo.verify.gradcheck", "exact-enumeration check of every gradient estimator against the true gradient"),
    "grade": ("egspo.evaluation.grading", "score completions of a task: reward and correctness per row, accuracy summary"),
    "data": ("egspo.tasks.prepare", "write a task's train / validation / test JSONL files (tiny generators or real loaders)"),
    "build-model": ("egspo.models.tiny", "build the tiny preset's masked-diffusion model and tokenizer as a HF directory"),
    "sft": ("egspo.sft.trainer", "masked-diffusion supervised warm start (LLaDA's 1/t-weighted masked cross-entropy)"),
    "rl": ("egspo.rl.trainer", "RL post-training: diffu-GRPO, EGSPO, EGSPO-SA (checkpoint / resume)"),
    "eval": ("egspo.evaluation.evaluate", ("greedy generation over a grid (models x generation lengths x splits, each model "
                                  "loaded once), then grading: JSONL + metrics JSON per cell")),
    "merge": ("egspo.models.merge", "merge a LoRA adapter checkpoint into its base model and save a plain HF model dir"),
    "report": ("egspo.report.build", "tables (CSV + Markdown) and figures (PNG + PDF) in results/ from run outputs"),
    "trace": ("egspo.evaluation.trace", "record per-step entropy, selected steps and one-step-fill rewards of trajectories "
                             "for Figure 2"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egspo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints usage / help, exits
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"egspo {name}", description=help_text)
    module.configure(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
