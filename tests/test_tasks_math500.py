import threading

import pytest

from egspo.tasks import get_task

TASK = get_task("math500")


def _row(answer):
    return {"problem": "p", "solution": f"so $\\boxed{{{answer}}}$.", "answer": answer}


@pytest.mark.parametrize(
    "gold, boxed, correct",
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{1}{2}", "\\frac12", True),
        ("\\frac{1}{2}", "\\boxed{\\frac{1}{2}}", True),  # nested box
        ("\\frac{1}{2}", "0.25", False),
        ("10,\\!000", "10000", True),  # thousands separators
        ("10,\\!000", "10,000", True),
        ("1000", "1{,}000", True),
        ("14", "14\\text{ cm}", True),  # units
        ("12\\text{ m}^2", "12", True),
        ("-3+4i", "4i-3", True),
        ("(3,-2)", "(-2,3)", False),
        ("(-\\infty,3)", "(-\\infty,3]", False),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("2\\sqrt{3}", "2\\sqrt3", True),
        ("\\text{(C)}", "C", True),
        ("5", "42", False),
    ],
)
def test_math_verify_equivalences(gold, boxed, correct):
    completion = f"<reasoning>\nwork\n</reasoning>\n<answer>\n\\boxed{{{boxed}}}\n</answer>\n"
    result = TASK.grade(completion, _row(gold))
    assert result["correct"] is correct
    assert result["reward"] == 0.5 + (2.0 if correct else 0.0)


def test_answer_location_and_format_reward():
    row = _row("\\frac{3}{4}")
    assert TASK.grade("<answer>\n\\frac{3}{4}\n</answer>", row) == {
        "correct": True, "reward": 2.0, "extracted": "\\frac{3}{4}",
        "reward_components": {"format_reward": 0.0, "correctness_reward": 2.0}}
    assert TASK.grade("The answer is $\\boxed{\\frac34}$.", row)["reward"] == 2.0  # box without answer block
    assert TASK.grade("\\frac{3}{4}", row)["correct"] is False  # no answer container
    assert TASK.grade("So \\boxed{\\frac34}.\n<answer>see above</answer>", row)["correct"] is False
    assert TASK.grade("<answer>\\boxed{1} then \\boxed{\\frac34}</answer>", row)["correct"] is True  # last box
    assert TASK.grade("<answer>\\boxed{}</answer>", row)["reward"] == 0.0
    assert TASK.grade("<answer>\\boxed{\\frac34</answer>", row)["correct"] is False


@pytest.mark.timeout(300)  # a hang guard (fails only if this never finishes), not a speed test
def test_robust_to_adversarial_text():
    row = _row("5")
    for text in ["", "\\boxed{" * 10_000, "<answer>" + "{" * 5000 + "</answer>", "<answer>\\boxed{" + "9" * 5000 + "}</answer>",
                 "x" * 1_000_000, "<answer>\\boxed{\\frac{\\frac{\\frac{1}{2}}{3}}{4}}</answer>"]:
        result = TASK.grade(text, row)
        assert result["correct"] is False and result["reward"] in (0.0, 0.5)


def test_grading_off_the_main_thread_uses_the_worker_timeout():
    row = _row("\\frac{1}{2}")
    out = {}

    def work():
        out["result"] = TASK.grade("<answer>\\boxed{0.5}</answer>", row)

    t = threading.Thread(target=work)
    t.start()
    t.join(30)
    assert out["result"]["correct"] is True


def test_loader_normalizes_missing_answer_and_prompt(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"problem": "1+1?", "solution": "It is $\\\\boxed{2}$."}\n')
    rows = TASK.load("train", str(path))
    assert rows[0]["answer"] == "2"
    prompt = TASK.prompt(rows[0])
    assert "\\boxed{}" in prompt and prompt.endswith("1+1?")
    with pytest.raises(ValueError, match="tiny"):
        TASK.load("test", "tiny")
    assert TASK.grade(TASK.target(rows[0], "d1"), rows[0])["reward"] == 2.5


def test_a_check_that_would_run_unbounded_is_cut_off_from_any_thread(monkeypatch):
    # 9^{9^{9^{9}}}: math-verify would compute the power; signal.alarm cannot stop it outside the main thread (nor a
    # long C-level operation inside it). The worker process is killed at the deadline and the answer is "no".
    from egspo.tasks import math500, verify_worker

    monkeypatch.setattr(math500, "MATH_VERIFY_TIMEOUT", 1)
    out = {}

    def work():
        out["huge"] = TASK.grade("<answer>\\boxed{9^{9^{9^{9}}}}</answer>", _row("1"))["correct"]

    t = threading.Thread(target=work)
    t.start()
    t.join(300)  # only a check that is not bounded gets here
    assert not t.is_alive() and out["huge"] is False
    # a fresh worker answers the next check
    monkeypatch.setattr(math500, "MATH_VERIFY_TIMEOUT", 30)
    assert TASK.grade("<answer>\\boxed{0.5}</answer>", _row("\\frac{1}{2}"))["correct"]
    verify_worker.shutdown()
    assert verify_worker.verify_equivalent("2", "2", 30)  # a later call starts a new worker
