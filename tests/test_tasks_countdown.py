import itertools
import random
import re
from fractions import Fraction

import pytest

from egspo.tasks import countdown, get_task
from egspo.tasks.answers import TINY_ALPHABET

TASK = get_task("countdown")
ROW = {"numbers": [30, 100, 93], "target": 23}


def _brute_values(a, b, c):
    """All values of the two tree shapes ((x o y) o z) and (x o (y o z)) over every order: an independent solver."""
    ops = [lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y,
           lambda x, y: x / y if y != 0 else None]
    out = set()
    for x, y, z in itertools.permutations([Fraction(a), Fraction(b), Fraction(c)]):
        for f, g in itertools.product(ops, repeat=2):
            inner = f(x, y)
            if inner is not None and (v := g(inner, z)) is not None:
                out.add(v)
            inner = f(y, z)
            if inner is not None and (v := g(x, inner)) is not None:
                out.add(v)
    return out


def test_solver_matches_independent_enumeration_and_fast_path():
    rng = random.Random(0)
    for _ in range(150):
        ms = tuple(sorted(rng.randint(1, 40) for _ in range(3)))
        values = set(countdown.solutions(ms))
        assert values == _brute_values(*ms)
        assert values == set(countdown.reachable(ms))
        for value, expr in list(countdown.solutions(ms).items())[:20]:
            assert countdown.evaluate_exact(expr) == value
            assert sorted(countdown.exact_literals(expr)) == sorted(ms)
    assert countdown.solve([1, 1, 1], 100) is None
    assert countdown.solve([92, 1, 1], 46) == "92/(1+1)"


def test_tiny_generator_solvable_and_disjoint_by_multiset_with_shared_targets():
    data = countdown.generate_tiny(seed=5, n_train=400, n_validation=50, n_test=80, max_number=15, max_target=60)
    assert {s: len(r) for s, r in data.items()} == {"train": 400, "validation": 50, "test": 80}
    multisets = {s: {tuple(sorted(r["numbers"])) for r in rows} for s, rows in data.items()}
    targets = {s: {r["target"] for r in rows} for s, rows in data.items()}
    for a, b in itertools.combinations(data, 2):
        assert not multisets[a] & multisets[b], (a, b)
    # targets are not held out: most test targets also occur in train (as in the paper's data)
    assert len(targets["test"] & targets["train"]) >= 0.9 * len(targets["test"])
    for rows in data.values():
        for r in rows:
            assert len(r["numbers"]) == 3 and all(1 <= n <= 15 for n in r["numbers"]) and 1 <= r["target"] <= 60
            assert TASK.grade(TASK.target(r), r)["correct"]
            assert set(TASK.prompt(r, "tiny")) <= set(TINY_ALPHABET)
    assert countdown.generate_tiny(seed=5, n_train=400, n_validation=50, n_test=80, max_number=15,
                                   max_target=60) == data
    with pytest.raises(ValueError, match="solvable instances are available for n_"):
        countdown.generate_tiny(n_train=10, n_validation=10, n_test=5000, max_number=5)


@pytest.mark.parametrize(
    "answer, reward, correct",
    [
        ("30+93-100", 1.0, True),
        ("(93 - 100) + 30", 1.0, True),
        ("\\boxed{93+30-100}", 1.0, True),
        ("93 \\times 1 - 100", 0.1, False),  # well-formed, numbers wrong
        ("30＋93−100", 1.0, True),  # fullwidth plus, unicode minus
        ("３０+９３-１００", 1.0, True),  # fullwidth digits
        ("\\left(30+93\\right)-100", 1.0, True),
        ("30+93+100", 0.1, False),  # wrong value
        ("30+93-100+30-30", 0.1, False),  # a number used more than once
        ("93-30", 0.1, False),  # a number left out
        ("30/(100-100)", 0.1, False),  # division by zero: well-formed, never correct
        # a careful human accepts signs and redundant parentheses nested to any depth (Python's parser stops at 200)
        ("-(-(30+93-100))", 1.0, True),
        ("-100+93+30", 1.0, True),
        ("- 100 + 93 + 30", 1.0, True),
        ("+30+93-100", 1.0, True),
        ("93-(-30)-100", 1.0, True),
        ("93−−30−100", 1.0, True),  # unicode minus twice: minus a negated 30
        ("(" * 1000 + "30+93-100" + ")" * 1000, 1.0, True),
        ("((30)+((93))-(((100))))", 1.0, True),
        ("-(30+93-100)", 0.1, False),  # well-formed, value -23
        ("(" * 1000 + "30+93-100" + ")" * 999, 0.0, False),  # unbalanced
        ("30+-", 0.0, False),
        ("30+93-100=23", 0.0, False),
        ("30.+93-100", 0.0, False),
        ("030+93-100", 0.0, False),
        ("(30+93)//1-100", 0.0, False),
        ("9**9**9", 0.0, False),
        ("__import__('os').system('true')", 0.0, False),
        ("", 0.0, False),
    ],
)
def test_countdown_scoring(answer, reward, correct):
    completion = f"<reasoning>\nx\n</reasoning>\n<answer>\n{answer}\n</answer>\n"
    result = TASK.grade(completion, ROW)
    assert result["reward"] == reward and result["correct"] is correct
    assert TASK.reward(completion, ROW) == reward


