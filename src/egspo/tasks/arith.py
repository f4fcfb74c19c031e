"""Bounded arithmetic evaluation of untrusted expressions: an AST walk, never ``eval``.

The text is parsed with :func:`ast.parse` (a parser only; nothing runs) and the tree is walked iteratively with a
whitelist of node types, so no completion can execute code, recurse the interpreter to death or hang the caller.

Two evaluators:

- :func:`evaluate_exact` (our graders): non-negative integer literals, binary ``+ - * /``, unary signs and
  parentheses nested to any depth, parsed by an iterative operator-precedence parser of its own (Python's parser
  stops at 200 nested parentheses) and evaluated in exact rational arithmetic (:class:`fractions.Fraction`).
  Anything else is an :class:`ArithError`.
- :func:`evaluate_python` (the authors' compatibility mode): reproduces what Python's ``eval`` returns for the
  arithmetic subset of Python syntax (int / float / complex results, ``//`` and ``**`` included), but refuses with
  :class:`ArithLimitError` any integer power or product whose result would exceed ``max_int_bits`` bits, which is
  where ``eval`` would run for minutes (``9**9**9`` has about 1.2e9 bits).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from fractions import Fraction

#: Longest expression text either evaluator accepts.
MAX_EXPRESSION_CHARS = 10_000
#: Largest integer (in bits) the Python-semantics evaluator will build; beyond it Python's own eval would take
#: seconds to hours, which the authors' reward treats as a hang.
MAX_INT_BITS = 1_000_000

_EXACT_CHARS = frozenset("0123456789+-*/() \t\n")
_EXACT_TOKEN = re.compile(r"\s*(?:(\d+)|([-+*/()]))")


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


_BINARY = {"+": (1, operator.add), "-": (1, operator.sub), "*": (2, operator.mul), "/": (2, None)}
_UNARY_PRECEDENCE = 3  # a sign binds tighter than * and / (-a*b = (-a)*b; the exact value is the same either way)


def _exact_tokens(text: str) -> list[str | int]:
    """Integer literals (ints) and the characters ``+ - * / ( )`` of ``text``; ArithError for anything else."""
    bad = sorted(set(text) - _EXACT_CHARS)
    if bad:
        raise ArithError(f"character {bad[0]!r} is not allowed (digits, + - * /, parentheses and spaces only)")
    tokens: list[str | int] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _EXACT_TOKEN.match(text, pos)
        digits, symbol = m.group(1), m.group(2)
        if digits is not None:
            if len(digits) > 1 and digits[0] == "0":
                raise ArithError(f"integer literal {digits!r} has a leading zero")
            tokens.append(int(digits))
        else:
            tokens.append(symbol)
        pos = m.end()
    return tokens


def _apply(op: str, values: list[Fraction]) -> bool:
    """Apply ``op`` to the top of ``values``; True when it divides by zero (0 stands in for the value, so the rest
    of the text is still checked against the grammar)."""
    if op in ("u+", "u-"):
        if op == "u-":
            values[-1] = -values[-1]
        return False
    right, left = values.pop(), values.pop()
    if op == "/":
        values.append(left / right if right else Fraction(0))
        return right == 0
    values.append(_BINARY[op][1](left, right))
    return False


def exact_literals(text: str) -> list[int]:
    """The integer literals of an expression in the grammar of :func:`evaluate_exact`, in order."""
    return [t for t in _exact_tokens(text) if isinstance(t, int)]


def evaluate_exact(text: str, *, max_chars: int = MAX_EXPRESSION_CHARS) -> Fraction:
    """Value of ``text`` over the Countdown grammar, in exact rational arithmetic:

        expr := integer | expr (+ | - | * | /) expr | (+ | -) expr | ( expr )

    integers are ASCII decimal literals without leading zeros; ``* /`` bind tighter than ``+ -``, both left to right;
    a sign binds tighter than both. Parentheses may nest to any depth (an iterative shunting-yard parse)."""
    if not isinstance(text, str):
        raise ArithError(f"expression must be a string, got {type(text).__name__}")
    if len(text) > max_chars:
        raise ArithError(f"expression has {len(text)} characters, more than the limit {max_chars}")
    values: list[Fraction] = []
    ops: list[str] = []  # "+", "-", "*", "/", "u+", "u-", "("
    expect_operand = True
    zero_division = False
    for token in _exact_tokens(text):
        if expect_operand:
            if isinstance(token, int):
                values.append(Fraction(token))
                expect_operand = False
            elif token in "+-":
                ops.append("u" + token)
            elif token == "(":
                ops.append("(")
            else:
                raise ArithError(f"{token!r} where a number was expected")
        elif token == ")":
            while ops and ops[-1] != "(":
                zero_division |= _apply(ops.pop(), values)
            if not ops:
                raise ArithError("')' without a matching '('")
            ops.pop()
        elif isinstance(token, str) and token in _BINARY:
            precedence = _BINARY[token][0]
            while ops and ops[-1] != "(" and (
                    ops[-1] in ("u+", "u-") or _BINARY[ops[-1]][0] >= precedence):
                zero_division |= _apply(ops.pop(), values)
            ops.append(token)
            expect_operand = True
        else:
            raise ArithError(f"{token!r} where an operator was expected")
    if expect_operand:
        raise ArithError("the expression is empty or ends with an operator")
    while ops:
        op = ops.pop()
        if op == "(":
            raise ArithError("'(' without a matching ')'")
        zero_division |= _apply(op, values)
    if zero_division:
        raise ArithZeroDivision("division by zero")
    return values[0]


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
