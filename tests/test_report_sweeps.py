"""Sweep tables and figures: points ordered by the swept value (a label such as `all (16)` placed at 16), each
point's mean and interval the main table's for that method at the best length, and bad sweeps named."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from egspo.cli import run_command as egspo_main
from egspo.report import tables
from egspo.report.sweeps import point_value

T2 = 4.302652729749464  # t_{0.975, 2}
POINTS = {"egspo_sa_k16": "all (16)", "egspo_sa_k1": "1", "egspo_sa": "4"}  # deliberately out of order


def _write(root):
    eval_dir = root / "eval"
    for i, method in enumerate(POINTS):
        for seed in (0, 1, 2):
            for split in ("validation", "test"):
                path = tables.eval_metrics_path(eval_dir, "sudoku", method, seed, "step_2", 8, split)
                path.parent.mkdir(parents=True, exist_ok=True)
                value = 0.1 * (i + 1) + 0.01 * seed  # method i: 10(i+1) + seed points
                path.write_text(json.dumps({"cell_accuracy": value, "n": 50}))
    return eval_dir


def test_sweep_table_and_figure(tmp_path):
    out = tmp_path / "out"
    assert egspo_main(["report", "accuracy", "--eval-dir", str(_write(tmp_path)), "--tasks", "sudoku",
                       "--methods", *POINTS, "--seeds", "0", "1", "2", "--lengths", "8",
                       "--checkpoints", *[f"{m}=step_2" for m in POINTS], "--table", str(out / "by_length"),
                       "--sweep", *[f"{m}={v}" for m, v in POINTS.items()], "--sweep-name", "K",
                       "--sweep-table", str(out / "sweep"), "--sweep-figure", str(out / "fig"),
                       "--title", "Sweep: K"]) == 0
    sweep = pd.read_csv(out / "sweep.csv")
    assert sweep["value"].tolist() == ["1", "4", "all (16)"] and sweep["x"].tolist() == [1.0, 4.0, 16.0]
    row = sweep.set_index("method").loc["egspo_sa_k16"]  # i = 0: scores 10, 11, 12
    assert row["best_on_test_mean"] == pytest.approx(11.0) and row["val_chosen_mean"] == pytest.approx(11.0)
    assert row["best_on_test_ci_high"] - 11.0 == pytest.approx(T2 / math.sqrt(3), abs=1e-4)
    assert row["n_seeds"] == 3
    main = pd.read_csv(out / "by_length.csv", dtype={"gen_length": str})
    best = main[main["gen_length"] == "best"].set_index("method")
    for method in POINTS:
        assert sweep.set_index("method").loc[method, "best_on_test_mean"] == pytest.approx(
            best.loc[method, "best_on_test_mean"], abs=1e-4)
    md = (out / "sweep.md").read_text()
    assert "| sudoku | all (16) | EGSPO-SA (all steps, K=T) | 3 | 11.0 [" in md
    assert (out / "fig.png").stat().st_size > 1000 and (out / "fig.pdf").read_bytes().startswith(b"%PDF")


def test_point_values_and_bad_sweeps(tmp_path):
    assert point_value("0.25") == 0.25 and point_value("all (16)") == 16.0 and point_value("2") == 2.0
    with pytest.raises(ValueError, match="no number"):
        point_value("all")
    eval_dir = _write(tmp_path)
    base = ["report", "accuracy", "--eval-dir", str(eval_dir), "--tasks", "sudoku", "--methods", "egspo_sa",
            "egspo_sa_k1", "--seeds", "0", "--lengths", "8", "--checkpoints", "egspo_sa=step_2",
            "egspo_sa_k1=step_2", "--table", str(tmp_path / "t"), "--sweep-table", str(tmp_path / "s")]
    with pytest.raises(ValueError, match="not among --methods"):
        egspo_main(base + ["--sweep", "egspo_sa=4", "egspo_sa_k2=2"])
    with pytest.raises(ValueError, match="at least two points"):
        egspo_main(base + ["--sweep", "egspo_sa=4"])
