"""4x4 Sudoku (the d1 family's planning benchmark): data, prompts, reward and grader.

Rows use the d1 CSV schema: ``Puzzle`` (16 digits, row-major, ``0`` = empty) and ``Solution`` (16 digits 1-4).

Prompts. ``d1``: the d1 Sudoku instructions with the reasoning/answer format. ``tiny``: ``sudoku:`` followed by the
16 cells with ``.`` for an empty cell, e.g. ``sudoku:31.22....21..32.``; the target is ``<answer>`` + the 16-digit
solution + ``</answer>``.

Scoring (intended semantics; see docs/graders.md for where this differs from the authors' code). The answer is the
last closed ``<answer>`` block without its row labels (``R1:``, ``Row 2 -``, ``row #3``); its Unicode decimal digits,
read as ASCII digits, are the grid and every other character is a separator. It must hold exactly 16 digits and keep
every given cell of the puzzle; otherwise the answer is invalid and scores 0. A valid grid *solves* the puzzle when
every row, column and 2x2 box holds 1-4 once: 124 of the 500 test puzzles have 2 to 4 solutions, and any of them
solves the puzzle, not only the stored one. For a valid grid with E empty cells in the puzzle,

    correct       = the grid solves the puzzle                              (full solve)
    cell_accuracy = 1 if correct, else (1/E) * #{empty cells i : answer_i == solution_i}   (the d1 metric; reward)

Tiny data: every one of the 288 valid 4x4 grids is enumerated; puzzles are made by blanking cells while the solution
stays unique (proved by counting completions); train / validation / test are disjoint *by solution grid*.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any

from egspo.tasks.answers import SYSTEM_PROMPT, ascii_digits, chat_prompt, check_style, check_tiny_text, last_answer
from egspo.tasks.base import Row, Task
from egspo.tasks.sources import (
    carve_validation,
    check_split,
    fetch_url,
    is_path_source,
    read_table,
)

SIZE = 16
# peers[i]: the cells sharing a row, column or 2x2 box with cell i
_PEERS: tuple[frozenset[int], ...] = tuple(
    frozenset(
        j
        for j in range(SIZE)
        if j != i and (j // 4 == i // 4 or j % 4 == i % 4 or (j // 8, (j % 4) // 2) == (i // 8, (i % 4) // 2))
    )
    for i in range(SIZE)
)

REPO_COMMIT = "https://raw.githubusercontent.com/vishnutez/egspo-dllm-rl/a7d618b5fe25f3af78913e1160d7fd5e290cf000"
TEST_URL = f"{REPO_COMMIT}/dataset/4x4_test_sudoku.csv"
#: sha256 of the authors' test file (byte-identical to the d1 family's public 4x4 test set, 500 rows)
TEST_SHA256 = "ef86c7c28ebef88484d85fda59b3909a7b621241aa1abf36343437dbc4a3ffb6"
#: the d1 family's training puzzles (not pinned: no reference copy to hash)
TRAIN_URL = f"{REPO_COMMIT}/dataset/4x4_sudoku_unique_puzzles.csv"
HUB_VALIDATION_SIZE = 256

D1_INSTRUCTIONS = (
    "Please solve the following 4x4 Sudoku puzzle. The puzzle is given as a 16-character string read left to "
    "right, top to bottom, where '0' marks an empty cell.\n\n"
    "Rules:\n"
    "- Fill every empty cell with a digit from 1 to 4\n"
    "- Each row must contain the digits 1-4 exactly once\n"
    "- Each column must contain the digits 1-4 exactly once\n"
    "- Each 2x2 box must contain the digits 1-4 exactly once\n\n"
    "Important: your solution must be a COMPLETE 16-character string of digits 1-4 only, the solved grid.\n\n"
)


# ---- solver -------------------------------------------------------------------------------------------------------
def solve(puzzle: str, limit: int | None = 2) -> list[str]:
    """Completions of ``puzzle`` (``0`` = empty) that satisfy the Sudoku rules, by backtracking with the
    most-constrained empty cell first; stops after ``limit`` solutions (``None``: all)."""
    cells = [int(c) for c in check_grid_text(puzzle, "puzzle", allow_zero=True)]
    for i, v in enumerate(cells):
        if v and any(cells[j] == v for j in _PEERS[i]):
            return []  # the givens already conflict
    found: list[str] = []

    def backtrack() -> bool:
        best, best_options = -1, None
        for i in range(SIZE):
            if cells[i] == 0:
                options = [d for d in (1, 2, 3, 4) if all(cells[j] != d for j in _PEERS[i])]
                if best_options is None or len(options) < len(best_options):
                    best, best_options = i, options
                if not options:
                    return False
        if best_options is None:
            found.append("".join(map(str, cells)))
            return limit is not None and len(found) >= limit
        for d in best_options:
            cells[best] = d
            if backtrack():
                return True
        cells[best] = 0
        return False

    backtrack()
    return found


@functools.lru_cache(maxsize=1)
def all_grids() -> tuple[str, ...]:
    """All valid completed 4x4 grids (there are 288), sorted."""
    return tuple(sorted(solve("0" * SIZE, limit=None)))


@functools.lru_cache(maxsize=1)
def _cell_masks() -> tuple[tuple[int, ...], ...]:
    # masks[i][d]: bit g set iff all_grids()[g] has digit d at cell i
    grids = all_grids()
    return tuple(
        tuple(sum(1 << g for g, grid in enumerate(grids) if grid[i] == str(d)) for d in range(5)) for i in range(SIZE)
    )


def count_completions(puzzle: str) -> int:
    """Number of the 288 grids that agree with every given cell of ``puzzle`` (a second, independent solver)."""
    masks = _cell_masks()
    consistent = (1 << len(all_grids())) - 1
    for i, c in enumerate(puzzle):
        if c != "0":
            consistent &= masks[i][int(c)]
    return consistent.bit_count()


def check_grid_text(text: Any, name: str, allow_zero: bool) -> str:
    allowed = "01234" if allow_zero else "1234"
    if not isinstance(text, str) or len(text) != SIZE or any(c not in allowed for c in text):
        raise ValueError(f"{name} must be a string of {SIZE} digits in {allowed}, got {text!r}")
    return text


# ---- tiny generator ---------------------------------------------------------------------------------------------
def _split_counts(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Share ``total`` items among splits proportionally to ``sizes`` (at least one for every non-empty split)."""
    wanted = {s: n for s, n in sizes.items() if n > 0}
    if len(wanted) > total:
        raise ValueError(f"cannot give {len(wanted)} splits disjoint items from a pool of {total}")
    counts = {s: max(1, int(total * n / sum(wanted.values()))) for s, n in wanted.items()}
    largest = max(counts, key=lambda s: wanted[s])
    counts[largest] += total - sum(counts.values())
    return {s: counts.get(s, 0) for s in sizes}


