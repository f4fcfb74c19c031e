"""Each task's grader as a Hugging Face `evaluate` metric module, loaded by path as a user would: the result equals
hand-computed values and the `egspo grade` path (egspo.evaluation.grading, which grades row by row without the
metric), every task has a module with a metric card, and `egspo eval`'s summary is the metric's."""

from __future__ import annotations

import json

import evaluate
import pytest

from egspo.evaluation import grading
from egspo.evaluation.evaluate import grade_rows as eval_grade_rows
from egspo.evaluation.metric import METRICS_DIR, metric_dir, task_metric
from egspo.tasks import TASK_NAMES, get_task

SOLUTION = "1234341221434321"
PUZZLE = "1030300221004301"
CASES = {
    # (row, completion) pairs and the summary computed by hand
    "sudoku": ([({"Puzzle": PUZZLE, "Solution": SOLUTION}, f"<answer>{SOLUTION}</answer>"),
                ({"Puzzle": PUZZLE, "Solution": SOLUTION}, "<answer>1234341221434312</answer>"),
                ({"Puzzle": PUZZLE, "Solution": SOLUTION}, "no answer")],
               {"accuracy": 1 / 3, "n": 3, "reward_mean": 1 / 3, "cell_accuracy": 1 / 3}),
    "countdown": ([({"numbers": [1, 2, 3], "target": 6}, "<answer>1+2+3</answer>"),   # correct: reward 1
                   ({"numbers": [1, 2, 3], "target": 7}, "<answer>1+2+3</answer>"),   # well-formed, wrong: 0.1
                   ({"numbers": [1, 2, 3], "target": 6}, "<answer>1+2</answer>")],    # misses a number: 0.1
                  {"accuracy": 1 / 3, "n": 3, "reward_mean": 1.2 / 3, "well_formed": 1.0, "uses_numbers": 2 / 3}),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_metric_loaded_by_path_equals_hand_values_and_the_grader(task):
    pairs, expected = CASES[task]
    rows, completions = [r for r, _ in pairs], [c for _, c in pairs]
    metric = evaluate.load(str(metric_dir(task)))
    result = metric.compute(predictions=completions, references=[json.dumps(r) for r in rows])
    assert result.keys() == expected.keys()
    assert result == pytest.approx(expected)
    graded = grading.grade_rows(task, [{**r, "completion": c} for r, c in pairs])
    assert result["accuracy"] == pytest.approx(sum(g["correct"] for g in graded) / len(graded))
    assert result["reward_mean"] == pytest.approx(sum(g["reward"] for g in graded) / len(graded))
    per_row = metric.compute(predictions=completions, references=[json.dumps(r) for r in rows], per_row=True)
    assert [g["correct"] for g in per_row["rows"]] == [g["correct"] for g in graded]


def test_eval_stage_summary_is_the_metric_result():
    pairs, expected = CASES["countdown"]
    rows, completions = [r for r, _ in pairs], [c for _, c in pairs]
    out_rows, metrics = eval_grade_rows(get_task("countdown"), rows, completions)
    assert metrics == pytest.approx(expected)
    assert [r["completion"] for r in out_rows] == completions and [r["reward"] for r in out_rows] == [1.0, 0.1, 0.1]
    assert out_rows[0]["numbers"] == [1, 2, 3]  # the input row is kept


def test_every_task_has_a_module_and_a_metric_card():
    assert sorted(p.name for p in METRICS_DIR.iterdir() if p.is_dir() and p.name.startswith("egspo_")) == \
        sorted(f"egspo_{t}" for t in TASK_NAMES)
    for task in TASK_NAMES:
        card = (metric_dir(task) / "README.md").read_text()
        assert card.startswith("---\n") and f"# Metric Card for egspo_{task}" in card
        assert "### Inputs" in card and "### Output Values" in card
    with pytest.raises(ValueError, match="no evaluate module for task 'tetris'"):
        metric_dir("tetris")


def test_bad_reference_and_grader_errors_name_the_problem():
    metric = task_metric(get_task("sudoku"))
    with pytest.raises(ValueError, match=r"references\[0\]: a dataset row must be a JSON object, got list"):
        metric.compute(predictions=["x"], references=["[1, 2]"])
