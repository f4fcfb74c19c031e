"""Sudoku (4x4) as the authors score it: training reward = the fraction of the puzzle's empty cells that the last
answer block's digits fill correctly; eval takes the first of their five answer patterns that matches."""

from __future__ import annotations

import re
from typing import Any

from egspo.tasks.authors_compat.common import Row, failure, tag_blocks


_FENCE = re.compile(r"```\s*([\d\s]+)```")
_AFTER_CLOSE = re.compile(r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)", re.DOTALL)
_DIGITS_BEFORE_CLOSE = re.compile(r"(\d{16})\s*</answer>")
_DIGITS_16 = re.compile(r"\b(\d{16})\b")


def _sudoku_candidates(text: str):
    """The reference's five patterns in order, each as its first match's group (or None), in linear time:
    1 ``<answer>.*?```\\s*([\\d\\s]+)```` 2 ``<answer>(.*?)(?:<|eot_id|>|<|endoftext|>|</answer>)``
    3 ``</answer>\\s*(.*?)(?:<|eot_id|>|<|endoftext|>|$)`` 4 ``.*?(\\d{16})\\s*</answer>`` 5 ``\\b(\\d{16})\\b``
    (all DOTALL). A leading ``<answer>.*?`` or ``.*?`` only moves the search start: the first ``<answer>`` is the
    leftmost start that can match at all."""
    first_open = text.find("<answer>")
    if first_open >= 0:
        m = _FENCE.search(text, first_open + len("<answer>"))
        yield m.group(1) if m else None
        body = first_open + len("<answer>")
        ends = [e for e in (text.find(t, body) for t in ("<|eot_id|>", "<|endoftext|>", "</answer>")) if e >= 0]
        yield text[body : min(ends)] if ends else None
    m = _AFTER_CLOSE.search(text)
    yield m.group(1) if m else None
    m = _DIGITS_BEFORE_CLOSE.search(text)
    yield m.group(1) if m else None
    m = _DIGITS_16.search(text)
    yield m.group(1) if m else None


def sudoku_train_reward(completion: str, puzzle: str, solution: str) -> float:
    matches = tag_blocks(completion)
    empty = [i for i in range(16) if puzzle[i] == "0"]  # IndexError for a short puzzle, as in the reference
    if not matches:
        return 0.0
    answer = "".join(ch for ch in matches[-1].strip() if ch.isdigit())
    correct = sum(1 for i in empty if i < len(answer) and answer[i] == solution[i])
    return correct / len(empty)  # ZeroDivisionError for a full puzzle, as in the reference


def sudoku_eval_extract(completion: str) -> str:
    for group in _sudoku_candidates(completion):
        if group is not None and group.strip():
            return re.sub(r"\s", "", group.strip())
    return ""


def sudoku_compat(completion: str, row: Row) -> dict[str, Any]:
    puzzle, solution = str(row["Puzzle"]), str(row["Solution"])
    try:
        reward = sudoku_train_reward(completion, puzzle, solution)
    except (IndexError, ZeroDivisionError) as exc:
        return failure(f"sudoku_reward_func raises {exc.__class__.__name__}")
    if len(puzzle) != 16 or not puzzle.isdigit():
        return failure("parse_sudoku_answers asserts on a question without a 16-digit puzzle", reward=reward)
    extracted = sudoku_eval_extract(completion)
    empty = [i for i in range(16) if puzzle[i] == "0"]
    cells = 0
    if extracted:
        extracted = grid = (extracted + "0" * 16)[:16]  # padded with zeros / truncated to 16 characters
        try:
            cells = sum(1 for i in empty if grid[i] == solution[i])
        except IndexError:
            return failure("parse_sudoku_answers raises IndexError on a short solution", reward=reward)
    accuracy = cells / len(empty) if empty else 0.0
    return {"reward": reward, "correct": accuracy == 1.0, "eval_extracted": extracted, "eval_correct_cells": cells,
            "eval_empty_cells": len(empty), "eval_accuracy": accuracy}
