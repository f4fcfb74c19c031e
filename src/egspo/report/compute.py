"""The compute table: per task and method, seconds per RL iteration split into rollout (sampling and scoring),
stepwise-advantage work (greedy-fill rewards or M-continuation rollouts, selection, advantages) and update (old /
reference log-probs and the optimizer steps), and model forwards per iteration, from the runs' own metrics.jsonl.

Per run the mean over its iterations, then over runs (seeds) the mean with the 95% t-interval of the total time.
Forwards count sequences through the model (a batch of n rows is n), the unit compute scales with; they are the
same in every seed up to EOS-dependent work, so their mean is reported alone. Times depend on the machine's load:
compare methods within one run of the pipeline, not across runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from egspo.report.stats import mean_ci
from egspo.report.tables import markdown_table, method_label

TIME_COLUMNS = {"rollout_s": "time_sampling_s", "advantage_s": "time_advantage_s", "update_s": "time_update_s"}
FORWARD_COLUMNS = {"forwards_rollout": "forwards_sampling", "forwards_advantage": "forwards_advantage",
                   "forwards_update": "forwards_update"}


def run_means(metrics: pd.DataFrame, source: str | Path) -> dict[str, float]:
    """One run's per-iteration means of the six split columns; an absent or unset column is an error naming it."""
    out = {}
    for name, column in {**TIME_COLUMNS, **FORWARD_COLUMNS}.items():
        if column not in metrics or metrics[column].isna().any():
            raise ValueError(f"{source}: column {column!r} is missing or unset in some rows (runs from before the "
                             "compute split was logged, or a strategy that never calls trainer.advantages_known)")
        out[name] = float(metrics[column].astype(float).mean())
    out["total_s"] = out["rollout_s"] + out["advantage_s"] + out["update_s"]
    out["forwards_total"] = out["forwards_rollout"] + out["forwards_advantage"] + out["forwards_update"]
    out["iterations"] = int(len(metrics))
    return out


def compute_table(runs: dict[tuple[str, str], list[dict[str, float]]], methods: Sequence[str],
                  reference: str | None = None) -> pd.DataFrame:
    """Rows per (task, method) in ``methods`` order from each run's :func:`run_means`; ``time_ratio`` is the mean
    total time over ``reference``'s on the same task (NaN without one)."""
    rows = []
    tasks = list(dict.fromkeys(task for task, _ in runs))
    for task in tasks:
        for method in methods:
            per_run = runs.get((task, method))
            if not per_run:
                raise ValueError(f"no RL runs for task {task!r}, method {method!r}")
            row = {"task": task, "method": method, "n_runs": len(per_run),
                   "iterations": int(sum(r["iterations"] for r in per_run))}
            for name in ("rollout_s", "advantage_s", "update_s", "forwards_rollout", "forwards_advantage",
                         "forwards_update", "forwards_total"):
                row[name] = sum(r[name] for r in per_run) / len(per_run)
            ci = mean_ci([r["total_s"] for r in per_run])
            row.update({"total_s": ci.mean, "total_s_ci_low": ci.low, "total_s_ci_high": ci.high})
            rows.append(row)
    df = pd.DataFrame(rows)
    df["time_ratio"] = math.nan
    if reference is not None:
        for task in tasks:
            ref = df[(df["task"] == task) & (df["method"] == reference)]
            if ref.empty:
                raise ValueError(f"reference method {reference!r} has no runs for task {task!r}")
            mask = df["task"] == task
            df.loc[mask, "time_ratio"] = df.loc[mask, "total_s"] / float(ref["total_s"].iloc[0])
    return df


def compute_markdown(df: pd.DataFrame, reference: str | None, note: str = "") -> str:
    def sec(v: float) -> str:
        return f"{v:.2f}"

    rows = []
    for r in df.itertuples():
        total = sec(r.total_s) if math.isnan(r.total_s_ci_low) else \
            f"{r.total_s:.2f} [{r.total_s_ci_low:.2f}, {r.total_s_ci_high:.2f}]"
        rows.append([r.task, method_label(r.method), r.n_runs, sec(r.rollout_s), sec(r.advantage_s), sec(r.update_s),
                     total, "" if math.isnan(r.time_ratio) else f"{r.time_ratio:.2f}", f"{r.forwards_rollout:.0f}",
                     f"{r.forwards_advantage:.0f}", f"{r.forwards_update:.0f}", f"{r.forwards_total:.0f}"])
    ratio = f"time / {method_label(reference)}" if reference else "time ratio"
    header = ["Task", "Method", "runs", "rollout s", "stepwise adv. s", "update s", "total s/iter [95% CI]", ratio,
              "fwd rollout", "fwd stepwise", "fwd update", "fwd total"]
    text = ("# Compute per RL iteration\n\nSeconds per iteration (mean over iterations, then over runs) split into "
            "rollout (sampling and scoring), stepwise-advantage work (greedy-fill rewards or M-continuation "
            "rollouts, selection, advantages) and update (old / reference log-probs, optimizer steps); model "
            "forwards per iteration in sequences (a batch of n rows counts n). Times depend on the machine's load: "
            "compare within one run.\n")
    return text + (f"\n{note}\n" if note else "") + "\n" + markdown_table(header, rows)


__all__ = ["compute_markdown", "compute_table", "run_means"]
