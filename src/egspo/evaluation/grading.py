"""``egspo grade``: score completions of a task, row by row, and print the accuracy.

Input: JSONL, one object per line: the task's dataset row plus ``completion`` (a string). Output: the same rows with
``reward`` (float), ``correct`` (bool) and the task's extra fields (e.g. Sudoku ``cell_accuracy``); same-named input
fields are replaced. A bad line (invalid JSON, not an object, a missing field, a non-string completion) stops the
command with the line number and the field name, and no output file is left behind (the output is written to a temp
file and renamed into place only when every row is graded).

``--compat authors`` scores with the authors' code semantics instead (:mod:`egspo.tasks.authors_compat`): ``reward``
is their training reward, ``correct`` their evaluation parser's verdict.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from egspo.utils.files import iter_jsonl_objects, write_jsonl_atomic
from egspo.tasks import TASK_NAMES, get_task


class GradeInputError(ValueError):
    """A malformed input row (the message names the file, the line and the field)."""


def _required_fields(task_name: str, compat: str | None) -> tuple[str, ...]:
    if compat == "authors":
        from egspo.tasks.authors_compat import COMPAT_FIELDS

        if task_name not in COMPAT_FIELDS:
            raise ValueError(f"--compat authors supports {', '.join(COMPAT_FIELDS)}; not {task_name!r}")
        return COMPAT_FIELDS[task_name]
    return tuple(get_task(task_name).required_fields)


def read_rows(path: str | os.PathLike, fields: tuple[str, ...], task=None) -> list[dict[str, Any]]:
    """Rows of a JSONL file, each checked for ``completion`` (a string) and ``fields`` and, given a ``task``, by
    ``task.check_row`` (e.g. a Sudoku puzzle of the wrong length); an empty file is an error."""
    rows = []
    for lineno, row in iter_jsonl_objects(path, GradeInputError):
        for field in ("completion", *fields):
            if field not in row:
                raise GradeInputError(f"{path}: line {lineno}: missing field {field!r}")
        if not isinstance(row["completion"], str):
            raise GradeInputError(
                f"{path}: line {lineno}: field 'completion' must be a string, got {type(row['completion']).__name__}"
            )
        if task is not None:
            try:
                row = task.check_row(row, f"{path}: line {lineno}", for_prompt=False)
            except ValueError as exc:
                raise GradeInputError(str(exc)) from None
        rows.append(row)
    if not rows:
        raise GradeInputError(f"{path}: no rows to grade (the file is empty)")
    return rows


def grade_rows(task_name: str, rows: list[dict[str, Any]], compat: str | None = None) -> list[dict[str, Any]]:
    """Each row with ``reward``, ``correct`` and the task's extras added (the library entry point of this command),
    JSON-safe (:func:`egspo.tasks.answers.json_safe`: no value a JSON writer cannot write aborts the file)."""
    from egspo.tasks.answers import json_safe

    if compat not in (None, "authors"):
        raise ValueError(f"compat must be None or 'authors', got {compat!r}")
    out = []
    if compat == "authors":
        from egspo.tasks.authors_compat import compat_grade

        for row in rows:
            result = compat_grade(task_name, row["completion"], row)
            out.append(json_safe({**row, **result, "reward": float(result["reward"]),
                                  "correct": bool(result["correct"])}))
        return out
    task = get_task(task_name)
    results = task.grade_batch([r["completion"] for r in rows], rows)
    for row, result in zip(rows, results, strict=True):
        out.append(json_safe({**row, **result, "reward": float(result["reward"]), "correct": bool(result["correct"])}))
    return out


def summarize(graded: list[dict[str, Any]]) -> dict[str, Any]:
    """``n``, ``accuracy`` (mean of ``correct``), ``mean_reward`` and, where rows have it, ``cell_accuracy``."""
    n = len(graded)
    summary: dict[str, Any] = {
        "n": n,
        "accuracy": sum(r["correct"] for r in graded) / n if n else 0.0,
        "mean_reward": sum(r["reward"] for r in graded) / n if n else 0.0,
    }
    if n and all("cell_accuracy" in r for r in graded):
        summary["cell_accuracy"] = sum(r["cell_accuracy"] for r in graded) / n
    return summary


def grade_file(task_name: str, input_path, output_path, compat: str | None = None) -> dict[str, Any]:
    """Grade ``input_path`` into ``output_path``; returns the summary (plus ``seconds``)."""
    if task_name not in TASK_NAMES:
        raise ValueError(f"unknown task {task_name!r}; known tasks: {', '.join(TASK_NAMES)}")
    start = time.perf_counter()
    rows = read_rows(input_path, _required_fields(task_name, compat), None if compat else get_task(task_name))
    graded = grade_rows(task_name, rows, compat)
    write_jsonl_atomic(output_path, graded)
    return {**summarize(graded), "seconds": time.perf_counter() - start}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASK_NAMES)
    parser.add_argument("--input", required=True, help="JSONL: dataset rows plus a 'completion' field")
    parser.add_argument("--output", required=True, help="JSONL: the rows plus 'reward', 'correct' and task extras")
    parser.add_argument("--compat", choices=["authors"], default=None,
                        help="score with the authors' reward and eval-parser semantics instead of ours")


def run(args: argparse.Namespace) -> int:
    summary = grade_file(args.task, args.input, args.output, args.compat)  # errors: egspo.cli reports them (exit 2)
    extra = f" cell_accuracy={summary['cell_accuracy']:.4f}" if "cell_accuracy" in summary else ""
    mode = f" compat={args.compat}" if args.compat else ""
    print(f"grade: task={args.task}{mode} n={summary['n']} accuracy={summary['accuracy']:.4f}"
          f" mean_reward={summary['mean_reward']:.4f}{extra} ({summary['seconds']:.2f}s) -> {args.output}")
    return 0
