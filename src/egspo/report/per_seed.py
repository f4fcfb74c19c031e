"""`per_seed.csv`: every score behind the tables, one row per (task, method, seed, step, gen_length, split).

Columns exactly ``task, method, seed, step, gen_length, split, score, n``: ``score`` in the unit of main.csv (100 x
the task's metric), ``n`` the examples it was computed on, ``step`` the optimizer step of the checkpoint (0 = the
model before RL). A model every seed shares (the warm start, method ``sft``) was evaluated once: it has one row per
(step, length, split), under the seed it was evaluated with, and :func:`grid_from_per_seed` pairs it with every seed
again, so every interval of main, gains and the method-vs-method table can be recomputed from this file alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

COLUMNS = ["task", "method", "seed", "step", "gen_length", "split", "score", "n"]


def per_seed_frame(grid: pd.DataFrame) -> pd.DataFrame:
    """The rows of an evaluation grid (`egspo.report.tables.load_eval_grid`) as per_seed rows: a shared model's
    copies collapse to the one evaluation, under the seed it was made with."""
    shared = grid["shared"].astype(bool)
    own = grid[~shared]
    first_seed = grid[shared].groupby(["task", "method"])["seed"].transform("min")
    once = grid[shared][grid[shared]["seed"] == first_seed].copy()
    once["seed"] = once["model_seed"]
    out = pd.concat([own, once], ignore_index=True).rename(columns={"value": "score"})
    out = out.sort_values(["task", "method", "seed", "step", "gen_length", "split"], kind="mergesort")
    return out[COLUMNS].reset_index(drop=True)


def grid_from_per_seed(per_seed: pd.DataFrame, seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """The evaluation grid back from per_seed rows. A (task, method) with rows of one seed while the task has more
    seeds (or than ``seeds``) is a shared model: its rows stand in every seed's, marked ``shared``."""
    missing = [c for c in COLUMNS if c not in per_seed]
    if missing:
        raise ValueError(f"per_seed rows lack column(s) {missing}; expected {COLUMNS}")
    parts = []
    for task, of_task in per_seed.groupby("task", sort=False):
        task_seeds = sorted(seeds if seeds is not None else set(of_task["seed"]))
        for _, rows in of_task.groupby("method", sort=False):
            rows = rows.rename(columns={"score": "value"}).assign(model_seed=rows["seed"])
            if rows["seed"].nunique() == 1 and len(task_seeds) > 1:
                parts += [rows.assign(seed=s, shared=True) for s in task_seeds]
            else:
                parts.append(rows.assign(shared=False))
    grid = pd.concat(parts, ignore_index=True)
    grid["ckpt"] = ["start" if s == 0 else f"step_{s}" for s in grid["step"]]
    return grid


__all__ = ["COLUMNS", "grid_from_per_seed", "per_seed_frame"]
