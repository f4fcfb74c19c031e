"""Compatibility mode: what the EGSPO authors' training rewards and evaluation parsers return.

Reproduces, from the behavioural description in ``shared/data/reference_rewards/README.md`` and its data (no
reference code was available or copied), the values of the authors' ``reward_func.py`` / ``math500_utils.py``
(training) and ``eval/parse_and_get_acc.py`` (evaluation) at commit a7d618b, quirks included, so tables can show the
paper's own numbers next to our graders (``egspo grade --compat authors``). Two departures, both forced:

- Countdown expressions are never ``eval``-ed: :func:`egspo.tasks.arith.evaluate_python` reproduces ``eval`` on the
  authors' character whitelist (``//`` and ``**`` included) by an AST walk.
- Where the authors' code raises (an unbalanced ``\\boxed{`` in a MATH solution, a short Sudoku puzzle, ...) or would
  hang (an integer power beyond ``arith.MAX_INT_BITS`` bits, e.g. ``9**9**9``), the score is 0 and the result says so
  (``authors_failure``).

Each ``<task>_compat(completion, row)`` returns ``{"reward": training reward, "correct": eval-time correctness, ...}``
with the individual values as extra keys. ``reward`` is the trainer's total: GSM8K the sum of its five functions,
MATH correctness + format, Countdown / Sudoku the single reward. One module per task family (``gsm8k``,
``math500``, ``countdown``, ``sudoku``; shared scans in ``common``); :func:`compat_grade` dispatches on the task name.
"""

from __future__ import annotations

from typing import Any

from egspo.tasks.authors_compat.common import Row
from egspo.tasks.authors_compat.countdown import countdown_compat
from egspo.tasks.authors_compat.gsm8k import gsm8k_compat
from egspo.tasks.authors_compat.math500 import math500_compat
from egspo.tasks.authors_compat.sudoku import sudoku_compat

COMPAT_TASKS = ("gsm8k", "math500", "countdown", "sudoku")

_COMPAT = {"gsm8k": gsm8k_compat, "math500": math500_compat, "countdown": countdown_compat, "sudoku": sudoku_compat}
#: row fields each compat scorer reads
COMPAT_FIELDS = {"gsm8k": ("answer",), "math500": ("solution", "answer"), "countdown": ("numbers", "target"),
                 "sudoku": ("Puzzle", "Solution")}


def compat_grade(task: str, completion: str, row: Row) -> dict[str, Any]:
    """The authors' training reward (``reward``) and eval correctness (``correct``) for one completion."""
    if task not in _COMPAT:
        raise ValueError(f"--compat authors supports {', '.join(COMPAT_TASKS)}; not {task!r}")
    return _COMPAT[task](completion, row)
