"""Each task's grader as a Hugging Face ``evaluate`` metric, so anyone can score their own completions with our
metrics: ``evaluate.load(str(metric_dir("sudoku"))).compute(predictions=completions, references=rows)``.

Inputs: ``predictions`` the completions (strings); ``references`` the task's dataset rows, each as a JSON object
string (one line of the JSONL that ``egspo data`` writes). Output, over the n rows with grades g_i = grade(c_i, row_i):
``accuracy`` = (1/n) sum_i [correct_i], ``n``, ``reward_mean`` = (1/n) sum_i reward_i, and the mean of every other
numeric field the grader returns (e.g. Sudoku ``cell_accuracy``). ``per_row=True`` adds ``rows``: the grades
themselves, so the evaluation stage (:mod:`egspo.evaluation.evaluate`) grades each completion once.

The loadable modules are ``metrics/egspo_<task>/egspo_<task>.py``, each with a metric card (``README.md``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import datasets
import evaluate

from egspo.tasks import get_task
from egspo.tasks.base import Task

METRICS_DIR = Path(__file__).resolve().parent / "metrics"
# grader fields that are not averaged into the summary (the row's own identity, not a score)
RESERVED = frozenset({"completion", "correct", "reward"})

_CITATION = """@article{egspo2026,
  title = {Reinforcement Learning for Diffusion LLMs with Entropy-Guided Step Selection and Stepwise Advantages},
  journal = {arXiv preprint arXiv:2603.12554},
  year = {2026}
}"""


def metric_dir(task: str) -> Path:
    """The directory of task `task`'s evaluate module (pass it to ``evaluate.load``)."""
    path = METRICS_DIR / f"egspo_{task}"
    if not (path / f"egspo_{task}.py").is_file():
        have = sorted(p.name[len("egspo_"):] for p in METRICS_DIR.glob("egspo_*") if p.is_dir())
        raise ValueError(f"no evaluate module for task {task!r} under {METRICS_DIR} (have: {', '.join(have)})")
    return path


def summarize(grades: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """accuracy, n, reward_mean and the mean of every other numeric grader field (NaN accuracy for no rows)."""
    n = len(grades)
    summary: dict[str, Any] = {
        "accuracy": sum(bool(g["correct"]) for g in grades) / n if n else float("nan"),
        "n": n,
        "reward_mean": sum(float(g["reward"]) for g in grades) / n if n else float("nan"),
    }
    extras: dict[str, list[float]] = {}
    for grade in grades:
        for key, value in grade.items():
            if key not in RESERVED and isinstance(value, (bool, int, float)):
                extras.setdefault(key, []).append(float(value))
    for key, values in sorted(extras.items()):
        summary[key] = sum(values) / len(values)
    return summary


def check_grades(task: Task, grades: list[dict[str, Any]], n_rows: int) -> list[dict[str, Any]]:
    """The task's grades, each with ``correct`` a bool and ``reward`` a float; an error names the task otherwise."""
    if len(grades) != n_rows:
        raise ValueError(f"task {task.name!r} returned {len(grades)} grades for {n_rows} rows")
    out = []
    for grade in grades:
        if "correct" not in grade or "reward" not in grade:
            raise ValueError(f"task {task.name!r} grader returned {sorted(grade)}; needs 'correct' and 'reward'")
        out.append({**grade, "correct": bool(grade["correct"]), "reward": float(grade["reward"])})
    return out


class TaskMetric(evaluate.Metric):
    """A task's grader as an evaluate metric: the task is the subclass's ``TASK``, the ``config_name`` given to
    ``evaluate.load``, or a Task object passed as ``task=`` (a task registered at run time)."""

    TASK: str | None = None

    def __init__(self, *args, task: Task | None = None, **kwargs):
        self._task_object = task
        super().__init__(*args, **kwargs)

    def task(self) -> Task:
        if self._task_object is not None:
            return self._task_object
        name = self.TASK or self.config_name
        if name in (None, "default"):
            raise ValueError("TaskMetric needs a task: a subclass TASK, a config name or task=")
        return get_task(name)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=f"egspo grader of task {self.TASK or self.config_name}: accuracy, mean reward and the "
                        f"grader's other numeric fields over (completion, dataset row) pairs.",
            citation=_CITATION,
            inputs_description="predictions: completions (str); references: dataset rows as JSON object strings; "
                               "per_row: also return each row's grade under 'rows'.",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            module_type="metric",
        )

    def _compute(self, predictions=None, references=None, per_row: bool = False) -> dict[str, Any]:
        task = self.task()
        rows = []
        for i, text in enumerate(references):
            row = json.loads(text)
            if not isinstance(row, dict):
                raise ValueError(f"references[{i}]: a dataset row must be a JSON object, got {type(row).__name__}")
            rows.append(row)
        grades = check_grades(task, task.grade_batch(list(predictions), rows), len(rows))
        result = summarize(grades)
        if per_row:
            result["rows"] = grades
        return result


def task_metric(task: Task) -> TaskMetric:
    """The evaluate metric of a Task object, in memory (no cache files), for the evaluation stage."""
    return TaskMetric(config_name=task.name, task=task, keep_in_memory=True)


def grade_with_metric(task: Task, rows: Sequence[dict[str, Any]], completions: Sequence[str]):
    """(grades, summary) of `completions` against `rows`, computed through the task's evaluate metric."""
    result = task_metric(task).compute(predictions=list(completions), references=[json.dumps(r) for r in rows],
                                       per_row=True)
    grades = result.pop("rows")
    return grades, result
