"""Sweep tables and figures: accuracy (best generation length, both checkpoint protocols, mean and 95% t-interval
over seeds) against one setting varied across methods that are otherwise identical (``sweep_k``: K selected steps,
``sweep_lambda``: lambda of the stepwise return). Each method is one point; its value comes from the workflow's
merged settings (``--sweep METHOD=VALUE``), and a label such as ``all (16)`` keeps a non-numeric point in order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from egspo.report.tables import BEST, PROTOCOL_LABELS, PROTOCOLS, format_ci, markdown_table, method_label

_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def point_value(label: str) -> float:
    """The x position of a sweep point: the first number in its label (``4`` -> 4, ``all (16)`` -> 16)."""
    match = _NUMBER.search(label)
    if match is None:
        raise ValueError(f"sweep value {label!r} contains no number to place it on the axis")
    return float(match.group(0))


def sweep_table(summary: pd.DataFrame, values: Mapping[str, str], name: str) -> pd.DataFrame:
    """One row per (task, swept method) at the best generation length, in order of the parameter value."""
    rows = []
    best = summary[summary["gen_length"] == BEST]
    for task in dict.fromkeys(best["task"]):
        points = []
        for method, label in values.items():
            sub = best[(best["task"] == task) & (best["method"] == method)]
            if sub.empty:
                raise ValueError(f"sweep {name}: method {method!r} has no scores for task {task!r}")
            r = sub.iloc[0]
            points.append({"task": task, "parameter": name, "value": label, "x": point_value(label),
                           "method": method, "n_seeds": int(r["n_seeds"]),
                           **{f"{p}_{s}": r[f"{p}_{s}"] for p in PROTOCOLS for s in ("mean", "ci_low", "ci_high")}})
        rows += sorted(points, key=lambda p: p["x"])
    return pd.DataFrame(rows)


def sweep_markdown(table: pd.DataFrame, name: str, title: str, note: str = "") -> str:
    rows = [[r.task, r.value, method_label(r.method), r.n_seeds,
             format_ci(r.best_on_test_mean, r.best_on_test_ci_low, r.best_on_test_ci_high),
             format_ci(r.val_chosen_mean, r.val_chosen_ci_low, r.val_chosen_ci_high)] for r in table.itertuples()]
    text = (f"# {title}\n\nAccuracy in % at the best generation length against {name}; mean and 95% t-interval over "
            f"seeds. Best on test: {PROTOCOL_LABELS['best_on_test']}; chosen on validation: "
            f"{PROTOCOL_LABELS['val_chosen']}. Every other setting is the same for all points.\n")
    if note:
        text += f"\n{note}\n"
    return text + "\n" + markdown_table(["Task", name, "Method", "n seeds", "Best on test (paper protocol)",
                                         "Chosen on validation (honest)"], rows)


def sweep_figure(table: pd.DataFrame, name: str, stem: str | Path, title: str) -> list[Path]:
    """Accuracy against the parameter, one panel per task, both protocols with 95% interval bars."""
    from egspo.report.figures import plt, save_figure

    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = table[table["task"] == task]
        positions = list(range(len(sub)))
        for offset, protocol, marker in ((-0.08, "best_on_test", "o"), (0.08, "val_chosen", "s")):
            mean = sub[f"{protocol}_mean"].to_numpy(dtype=float)
            if all(math.isnan(v) for v in mean):
                continue
            low = mean - sub[f"{protocol}_ci_low"].to_numpy(dtype=float)
            high = sub[f"{protocol}_ci_high"].to_numpy(dtype=float) - mean
            ax.errorbar([p + offset for p in positions], mean, yerr=[low, high], marker=marker, capsize=3,
                        label="best on test (paper)" if protocol == "best_on_test" else "chosen on validation")
        ax.set_xticks(positions, list(sub["value"]))
        ax.set_xlabel(name)
        ax.set_ylabel("accuracy % (best length)")
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, stem)


def parse_values(items: Sequence[tuple[str, str]], methods: Sequence[str]) -> dict[str, str]:
    """``--sweep METHOD=VALUE`` pairs as an ordered mapping; every method must be one of ``methods``."""
    values = dict(items)
    unknown = [m for m in values if m not in methods]
    if unknown:
        raise ValueError(f"--sweep names method(s) {unknown} not among --methods {list(methods)}")
    if len(values) < 2:
        raise ValueError(f"--sweep needs at least two points, got {items}")
    return values


__all__ = ["parse_values", "point_value", "sweep_figure", "sweep_markdown", "sweep_table"]
