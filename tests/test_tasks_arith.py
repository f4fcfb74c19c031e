import random
from fractions import Fraction

import pytest

from egspo.tasks.arith import (
    ArithError,
    ArithLimitError,
    ArithZeroDivision,
    evaluate_exact,
    evaluate_python,
    exact_literals,
    integer_literals,
)


def test_python_semantics_match_eval_on_random_whitelisted_expressions():
    """Differential check against real eval on expressions we generate ourselves (small, so eval is safe)."""
    rng = random.Random(0)
    atoms = ["7", "2", "3.5", "0", ".5", "12."]
    ops = ["+", "-", "*", "/", "//", "**"]
    for _ in range(3000):
        expr = rng.choice(atoms)
        for _ in range(rng.randint(1, 4)):
            expr = f"({expr}){rng.choice(ops)}{rng.choice(['-', '+', ''])}{rng.choice(atoms)}"
        try:
            expected = eval(expr, {"__builtins__": None}, {})  # noqa: S307 - our own generated arithmetic
        except (ZeroDivisionError, OverflowError, TypeError):
            with pytest.raises(ArithError):
                evaluate_python(expr)
            continue
        got = evaluate_python(expr)
        assert type(got) is type(expected) and (got == expected or (got != got and expected != expected)), expr


@pytest.mark.timeout(300)  # a hang guard (fails only if this never finishes), not a speed test
@pytest.mark.parametrize("expr", ["9**9**9", "2**10**7", "99**99**99", "7**7**7**7"])
def test_huge_powers_are_refused_quickly(expr):
    with pytest.raises(ArithLimitError):
        evaluate_python(expr)


def test_python_mode_rejects_non_numbers():
    for expr in ["2(3)", "()", "...", "[1]", "1 2", "092", "６９", "a+1", "-" * 5000 + "5", "'x'"]:
        with pytest.raises(ArithError):
            evaluate_python(expr)
    assert evaluate_python("(23-43)**.64").imag != 0  # complex, as in Python
    assert evaluate_python("42-61//21") == 40


def test_exact_mode():
    assert evaluate_exact("43/90*90") == 43
    assert evaluate_exact("(1+2)/3*7") == 7
    assert evaluate_exact("1/3") == Fraction(1, 3)
    with pytest.raises(ArithZeroDivision):
        evaluate_exact("4/(2-2)")
    for expr in ["2**3", "7//2", "1.5", "2(3)", "1e3", "x", "012", "()", "1 2", "1+", "(1", "1)", "+", "",
                 "(" * 300 + "1" + ")" * 299, "2/(1-1))"]:
        with pytest.raises(ArithError):
            evaluate_exact(expr)
    # signs and parentheses nested to any depth (an iterative parser; Python's stops at 200 levels)
    assert evaluate_exact("-1") == -1 and evaluate_exact("+1") == 1 and evaluate_exact("- -5") == 5
    assert evaluate_exact("-2*3") == -6 and evaluate_exact("2*-3") == -6 and evaluate_exact("8/4/2") == 1
    assert evaluate_exact("(" * 4000 + "1+2" + ")" * 4000) == 3
    assert exact_literals("-(-(35+87-28))") == [35, 87, 28]


def test_exact_mode_equals_python_parser_on_random_expressions():
    # differential: our shunting-yard parse vs Python's own parser with exact Fractions on the same text
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def reference(node):
        if isinstance(node, ast.Constant):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp):
            value = reference(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        return ops[type(node.op)](reference(node.left), reference(node.right))

    rng = random.Random(0)

    def expression(depth):
        if depth == 0 or rng.random() < 0.3:
            return str(rng.randint(0, 20))
        kind = rng.random()
        if kind < 0.15:
            return rng.choice("+-") + expression(depth - 1)
        if kind < 0.3:
            return "(" + expression(depth - 1) + ")"
        return expression(depth - 1) + rng.choice("+-*/") + expression(depth - 1)

    for _ in range(3000):
        text = expression(6)
        try:
            expected = reference(ast.parse(text, mode="eval").body)
        except ZeroDivisionError:
            with pytest.raises(ArithZeroDivision):
                evaluate_exact(text)
            continue
        assert evaluate_exact(text) == expected, text
    assert integer_literals("25*43/25") == [25, 43, 25]