def generate_tiny(
    seed: int = 0,
    n_train: int = 2000,
    n_validation: int = 128,
    n_test: int = 256,
    min_empty: int = 6,
    max_empty: int = 10,
) -> dict[str, list[Row]]:
    """Tiny-preset puzzles: the 288 grids are shuffled with ``seed`` and shared among the splits in proportion to
    their sizes, so no solution grid appears in two splits; each puzzle blanks a uniformly drawn number of cells in
    [min_empty, max_empty] of one of its split's grids, in a random order, keeping only removals after which the
    solution stays unique. Puzzles are distinct within a split."""
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    for name, n in sizes.items():
        if n < 0:
            raise ValueError(f"n_{name} must be >= 0, got {n}")
    if not 1 <= min_empty <= max_empty <= 12:
        raise ValueError(f"need 1 <= min_empty <= max_empty <= 12 (a unique 4x4 puzzle has >= 4 givens); "
                         f"got min_empty={min_empty}, max_empty={max_empty}")
    rng = random.Random(seed)
    grids = list(all_grids())
    rng.shuffle(grids)
    counts = _split_counts(len(grids), sizes)
    out: dict[str, list[Row]] = {}
    start = 0
    for split in ("train", "validation", "test"):
        pool = grids[start : start + counts[split]]
        start += counts[split]
        rows: list[Row] = []
        seen: set[str] = set()
        attempts = 0
        while len(rows) < sizes[split]:
            attempts += 1
            if attempts > 50 * sizes[split] + 1000:
                raise ValueError(
                    f"could not make n_{split}={sizes[split]} distinct puzzles from {len(pool)} grids with "
                    f"{min_empty}-{max_empty} empty cells; lower n_{split} or widen the empty-cell range"
                )
            grid = rng.choice(pool)
            n_empty = rng.randint(min_empty, max_empty)
            cells = list(grid)
            removed = 0
            for i in rng.sample(range(SIZE), SIZE):
                if removed == n_empty:
                    break
                cells[i] = "0"
                if count_completions("".join(cells)) == 1:
                    removed += 1
                else:
                    cells[i] = grid[i]
            puzzle = "".join(cells)
            if removed == n_empty and puzzle not in seen:
                seen.add(puzzle)
                rows.append({"Puzzle": puzzle, "Solution": grid})
        out[split] = rows
    return out


# ---- scoring -------------------------------------------------------------------------------------------------------
# a row label: "R1", "Row 2", "row #3", "ROW4" followed by an optional ":", ".", ")", "=", "-" or "|"
_ROW_LABEL = re.compile(r"\b(?:row|r)\s*#?\s*[1-4](?![0-9])\s*[:.)=|-]?", re.IGNORECASE)


