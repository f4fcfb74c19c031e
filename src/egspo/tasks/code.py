"""Shared pieces of the code tasks (HumanEval, MBPP, KodCode): the d1-style code prompt, code extraction from
completions, the format check, and a ``CodeTask`` base that grades through the sandbox.

Prompt (d1 family, zero-shot): the d1 system prompt (reasoning / answer tags), the problem, and the request to put
the complete Python code in a fenced block inside the answer tags; the tokenizer's chat template is applied when it
has one. The tiny style is a compact prompt without the reasoning request (the tiny preset does not train on code).

Code extraction (``extract_code``), first rule that applies:

1. the last closed ``<answer>...</answer>`` block; inside it the first fenced block if there is one, else its text;
2. otherwise the last fenced block (```` ```python ````, ```` ```py ````, or a bare ```` ``` ````) of the completion;
3. otherwise the raw completion (a continuation of the prompt, as in the original HumanEval protocol).

Leading indentation of the first code line is kept (a function-body continuation must stay indented); blank lines
around the code and trailing whitespace are removed.

Reward (training): ``r = fraction of unit tests passed + FORMAT_REWARD * format_ok`` where ``format_ok`` means the
completion is ``<reasoning>...</reasoning> <answer>...</answer>`` (any whitespace) and the extracted code parses.
``FORMAT_REWARD = 0.1`` (the size of the d1 Countdown format bonus: small next to correctness). Grade (evaluation):
``correct`` = every test passed in the sandbox (pass@1 of the one greedy completion).
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from egspo.sandbox.runner import Program, SandboxResult, run_many
from egspo.tasks.answers import SYSTEM_PROMPT, chat_prompt, check_style
from egspo.tasks.base import Row, Task

FORMAT_REWARD = 0.1
CODE_INSTRUCTION = "Write the complete Python code in a single ```python code block inside the <answer> tags."

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_FORMAT = re.compile(r"\s*<reasoning>.*?</reasoning>\s*<answer>.*?</answer>\s*", re.DOTALL)


def _tidy(code: str) -> str:
    lines = [line.rstrip() for line in code.split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + ("\n" if lines else "")


def extract_code(completion: str) -> str:
    """The code of ``completion`` by the rules in the module docstring ("" for a non-string)."""
    if not isinstance(completion, str):
        return ""
    blocks = _ANSWER.findall(completion)
    if blocks:
        inner = blocks[-1]
        fences = _FENCE.findall(inner)
        return _tidy(fences[0] if fences else inner)
    fences = _FENCE.findall(completion)
    if fences:
        return _tidy(fences[-1])
    return _tidy(completion)


def _parse(code: str) -> ast.Module | None:
    """``ast.parse`` without warnings (invalid escapes in old MBPP code); None if it does not parse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None


def parses(code: str) -> bool:
    return bool(code.strip()) and _parse(code) is not None


def format_ok(completion: str) -> bool:
    """Reasoning block then answer block, and the extracted code is valid Python."""
    return isinstance(completion, str) and bool(_FORMAT.fullmatch(completion)) and parses(extract_code(completion))


def code_prompt(problem: str, style: str = "d1", tokenizer: Any = None) -> str:
    """The d1-family code prompt for a problem statement (see the module docstring)."""
    if check_style(style) == "tiny":
        return chat_prompt(f"{problem.strip()}\n\nAnswer with the Python code inside <answer> tags.", tokenizer)
    return chat_prompt(f"{SYSTEM_PROMPT}\n{problem.strip()}\n\n{CODE_INSTRUCTION}", tokenizer)


def defined_names(code: str) -> set[str]:
    """Names of top-level functions and classes in ``code`` (empty if it does not parse)."""
    tree = _parse(code)
    if tree is None:
        return set()
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def called_names(code: str) -> set[str]:
    """Names called as plain functions anywhere in ``code``."""
    tree = _parse(code)
    if tree is None:
        return set()
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def require(row: Row, fields: Sequence[str], task: str) -> None:
    for name in fields:
        if name not in row:
            raise ValueError(f"{task} row is missing field {name!r} (has: {', '.join(sorted(row))})")


class CodeTask(Task):
    """A benchmark graded by running unit tests in the sandbox. Subclasses build the ``Program``."""

    #: sandbox limits for one completion (wall-clock seconds include interpreter start-up on a loaded machine)
    timeout_s: float = 10.0
    memory_mb: int = 1024
    max_workers: int | None = None

    @abstractmethod
    def program(self, completion: str, row: Row) -> Program:
        """The sandbox program that tests ``completion`` on ``row`` (ValueError for a malformed row)."""

    def run(self, completions: Sequence[str], rows: Sequence[Row]) -> list[SandboxResult]:
        if len(completions) != len(rows):
            raise ValueError(f"{len(completions)} completions but {len(rows)} rows")
        programs = [self.program(c if isinstance(c, str) else "", r) for c, r in zip(completions, rows, strict=True)]
        return run_many(programs, max_workers=self.max_workers or os.cpu_count() or 1, timeout_s=self.timeout_s,
                        memory_mb=self.memory_mb)

    @staticmethod
    def _grade_one(completion: str, result: SandboxResult) -> dict[str, Any]:
        fmt = format_ok(completion)
        return {"correct": bool(result.passed), "reward": result.fraction_passed + FORMAT_REWARD * fmt,
                "pass_fraction": result.fraction_passed, "tests_passed": result.tests_passed,
                "tests_total": result.tests_total, "status": result.status, "format_ok": fmt}

    def grade_batch(self, completions: Sequence[str], rows: Sequence[Row]) -> list[dict[str, Any]]:
        results = self.run(completions, rows)
        return [self._grade_one(c, r) for c, r in zip(completions, results, strict=True)]

    def reward_batch(self, completions: Sequence[str], rows: Sequence[Row]) -> list[float]:
        return [g["reward"] for g in self.grade_batch(completions, rows)]

    def grade(self, completion: str, row: Row) -> dict[str, Any]:
        return self.grade_batch([completion], [row])[0]

    def reward(self, completion: str, row: Row) -> float:
        return float(self.grade(completion, row)["reward"])
