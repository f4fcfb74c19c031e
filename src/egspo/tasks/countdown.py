"""Countdown with three numbers (the d1 family's planning benchmark): data, prompts, reward and grader.

Rows carry ``numbers`` (list of int) and ``target`` (int), plus the original fields (the d1 test file's ``input`` /
``output`` strings, the hub dataset's ``nums``).

Prompts. ``d1``: the d1 Countdown instructions with the reasoning/answer format. ``tiny``: ``countdown:`` then the
numbers joined by ``,`` then ``=`` and the target, e.g. ``countdown:30,100,93=23``; the target completion is
``<answer>`` + a solver-produced expression (each number once, minimal parentheses) + ``</answer>``, preferring one
that uses the numbers in the prompt's order. Tiny data lists each instance's numbers in an order that admits such a
left-to-right solution, so the reference completion lines up with the prompt (a small model learns to copy by
position much faster than by content); any correct expression still scores 1.0.

Scoring (intended semantics of the game; docs/graders.md lists where this differs from the authors' code). The answer
is the last closed ``<answer>`` block, with one wrapping ``\\boxed{}`` removed and common notations of the four
operators mapped to ASCII (``\\times``, ``\\cdot``, ``\\div``, ``\\left( \\right)``, ``×``, ``÷``, ``−``, fullwidth forms;
Unicode decimal digits read as ASCII digits). It is *well-formed* when it parses in the grammar

    expr := integer | expr (+ | - | * | /) expr | (+ | -) expr | ( expr )      (integers without leading zeros)

(a careful human accepts a sign, ``-30+100-47`` or ``-(-(35+87-28))``, and redundant parentheses nested to any depth)

and *correct* when its integer literals are exactly the multiset ``numbers`` and its exact rational value equals
``target`` (intermediate fractions are allowed; division by zero is never correct). Reward: 1.0 correct, 0.1
well-formed, 0 otherwise. Evaluation is the bounded AST walk of :mod:`egspo.tasks.arith`; nothing is ``eval``-ed.

Tiny data: all multisets of three numbers in [1, max_number] with all positive integer targets <= max_target that a
brute-force solver reaches (+ - * / with parentheses, each number exactly once). The number multisets are partitioned
among the splits, so no test instance (nor any reordering of its numbers) is seen in training; targets are shared, as
in the paper's data, where the values 1..100 recur between train and test. (Holding targets out as well asks for a
harder transfer than the benchmark does: measured in the README, RL then does not transfer at the tiny scale.)
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import re
from collections import Counter
from fractions import Fraction
from typing import Any

from egspo.tasks.answers import (
    SYSTEM_PROMPT,
    ascii_digits,
    chat_prompt,
    check_style,
    check_tiny_text,
    last_answer,
    unbox,
)
from egspo.tasks.arith import ArithError, ArithZeroDivision, evaluate_exact, exact_literals
from egspo.tasks.base import Row, Task
from egspo.tasks.sources import carve_validation, check_split, fetch_url, hub_rows, is_path_source, read_table

HUB_ID = "Jiayi-Pan/Countdown-Tasks-3to4"
REPO_COMMIT = "https://raw.githubusercontent.com/vishnutez/egspo-dllm-rl/a7d618b5fe25f3af78913e1160d7fd5e290cf000"
TEST_URL = f"{REPO_COMMIT}/dataset/countdown_cd3_test.jsonl"
#: sha256 of the d1 family's 256-row three-number test file
TEST_SHA256 = "9916f614621e26fb2b035ed4ea641e35e4fff0d533bb9b9c7bcaaa61017d88c6"
HUB_VALIDATION_SIZE = 256

# ---- solver -------------------------------------------------------------------------------------------------------
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3


def _combine(op: str, left: tuple, right: tuple) -> tuple | None:
    (lv, lt, lp), (rv, rt, rp) = left, right
    if op == "/" and rv == 0:
        return None
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else None}[op]
    p = _PREC[op]
    lt = f"({lt})" if lp < p else lt
    rt = f"({rt})" if rp < p or (rp == p and op in "-/") else rt
    return value, f"{lt}{op}{rt}", p


@functools.lru_cache(maxsize=65536)
def solutions(numbers: tuple[int, ...]) -> dict[Fraction, str]:
    """Every exact value reachable from ``numbers`` using each exactly once with + - * / and parentheses, mapped to
    one expression that reaches it (deterministic: the first found in a fixed search order)."""
    found: dict[Fraction, str] = {}

    def search(items: list[tuple]) -> None:
        if len(items) == 1:
            found.setdefault(items[0][0], items[0][1])
            return
        for i, j in itertools.permutations(range(len(items)), 2):
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            for op in "+-*/":
                if op in "+*" and i > j:
                    continue  # commutative: one order suffices
                merged = _combine(op, items[i], items[j])
                if merged is not None:
                    search(rest + [merged])

    search([(Fraction(n), str(n), _ATOM) for n in numbers])
    return found


def _pair_values(x, y) -> list:
    out = [x + y, x - y, y - x, x * y]
    for num, den in ((x, y), (y, x)):
        if den != 0:
            out.append(num // den if type(num) is int and type(den) is int and num % den == 0 else Fraction(num, den))
    return out


@functools.lru_cache(maxsize=65536)
def reachable(numbers: tuple[int, ...]) -> frozenset:
    """The set of exact values of :func:`solutions` (ints where integral, Fractions otherwise), computed without
    building expressions: the fast path of the tiny generator."""
    return _reachable_values(tuple(numbers))


def _reachable_values(values: tuple) -> frozenset:
    if len(values) == 1:
        return frozenset(values)
    out = set()
    for i, j in itertools.combinations(range(len(values)), 2):
        rest = tuple(values[k] for k in range(len(values)) if k not in (i, j))
        for v in _pair_values(values[i], values[j]):
            out |= _reachable_values(rest + (v,))
    return frozenset(out)


def solve(numbers, target) -> str | None:
    """An expression using each of ``numbers`` once that equals ``target`` exactly, or ``None``."""
    return solutions(tuple(int(n) for n in numbers)).get(Fraction(target))


def ordered_solution(numbers, target) -> str | None:
    """An expression that uses ``numbers`` once each *in the given order*, ``(a o b) o c`` or ``a o (b o c)`` with
    minimal parentheses, equal to ``target``; ``None`` if no such expression exists (the search order of operators
    and shapes is fixed, so the result is deterministic)."""
    if len(numbers) != 3:
        raise ValueError(f"ordered_solution needs three numbers, got {list(numbers)!r}")
    a, b, c = ((Fraction(int(n)), str(int(n)), _ATOM) for n in numbers)
    goal = Fraction(target)
    for op1, op2 in itertools.product("+-*/", repeat=2):
        left = _combine(op1, a, b)
        for tree in (_combine(op2, left, c) if left else None,
                     _combine(op1, a, inner) if (inner := _combine(op2, b, c)) else None):
            if tree is not None and tree[0] == goal:
                return tree[1]
    return None


# ---- tiny generator ---------------------------------------------------------------------------------------------
def _partition(items: list, weights: dict[str, float], rng: random.Random) -> dict[str, set]:
    items = list(items)
    rng.shuffle(items)
    total = sum(weights.values())
    out, start = {}, 0
    names = [s for s in weights if weights[s] > 0]
    for k, split in enumerate(names):
        stop = len(items) if k == len(names) - 1 else start + max(1, round(len(items) * weights[split] / total))
        out[split] = set(items[start:stop])
        start = stop
    return {s: out.get(s, set()) for s in weights}


def generate_tiny(
    seed: int = 0,
    n_train: int = 2000,
    n_validation: int = 128,
    n_test: int = 256,
    max_number: int = 25,
    max_target: int = 100,
) -> dict[str, list[Row]]:
    """Tiny-preset instances (see the module docstring). Multisets are shuffled with ``seed`` and shared among the
    splits with weights proportional to sqrt(split size), so the small splits keep a wide choice of multisets;
    ``n_split`` instances are then drawn from each split's solvable (multiset, target <= max_target) pairs. Rows:
    ``numbers`` (in a random order among those that admit a left-to-right solution, see :func:`ordered_solution`;
    every solvable 3-number instance has one), ``target``."""
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    for name, n in sizes.items():
        if n < 0:
            raise ValueError(f"n_{name} must be >= 0, got {n}")
    if max_number < 1 or max_target < 1:
        raise ValueError(f"max_number and max_target must be >= 1, got {max_number}, {max_target}")
    rng = random.Random(seed)
    multisets = list(itertools.combinations_with_replacement(range(1, max_number + 1), 3))
    weights = {s: math.sqrt(n) for s, n in sizes.items()}
    multiset_split = _partition(multisets, weights, rng)
    out: dict[str, list[Row]] = {}
    for split, n in sizes.items():
        eligible = [
            (ms, t)
            for ms in sorted(multiset_split[split])
            for t in range(1, max_target + 1)
            if t in reachable(ms)
        ]
        if len(eligible) < n:
            raise ValueError(
                f"only {len(eligible)} solvable instances are available for n_{split}={n} "
                f"(max_number={max_number}, max_target={max_target}); lower n_{split} or raise max_number"
            )
        rows = []
        for ms, t in rng.sample(eligible, n):
            orders = list(itertools.permutations(ms))
            rng.shuffle(orders)
            numbers = next(list(o) for o in orders if ordered_solution(o, t) is not None)
            rows.append({"numbers": numbers, "target": t})
        out[split] = rows
    return out


# ---- scoring -------------------------------------------------------------------------------------------------------
_NOTATION = [
    ("\\left", ""), ("\\right", ""), ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"),
    ("×", "*"), ("✕", "*"), ("·", "*"), ("⋅", "*"), ("∗", "*"), ("÷", "/"), ("∕", "/"), ("−", "-"), ("–", "-"),
    ("＋", "+"), ("－", "-"), ("＊", "*"), ("／", "/"), ("（", "("), ("）", ")"),
]


def parse_answer(completion: str) -> str | None:
    """The answer expression in ASCII notation, or ``None`` without a closed answer block."""
    block = last_answer(completion)
    if block is None:
        return None
    text = ascii_digits(unbox(block))
    for old, new in _NOTATION:
        text = text.replace(old, new)
    return re.sub(r"\s+", " ", text).strip()


def score(completion: str, numbers, target) -> dict[str, Any]:
    """``{"correct", "well_formed", "uses_numbers", "answer", "value"}`` for one completion (see the module
    docstring); ``uses_numbers``: the answer is well-formed and its integer literals are exactly the multiset
    ``numbers`` (whatever its value), so ``correct`` = ``uses_numbers`` and value == target."""
    expr = parse_answer(completion)
    result = {"correct": False, "well_formed": False, "uses_numbers": False, "answer": expr, "value": None}
    if expr is None:
        return result
    try:
        value = evaluate_exact(expr)
    except ArithZeroDivision:
        value = None
    except ArithError:
        return result
    uses_numbers = Counter(exact_literals(expr)) == Counter(int(n) for n in numbers)
    result.update(well_formed=True, uses_numbers=uses_numbers, value=None if value is None else str(value))
    result["correct"] = bool(uses_numbers and value == Fraction(target))
    return result


def reward_of(result: dict[str, Any]) -> float:
    """The training reward of a :func:`score` result: 1.0 correct, 0.1 well-formed, 0 otherwise."""
    return 1.0 if result["correct"] else 0.1 if result["well_formed"] else 0.0


class CountdownTask(Task):
    name = "countdown"
    required_fields = ("numbers", "target")

    # ---- data
    def load(self, split: str, source: str = "hub", **kwargs: Any) -> list[Row]:
        check_split(split)
        if source == "tiny":
            return generate_tiny(**kwargs)[split]
        if is_path_source(source):
            return [normalize(r, f"{source} row {i}") for i, r in enumerate(read_table(source))]
        test = [normalize(r, f"{TEST_URL} row {i}") for i, r in
                enumerate(read_table(fetch_url(TEST_URL, "countdown/countdown_cd3_test.jsonl", TEST_SHA256)))]
        if split == "test":
            return test
        test_keys = {(tuple(sorted(r["numbers"])), r["target"]) for r in test}
        rows = [normalize(r, f"{HUB_ID} train row {i}") for i, r in enumerate(hub_rows(HUB_ID, None, "train"))
                if len(r.get("nums", ())) == 3]
        rows = [r for r in rows if (tuple(sorted(r["numbers"])), r["target"]) not in test_keys]
        train, validation = carve_validation(rows, kwargs.get("n_validation", HUB_VALIDATION_SIZE),
                                             kwargs.get("seed", 0))
        return train if split == "train" else validation

    # ---- prompts
    def prompt(self, row: Row, style: str = "d1", tokenizer: Any = None) -> str:
        numbers, target = [int(n) for n in row["numbers"]], int(row["target"])
        if check_style(style) == "tiny":
            return check_tiny_text("countdown:" + ",".join(map(str, numbers)) + f"={target}")
        content = (
            f"{SYSTEM_PROMPT}\nUsing only the numbers {numbers}, create an arithmetic expression that evaluates to "
            f"exactly {target}. You must use all numbers from the list, and each number must be used exactly once. "
            "You may use the operations +, -, *, and / as needed. After reasoning, provide only your final "
            "expression inside <answer></answer> tags, without an equals sign or the target number. For example, "
            "if the numbers are [2, 3, 4] and the target is 5, a valid answer is: <answer>\n2*4-3\n</answer>"
        )
        return chat_prompt(content, tokenizer)

    def target(self, row: Row, style: str = "tiny") -> str:
        expr = ordered_solution(row["numbers"], row["target"]) or solve(row["numbers"], row["target"])
        if expr is None:
            raise ValueError(f"countdown row {row!r} has no solution; cannot make a reference completion")
        if check_style(style) == "tiny":
            return f"<answer>{check_tiny_text(expr)}</answer>"
        return f"<reasoning>\n</reasoning>\n<answer>\n{expr}\n</answer>"

    # ---- scoring
    def reward(self, completion: str, row: Row) -> float:
        return reward_of(score(completion, row["numbers"], row["target"]))

    def check_row(self, row: Row, where: str, for_prompt: bool = True) -> Row:
        return normalize(row, where)

    def grade(self, completion: str, row: Row) -> dict[str, Any]:
        result = score(completion, row["numbers"], row["target"])
        return {"correct": result["correct"], "reward": reward_of(result), "well_formed": result["well_formed"],
                "uses_numbers": result["uses_numbers"], "answer": result["answer"], "value": result["value"]}


def normalize(row: Row, where: str) -> Row:
    """Add ``numbers`` / ``target`` (ints) from whichever original schema the row has."""
    try:
        if "numbers" in row:
            numbers = row["numbers"]
        elif "nums" in row:
            numbers = row["nums"]
        elif "input" in row:
            numbers = [int(x) for x in str(row["input"]).split(",")]
        else:
            raise ValueError(f"{where}: missing field 'numbers' (or 'nums', or 'input')")
        if "target" in row:
            target = row["target"]
        elif "output" in row:
            target = row["output"]
        else:
            raise ValueError(f"{where}: missing field 'target' (or 'output')")
        numbers, target = [int(n) for n in numbers], int(target)
    except (TypeError, ValueError) as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: numbers/target are not integers: {exc}") from None
    return {**row, "numbers": numbers, "target": target}


TASK = CountdownTask()