def parse_grid(completion: str) -> str | None:
    """The answer grid: the Nd digits of the last closed answer block (row labels removed) as ASCII, if there are
    exactly 16."""
    block = last_answer(completion)
    if block is None:
        return None
    digits = "".join(ch for ch in _ROW_LABEL.sub(" ", ascii_digits(block)) if "0" <= ch <= "9")
    return digits if len(digits) == SIZE else None


def is_solved_grid(grid: str) -> bool:
    """Whether every row, column and 2x2 box of the 16-digit ``grid`` holds the digits 1-4 once."""
    return len(grid) == SIZE and all(grid[i] in "1234" and all(grid[j] != grid[i] for j in _PEERS[i])
                                     for i in range(SIZE))


def score(completion: str, puzzle: str, solution: str) -> dict[str, Any]:
    """``{"correct", "cell_accuracy", "valid", "answer"}`` for one completion (see the module docstring)."""
    grid = parse_grid(completion)
    empty = [i for i in range(SIZE) if puzzle[i] == "0"]
    valid = grid is not None and all(grid[i] == puzzle[i] for i in range(SIZE) if puzzle[i] != "0")
    correct = valid and is_solved_grid(grid)
    if correct or not valid or not empty:
        accuracy = 1.0 if valid and (correct or not empty) else 0.0
    else:
        accuracy = sum(grid[i] == solution[i] for i in empty) / len(empty)
    return {"correct": correct, "cell_accuracy": accuracy, "valid": valid, "answer": grid}


class SudokuTask(Task):
    name = "sudoku"
    required_fields = ("Puzzle", "Solution")

    # ---- data
    def load(self, split: str, source: str = "hub", **kwargs: Any) -> list[Row]:
        check_split(split)
        if source == "tiny":
            return generate_tiny(**kwargs)[split]
        if is_path_source(source):
            return [self._checked(r, f"{source} row {i}") for i, r in enumerate(read_table(source))]
        test = [self._checked(r, f"{TEST_URL} row {i}") for i, r in
                enumerate(read_table(fetch_url(TEST_URL, "sudoku/4x4_test_sudoku.csv", TEST_SHA256)))]
        if split == "test":
            return test
        test_solutions = {r["Solution"] for r in test}
        train_all = [self._checked(r, f"{TRAIN_URL} row {i}") for i, r in
                     enumerate(read_table(fetch_url(TRAIN_URL, "sudoku/4x4_sudoku_unique_puzzles.csv")))]
        # SPG found test solutions among the training puzzles: drop them (leakage), then carve validation.
        train_all = [r for r in train_all if r["Solution"] not in test_solutions]
        train, validation = carve_validation(
            train_all, kwargs.get("n_validation", min(HUB_VALIDATION_SIZE, len(train_all) // 10)), kwargs.get("seed", 0)
        )
        return train if split == "train" else validation

    def check_row(self, row: Row, where: str, for_prompt: bool = True) -> Row:
        return self._checked(row, where)

    @staticmethod
    def _checked(row: Row, where: str) -> Row:
        for field in ("Puzzle", "Solution"):
            if field not in row:
                raise ValueError(f"{where}: missing field {field!r}")
        puzzle = check_grid_text(str(row["Puzzle"]), f"{where}: Puzzle", allow_zero=True)
        check_grid_text(str(row["Solution"]), f"{where}: Solution", allow_zero=False)
        return {**row, "Puzzle": puzzle, "Solution": str(row["Solution"])}

    # ---- prompts
    def prompt(self, row: Row, style: str = "d1", tokenizer: Any = None) -> str:
        puzzle = row["Puzzle"]
        if check_style(style) == "tiny":
            return check_tiny_text("sudoku:" + puzzle.replace("0", "."))
        content = (
            SYSTEM_PROMPT + "\n" + D1_INSTRUCTIONS + "Respond with your solving steps in the reasoning block and the "
            "16-character solution, with no spaces or separators, in the answer block.\n\n"
            f"Solve the following Sudoku puzzle: {puzzle}\n"
        )
        return chat_prompt(content, tokenizer)

    def target(self, row: Row, style: str = "tiny") -> str:
        solution = row["Solution"]
        if check_style(style) == "tiny":
            return f"<answer>{check_tiny_text(solution)}</answer>"
        return f"<reasoning>\n</reasoning>\n<answer>\n{solution}\n</answer>"

    # ---- scoring
    def reward(self, completion: str, row: Row) -> float:
        return float(score(completion, row["Puzzle"], row["Solution"])["cell_accuracy"])

    def grade(self, completion: str, row: Row) -> dict[str, Any]:
        result = score(completion, row["Puzzle"], row["Solution"])
        return {"correct": result["correct"], "reward": result["cell_accuracy"],
                "cell_accuracy": result["cell_accuracy"], "answer": result["answer"]}


TASK = SudokuTask()
