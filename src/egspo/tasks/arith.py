"""Bounded arithmetic evaluation of untrusted expressions: an AST walk, never ``eval``.

The text is parsed with :func:`ast.parse` (a parser only; nothing runs) and the tree is walked iteratively with a
whitelist of node types, so no completion can execute code, recurse the interpreter to death or hang the caller.

Two evaluators:

- :func:`evaluate_exact` (our graders): non-negative integer literals, binary ``+ - * /`` and parentheses, evaluated
  in exact rational arithmetic (:class:`fractions.Fraction`). Anything else is an :class:`ArithError`.
- :func:`evaluate_python` (the authors' compatibility mode): reproduces what Python's ``eval`` returns for the
  arithmetic subset of Python syntax (int / float / complex results, ``//`` and ``**`` included), but refuses with
  :class:`ArithLimitError` any integer power or product whose result would exceed ``max_int_bits`` bits, which is
  where ``eval`` would run for minutes (``9**9**9`` has about 1.2e9 bits).
"""

from __future__ import annotations

import ast
import math
import operator
from fractions import Fraction

#: Longest expression text either evaluator accepts.
MAX_EXPRESSION_CHARS = 10_000
#: Largest integer (in bits) the Python-semantics evaluator will build; beyond it Python's own eval would take
#: seconds to hours, which the authors' reward treats as a hang.
MAX_INT_BITS = 1_000_000

_EXACT_CHARS = frozenset("0123456789+-*/() \t\n")


class ArithError(ValueError):
    """The expression is not an allowed arithmetic expression, or evaluating it fails (e.g. division by zero)."""


class ArithZeroDivision(ArithError):
    """A well-formed expression divides by zero."""


class ArithLimitError(ArithError):
    """Evaluating the expression would build a number larger than the configured limit (a hang in plain eval)."""


def parse_expression(text: str, *, max_chars: int = MAX_EXPRESSION_CHARS) -> ast.expr:
    """The expression tree of ``text`` in Python syntax (leading spaces and tabs ignored, as ``eval`` does)."""
    if not isinstance(text, str):
        raise ArithError(f"expression must be a string, got {type(text).__name__}")
    if len(text) > max_chars:
        raise ArithError(f"expression has {len(text)} characters, more than the limit {max_chars}")
    try:
        return ast.parse(text.lstrip(" \t"), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise ArithError(f"not a valid expression: {exc.__class__.__name__}") from None


def _postorder(root: ast.expr) -> list[ast.expr]:
    """Nodes of the tree children-first, built without recursion."""
    order, stack = [], [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(ast.iter_child_nodes(node))
    order.reverse()
    return order


def integer_literals(text: str) -> list[int]:
    """The integer literals of the expression ``text`` in source order (ArithError if it does not parse)."""
    tree = parse_expression(text)
    lits = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is int]
    lits.sort(key=lambda n: (n.lineno, n.col_offset))
    return [n.value for n in lits]


_EXACT_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def evaluate_exact(text: str, *, max_chars: int = 1000) -> Fraction:
    """Value of ``text`` over the Countdown grammar: non-negative decimal integer literals (no leading zeros, ASCII
    digits), binary ``+ - * /`` and parentheses; no unary operators, no other syntax. Exact rational arithmetic."""
    bad = sorted(set(text) - _EXACT_CHARS)
    if bad:
        raise ArithError(f"character {bad[0]!r} is not allowed (digits, + - * /, parentheses and spaces only)")
    tree = parse_expression(text, max_chars=max_chars)
    values: dict[int, Fraction] = {}
    for node in _postorder(tree):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            values[id(node)] = Fraction(node.value)
        elif isinstance(node, ast.BinOp) and type(node.op) in _EXACT_OPS:
            left, right = values[id(node.left)], values[id(node.right)]
            if isinstance(node.op, ast.Div) and right == 0:
                raise ArithZeroDivision("division by zero")
            values[id(node)] = _EXACT_OPS[type(node.op)](left, right)
        elif isinstance(node, ast.operator):
            continue  # operator tokens are children of BinOp in the AST; handled with their BinOp
        else:
            raise ArithError(f"{node.__class__.__name__} is not allowed in an arithmetic answer")
    return values[id(tree)]


def _checked_pow(base, exp, max_bits: int):
    if type(base) is int and type(exp) is int and exp > 0 and abs(base) > 1:
        if exp * math.log2(abs(base)) > max_bits:
            raise ArithLimitError(f"{abs(base).bit_length()}-bit base to the power {exp} exceeds {max_bits} bits")
    return base**exp


def _checked_mul(a, b, max_bits: int):
    if type(a) is int and type(b) is int and a.bit_length() + b.bit_length() > max_bits + 1:
        raise ArithLimitError(f"product exceeds {max_bits} bits")
    return a * b


_PY_BINOPS = {
    ast.Add: lambda a, b, m: a + b,
    ast.Sub: lambda a, b, m: a - b,
    ast.Mult: _checked_mul,
    ast.Div: lambda a, b, m: a / b,
    ast.FloorDiv: lambda a, b, m: a // b,
    ast.Pow: _checked_pow,
}
_PY_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def evaluate_python(text: str, *, max_int_bits: int = MAX_INT_BITS, max_chars: int = 1_000_000):
    """What ``eval(text, {"__builtins__": None}, {})`` returns for arithmetic text, computed by an AST walk.

    Numbers are int / float literals; operators ``+ - * / // **`` and unary ``+ -``; results follow Python's numeric
    tower (``(-20)**.5`` is complex). Syntax Python rejects is an :class:`ArithError`; so is any other node (a call
    like ``2(3)`` or an empty tuple ``()``, where eval would raise or return a non-number), and any runtime error
    (ZeroDivisionError, OverflowError). Integers beyond ``max_int_bits`` bits raise :class:`ArithLimitError`."""
    tree = parse_expression(text, max_chars=max_chars)
    values: dict[int, object] = {}
    try:
        for node in _postorder(tree):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float):
                values[id(node)] = node.value
            elif isinstance(node, ast.BinOp) and type(node.op) in _PY_BINOPS:
                values[id(node)] = _PY_BINOPS[type(node.op)](
                    values[id(node.left)], values[id(node.right)], max_int_bits
                )
            elif isinstance(node, ast.UnaryOp) and type(node.op) in _PY_UNARY:
                values[id(node)] = _PY_UNARY[type(node.op)](values[id(node.operand)])
            elif isinstance(node, (ast.operator, ast.unaryop)):
                continue
            else:
                raise ArithError(f"{node.__class__.__name__} is not a number in Python's eval")
    except (ZeroDivisionError, OverflowError, TypeError, ValueError) as exc:
        if isinstance(exc, ArithError):
            raise
        raise ArithError(f"evaluation failed: {exc.__class__.__name__}") from None
    return values[id(tree)]
