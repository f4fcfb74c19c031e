"""Countdown as the authors score it: the last answer block's expression, its numbers a permutation of the given ones,
evaluated on their character whitelist (by :func:`egspo.tasks.arith.evaluate_python`, never ``eval``): 1 when within
1e-5 of the target, 0.1 otherwise, 0 without an answer block. Eval takes the boxed expression (else the whole text),
cut to its first ``expr =`` run, and is correct when its numbers match and its value is within 1e-5 of the target."""

from __future__ import annotations

import re
from typing import Any

from egspo.tasks.arith import ArithError, ArithLimitError, evaluate_python
from egspo.tasks.authors_compat.common import Row, failure, first_block, tag_blocks
from egspo.tasks.authors_compat.math500 import last_boxed_only_string, remove_boxed


_WHITELIST = re.compile(r"^[\d+\-*/().\s]+$")


class _Hang(Exception):
    pass


def _numbers_match(expr: str, numbers) -> bool:
    try:
        return sorted(int(n) for n in re.findall(r"\d+", expr)) == sorted(int(n) for n in numbers)
    except ValueError:  # e.g. a digit run beyond Python's int-string limit; the reference catches it too
        return False


def _evaluate(expr: str):
    """The reference's evaluate_equation: whitelist, then eval (here: the bounded AST walk). None on failure."""
    if not _WHITELIST.match(expr):
        return None
    try:
        return evaluate_python(expr)
    except ArithLimitError as exc:
        raise _Hang(str(exc)) from None
    except ArithError:
        return None


def _close(result, target) -> bool:
    try:
        return bool(abs(result - target) < 1e-5)
    except (TypeError, ValueError, OverflowError):
        return False


def countdown_train_reward(completion: str, numbers, target) -> float:
    blocks = tag_blocks(completion)
    if not blocks:
        return 0.0
    expr = blocks[-1].strip()
    if not _numbers_match(expr, numbers):
        return 0.1
    result = _evaluate(expr)
    if result is None:
        return 0.1
    return 1.0 if _close(result, target) else 0.1


def countdown_eval_extract(text: str) -> str:
    if "\\boxed" in text:
        try:
            expr = remove_boxed(last_boxed_only_string(text))
        except (TypeError, AssertionError):
            block = first_block(text)
            expr = block.strip() if block is not None else text
    else:
        expr = text  # answer tags are ignored: the whole generation is the candidate
    expr = expr.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
    # re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", expr), linear: the first maximal run of those characters that is
    # followed by "=" and a digit, dot or space (the run's start is the leftmost match start)
    for run in re.finditer(r"[0-9+\-*/() ]+", expr):
        if expr[run.end() : run.end() + 1] == "=" and expr[run.end() + 1 : run.end() + 2] in set("0123456789. "):
            if run.end() + 1 < len(expr):
                return run.group(0).strip()
    return expr


def countdown_compat(completion: str, row: Row) -> dict[str, Any]:
    numbers, target = row["numbers"], row["target"]
    try:
        reward = countdown_train_reward(completion, numbers, target)
    except _Hang as exc:
        return failure(f"the training reward would hang: {exc}")
    expr = countdown_eval_extract(completion)
    value: Any = None
    correct = False
    if _numbers_match(expr, numbers):
        try:
            result = _evaluate(expr)
        except _Hang as exc:
            return failure(f"the eval parser would hang: {exc}", reward=reward)
        value = float("inf") if result is None else result
        correct = _close(value, target)
    return {"reward": reward, "correct": correct, "eval_extracted": expr,
            "eval_value": value if isinstance(value, (int, float)) else (None if value is None else str(value))}