@pytest.mark.parametrize(
    "answer, uses_numbers",
    [
        ("30+93-100", True),
        ("30+93+100", True),  # the right numbers, the wrong value
        ("100/(93-93+0)", False),
        ("30/(100-93-7)", False),  # 7 is not a given number
        ("93/(100-100)+30", False),  # division by zero, 100 twice
        ("100*(30-30)/93", False),
        ("30*93/(100-100)", False),
        ("(30-30)/93", False),  # a number left out
        ("93-30", False),
        ("30+93-100=23", False),  # not well-formed: no numbers are counted
    ],
)
def test_countdown_uses_numbers_is_the_number_check_of_correct(answer, uses_numbers):
    result = TASK.grade(f"<answer>{answer}</answer>", ROW)
    assert result["uses_numbers"] is uses_numbers
    assert result["correct"] == (uses_numbers and result["value"] == "23")


def test_countdown_division_by_zero_with_the_given_numbers_uses_them_and_has_no_value():
    row = {"numbers": [3, 3, 5], "target": 1}
    result = TASK.grade("<answer>5/(3-3)</answer>", row)
    assert result == {"correct": False, "reward": 0.1, "well_formed": True, "uses_numbers": True,
                      "answer": "5/(3-3)", "value": None}


def test_countdown_exact_arithmetic_and_answer_location():
    assert TASK.grade("<answer>43/90*90</answer>", {"numbers": [90, 43, 90], "target": 43})["correct"]
    assert TASK.grade("<answer>4/15*15</answer>", {"numbers": [4, 15, 15], "target": 4})["correct"]
    assert TASK.reward("30+93-100", ROW) == 0.0  # no answer block
    assert TASK.reward("<answer>\n30+93-100\n", ROW) == 0.0  # unclosed
    assert TASK.reward("Try <answer>1+1</answer> then <answer>30+93-100</answer>", ROW) == 1.0  # last block
    assert TASK.reward("<answer><answer>30+93-100</answer></answer>", ROW) == 1.0


@pytest.mark.timeout(300)  # a hang guard (fails only if this never finishes), not a speed test
def test_countdown_never_hangs():
    for text in ["<answer>" + "9**" * 3000 + "9</answer>", "<answer>" + "(" * 10_000 + "</answer>",
                 "<answer>" + "1+" * 500_000 + "1</answer>", "<answer>" * 200_000, "x" * 1_000_000,
                 "<answer>" + "-" * 10_000 + "5</answer>"]:
        assert TASK.reward(text, ROW) in (0.0, 0.1)


def test_real_cd3_test_file_every_solver_expression_grades_correct(shared_data):
    rows = TASK.load("test", str(shared_data / "countdown_cd3_test.jsonl"))
    assert len(rows) == 256
    assert rows[0]["numbers"] == [30, 100, 93] and rows[0]["target"] == 23 and rows[0]["input"] == "30,100,93"
    for row in rows:
        expr = countdown.solve(row["numbers"], row["target"])
        assert expr is not None, row
        assert TASK.grade(f"<reasoning>\n</reasoning>\n<answer>\n{expr}\n</answer>", row)["correct"], row


def test_hub_loader_through_datasets_on_a_local_copy(shared_data, tmp_path, monkeypatch):
    """The real code path: datasets.load_dataset on a directory in the hub repo's layout, the test file by URL."""
    repo = tmp_path / "Countdown-Tasks-3to4"
    (repo / "data").mkdir(parents=True)
    import pandas as pd

    rows = [{"target": 23, "nums": [30, 100, 93]},  # in the test file: must be dropped
            {"target": 24, "nums": [1, 2, 3, 4]},  # four numbers: filtered out
            *({"target": t, "nums": [t, 1, 1]} for t in range(2, 40))]
    pd.DataFrame(rows).to_parquet(repo / "data" / "train-00000-of-00001.parquet")
    monkeypatch.setattr(countdown, "HUB_ID", str(repo))
    monkeypatch.setattr(countdown, "TEST_URL", (shared_data / "countdown_cd3_test.jsonl").resolve().as_uri())
    monkeypatch.setenv("EGSPO_CACHE", str(tmp_path / "cache"))
    train = TASK.load("train", "hub", n_validation=8, seed=0)
    validation = TASK.load("validation", "hub", n_validation=8, seed=0)
    assert len(train) == 30 and len(validation) == 8
    assert all(len(r["numbers"]) == 3 for r in train + validation)
    assert (30, 100, 93) not in {tuple(r["numbers"]) for r in train + validation}
    assert not {r["target"] for r in train} & {r["target"] for r in validation}
    assert len(TASK.load("test", "hub")) == 256


def test_prompts():
    assert TASK.prompt(ROW, "tiny") == "countdown:30,100,93=23"
    assert TASK.target(ROW) == "<answer>30-100+93</answer>"  # the numbers in the prompt's order
    assert TASK.target({"numbers": [1, 2, 3], "target": 7}) == "<answer>1+2*3</answer>"
    # no left-to-right solution: any solver expression
    assert countdown.ordered_solution([1, 1, 3], 1) is None
    assert TASK.target({"numbers": [1, 1, 3], "target": 1}) == "<answer>3-(1+1)</answer>"
    d1 = TASK.prompt(ROW, "d1")
    assert "[30, 100, 93]" in d1 and "exactly 23" in d1 and "<reasoning>" in d1
    with pytest.raises(ValueError, match="missing field 'numbers'"):
        countdown.normalize({"target": 3}, "row 0")
    assert countdown.normalize({"input": "1,2,3", "output": "6"}, "r") == {"input": "1,2,3", "output": "6",
                                                                           "numbers": [1, 2, 3], "target": 6}


def test_tiny_numbers_admit_a_left_to_right_solution():
    data = countdown.generate_tiny(seed=3, n_train=300, n_validation=20, n_test=40)
    for rows in data.values():
        for row in rows:
            expr = countdown.ordered_solution(row["numbers"], row["target"])
            assert expr is not None
            assert TASK.grade(f"<answer>{expr}</answer>", row)["correct"]
            assert [int(n) for n in re.findall(r"\d+", expr)] == row["numbers"]
