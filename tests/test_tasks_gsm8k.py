from fractions import Fraction

import pytest

from egspo.tasks import get_task, gsm8k
from egspo.tasks.answers import SYSTEM_PROMPT

TASK = get_task("gsm8k")
ROW = {"question": "How many?", "answer": "Some work <<2*3=6>>6 and more.\n#### 1,234"}
CANONICAL = "<reasoning>\nline one\nline two\n</reasoning>\n<answer>\n1234\n</answer>\n"


def test_canonical_format_gets_the_full_four_points():
    parts = gsm8k.reward_components(CANONICAL, Fraction(1234))
    assert parts == {"xmlcount_reward": 0.5, "soft_format_reward": 0.5, "strict_format_reward": 0.5,
                     "int_reward": 0.5, "correctness_reward": 2.0}
    assert TASK.reward(CANONICAL, ROW) == 4.0
    assert TASK.grade(CANONICAL, ROW)["correct"]


@pytest.mark.parametrize(
    "answer, correct",
    [("1234", True), ("1,234", True), ("1234.0", True), ("$1,234", True), ("1234 dollars", True),
     ("\\boxed{1,234}", True), ("+1234", True), ("１２３４", True), ("1.234e3", True), ("The answer is 1234.", True),
     ("1,23,4", False), ("1233", False), ("-1234", False), ("12 34", False), ("1234 or 1235", False), ("", False),
     ("1_234", False), ("¹²³⁴", False), ("1e99999999", False), ("9" * 5000, False)],
)
def test_numeric_match(answer, correct):
    completion = f"<reasoning>\nx\n</reasoning>\n<answer>\n{answer}\n</answer>"
    assert TASK.grade(completion, ROW)["correct"] is correct


@pytest.mark.parametrize(
    "gold, answer, correct",
    [
        # thousands groups: thin space, narrow no-break space, no-break space, plain space, LaTeX {,} and \,
        (1234567, "1\u2009234\u2009567", True), (1234567, "1\u202f234\u202f567", True),
        (1234, "1\u00a0234", True), (1000000, "1 000 000", True), (1000, "1{,}000", True),
        (12345, "12\\,345", True), (1000000, "$1{,}000{,}000", True),
        (1234, "1 23 4", False), (1234, "1 234 5", False), (1234, "1{,}234 or 1 235", False),
        # minus: a space after it at the start, an en dash, a unicode minus, before a dollar sign
        (-10, "- 10", True), (-10, "\u2013 10", True), (-10, "\u221210", True), (-10, "-$10", True),
        (-10, "x = - 10", True), (10, "- 10", False), (-10, "10 - 20", False),
        # a unit exponent is part of the unit
        (25, "25 ft^2", True), (25, "25 \\text{ft}^{2}", True), (25, "25 m^3", True), (25, "25 cm\u00b2", True),
        (1000, "10^3", False),
        # scale words
        (1450000, "1.45 million", True), (2000, "2 thousand dollars", True), (3000000000, "$3 billion", True),
        (145, "1.45 million", False),
        # a final number restated in a sentence (every number of the answer has the same value)
        (18, "18. Janet makes $18 every day.", True), (18, "18\nSo the answer is 18.", True),
        (18, "18 or 19", False), (2, "1 + 1 = 2", False),
    ],
)
def test_numbers_read_as_a_careful_human_reads_them(gold, answer, correct):
    row = {"question": "q", "answer": f"work\n#### {gold}"}
    completion = f"<reasoning>\nx\n</reasoning>\n<answer>\n{answer}\n</answer>"
    assert TASK.grade(completion, row)["correct"] is correct, gsm8k.normalize_answer(answer)


def test_integer_reward_reads_the_normalised_answer():
    for answer in ("1 000", "1{,}000", "- 10", "\u2013 10"):
        assert gsm8k.reward_components(f"<answer>{answer}</answer>", Fraction(0))["int_reward"] == 0.5, answer
    assert gsm8k.reward_components("<answer>1 000 dollars</answer>", Fraction(0))["int_reward"] == 0.0


def test_negative_gold_and_answer_location():
    row = {"question": "q", "answer": "cold\n#### -10"}
    assert TASK.grade("<answer>-10</answer>", row)["correct"]
    assert TASK.grade("<answer>−10</answer>", row)["correct"]  # unicode minus
    assert gsm8k.reward_components("<answer>-10</answer>", Fraction(-10))["int_reward"] == 0.5
    assert not TASK.grade("-10", row)["correct"]  # no answer block
    assert not TASK.grade("<answer>\n-10\n", row)["correct"]  # unclosed
    assert TASK.grade("<answer>3</answer> no, <answer>-10</answer>", row)["correct"]  # the last block
    assert not TASK.grade("<answer>-10</answer> no, <answer>3</answer>", row)["correct"]


def test_format_terms():
    gold = Fraction(1234)
    inline = "<reasoning>x</reasoning> <answer>1234</answer>"
    assert gsm8k.reward_components(inline, gold)["soft_format_reward"] == 0.5
    assert gsm8k.reward_components(inline, gold)["strict_format_reward"] == 0.0
    no_newline = CANONICAL.rstrip("\n")
    assert gsm8k.reward_components(no_newline, gold)["strict_format_reward"] == 0.5
    assert gsm8k.reward_components(CANONICAL + "junk!", gold)["xmlcount_reward"] == pytest.approx(0.5 - 0.005)
    assert gsm8k.reward_components(CANONICAL + "x" * 10_000, gold)["xmlcount_reward"] == 0.0  # floored
    two = CANONICAL + "<answer>\n1234\n</answer>\n"
    assert gsm8k.reward_components(two, gold)["strict_format_reward"] == 0.0
    assert gsm8k.reward_components("", gold) == dict.fromkeys(gsm8k.reward_components("", gold), 0.0)


def test_linear_soft_format_equals_the_regex():
    import random
    import re

    pattern = re.compile(r"\s*<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
    pieces = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", " ", "\n", "x", "1"]
    rng = random.Random(0)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        assert gsm8k.soft_format(text) == bool(pattern.match(text)), text


@pytest.mark.timeout(300)  # a hang guard (fails only if this never finishes), not a speed test
def test_never_hangs():
    for text in ["<reasoning>" * 100_000, "<reasoning>\n" + "</reasoning>\n<answer>\n" * 20_000,
                 "<answer>" + "1," * 300_000 + "</answer>", "\ud800" * 1000, "1" * 1_000_000]:
        assert 0.0 <= TASK.reward(text, ROW) <= 4.0


def test_prompt_and_target():
    assert TASK.prompt(ROW) == SYSTEM_PROMPT + "\n\nHow many?"
    target = TASK.target(ROW, "d1")
    assert "<<" not in target and TASK.grade(target, ROW)["correct"]
    with pytest.raises(ValueError, match="tiny"):
        TASK.prompt(ROW, "tiny")
    with pytest.raises(ValueError, match="tiny"):
        TASK.load("train", "tiny")


def test_real_gsm8k_test_split(shared_data):
    rows = TASK.load("test", str(shared_data / "gsm8k_test.jsonl"))
    assert len(rows) == 1319
    negatives = 0
    for row in rows:
        gold = gsm8k.gold_number(row["answer"])
        negatives += gold < 0
        text = row["answer"].rsplit("####", 1)[1].strip()
        completion = f"<reasoning>\nwork\n</reasoning>\n<answer>\n{text}\n</answer>\n"
        assert TASK.grade(completion, row)["correct"], row["answer"][-40:]
        assert TASK.reward(completion, row) == 4.0 or "," in text or gold < 0
    assert negatives == 2


def test_hub_loader_through_datasets_on_a_local_copy_of_the_repo(shared_data, tmp_path, monkeypatch):
    """datasets.load_dataset(<repo>, "main", split=...) on a folder laid out like openai/gsm8k."""
    import pandas as pd

    rows = [r for r in TASK.load("test", str(shared_data / "gsm8k_test.jsonl"))]
    repo = tmp_path / "gsm8k"
    (repo / "main").mkdir(parents=True)
    pd.DataFrame(rows[:40]).to_parquet(repo / "main" / "train-00000-of-00001.parquet")
    pd.DataFrame(rows[40:50]).to_parquet(repo / "main" / "test-00000-of-00001.parquet")
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: main/train-*\n"
        "  - split: test\n    path: main/test-*\n---\n"
    )
    monkeypatch.setattr(gsm8k, "HUB_ID", str(repo))
    assert TASK.load("test", "hub") == rows[40:50]
    train = TASK.load("train", "hub", n_validation=8, seed=2)
    validation = TASK.load("validation", "hub", n_validation=8, seed=2)
    assert len(train) == 32 and len(validation) == 8
    assert {r["question"] for r in train}.isdisjoint(r["question"] for r in validation)
    monkeypatch.setattr(gsm8k, "HUB_ID", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="datasets.load_dataset"):
        TASK.load("test", "hub")
