"""Report stage on small synthetic run files written by the tests (fixture data for the aggregation code):
hand-computed means and t-intervals, the two checkpoint protocols on a case where they differ, paired differences,
the t quantile against tables and an independent incomplete-beta computation, and byte-identical reruns."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from egspo.report import tables
from egspo.cli import run_command as egspo_main  # errors propagate (egspo.cli.main reports them)
from egspo.report.build import read_rl_metrics
from egspo.report.stats import mean_ci, t_quantile, t_two_sided_mass

T2 = 4.302652729749752  # t_{0.975, 2}
SEEDS = (0, 1, 2)


# ---- statistics ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("df, expected", [(1, 12.706205), (2, 4.302653), (3, 3.182446), (4, 2.776445),
                                          (9, 2.262157), (29, 2.045230), (100, 1.983972)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-6)


def test_t_mass_matches_incomplete_beta():
    mpmath = pytest.importorskip("mpmath")
    for df in (1, 2, 3, 4, 7, 10, 31):
        for t in (0.1, 0.9, 2.0, 4.3, 12.0):
            # P(|T| <= t) = 1 - I_{nu/(nu+t^2)}(nu/2, 1/2)
            x = df / (df + t * t)
            expected = 1 - float(mpmath.betainc(df / 2, 0.5, 0, x, regularized=True))
            assert t_two_sided_mass(t, df) == pytest.approx(expected, abs=1e-12)


def test_mean_ci_hand_values():
    ci = mean_ci([1.0, 2.0, 3.0])
    assert (ci.mean, ci.n) == (2.0, 3)
    assert ci.low == pytest.approx(2.0 - T2 / math.sqrt(3)) and ci.high == pytest.approx(2.0 + T2 / math.sqrt(3))
    assert not ci.excludes_zero
    one = mean_ci([5.0])
    assert one.mean == 5.0 and math.isnan(one.low) and not one.excludes_zero
    assert mean_ci([1.0, 1.2, 1.4]).excludes_zero
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.975, 0)


# ---- a synthetic evaluation grid -----------------------------------------------------------------------------
# egspo_sa at L=8: step_1 has the better validation accuracy but step_2 the better test accuracy, so the
# protocols differ: best-on-test picks step_2 (60+s %), validation picks step_1 (40+2s %).
def _values(method: str, seed: int, ckpt: str, length: int) -> dict[str, float]:
    if method == "sft":
        return {"validation": 0.35, "test": 0.30 + 0.03 * seed} if length == 8 else {"validation": 0.10, "test": 0.05}
    if length == 8:
        return ({"validation": 0.50, "test": 0.40 + 0.02 * seed} if ckpt == "step_1"
                else {"validation": 0.30, "test": 0.60 + 0.01 * seed})
    return {"validation": 0.20, "test": 0.10} if ckpt == "step_1" else {"validation": 0.25, "test": 0.20}


CHECKPOINTS = {"sft": ["sft"], "egspo_sa": ["step_1", "step_2"]}


def _write_grid(root: Path, task: str = "countdown", extra: dict | None = None) -> Path:
    eval_dir = root / "eval"
    for method, ckpts in CHECKPOINTS.items():
        for seed in SEEDS:
            for ckpt in ckpts:
                for length in (8, 16):
                    for split, acc in _values(method, seed, ckpt, length).items():
                        path = tables.eval_metrics_path(eval_dir, task, method, seed, ckpt, length, split)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(json.dumps({"accuracy": acc, "n": 10, **(extra or {})}))
    return eval_dir


def _grid(eval_dir: Path, task: str = "countdown") -> pd.DataFrame:
    return tables.load_eval_grid(eval_dir, tasks=[task], methods=["sft", "egspo_sa"], seeds=SEEDS,
                                 checkpoints=CHECKPOINTS, lengths=[8, 16], splits=["validation", "test"])


def test_protocols_differ_on_crafted_case(tmp_path):
    scores = tables.protocol_scores(_grid(_write_grid(tmp_path)))
    rl8 = scores[(scores["method"] == "egspo_sa") & (scores["gen_length"] == "8")].sort_values("seed")
    assert rl8["best_on_test"].tolist() == pytest.approx([60.0, 61.0, 62.0])
    assert rl8["val_chosen"].tolist() == pytest.approx([40.0, 42.0, 44.0])
    assert set(rl8["val_ckpt"]) == {"step_1"}
    rl16 = scores[(scores["method"] == "egspo_sa") & (scores["gen_length"] == "16")]
    assert rl16["best_on_test"].tolist() == pytest.approx([20.0] * 3)
    assert rl16["val_chosen"].tolist() == pytest.approx([20.0] * 3) and set(rl16["val_ckpt"]) == {"step_2"}
    # best over lengths: test max over (ckpt, L); validation argmax over (ckpt, L) is (step_1, 8)
    best = scores[(scores["method"] == "egspo_sa") & (scores["gen_length"] == tables.BEST)].sort_values("seed")
    assert best["best_on_test"].tolist() == pytest.approx([60.0, 61.0, 62.0])
    assert best["val_chosen"].tolist() == pytest.approx([40.0, 42.0, 44.0])
    assert set(best["val_gen_length"]) == {8}


def test_summary_means_and_intervals(tmp_path):
    summary = tables.summarize(tables.protocol_scores(_grid(_write_grid(tmp_path))), ["sft", "egspo_sa"])
    assert summary[["gen_length", "method"]].values.tolist() == [
        ["8", "sft"], ["8", "egspo_sa"], ["16", "sft"], ["16", "egspo_sa"], ["best", "sft"], ["best", "egspo_sa"]]
    row = summary[(summary["gen_length"] == "8") & (summary["method"] == "egspo_sa")].iloc[0]
    assert row["n_seeds"] == 3
    # best on test: 60, 61, 62 -> 61 +- t * 1 / sqrt(3); validation-chosen: 40, 42, 44 -> 42 +- t * 2 / sqrt(3)
    assert row["best_on_test_mean"] == pytest.approx(61.0)
    assert row["best_on_test_ci_high"] - row["best_on_test_mean"] == pytest.approx(T2 / math.sqrt(3))
    assert row["val_chosen_mean"] == pytest.approx(42.0)
    assert row["val_chosen_mean"] - row["val_chosen_ci_low"] == pytest.approx(2 * T2 / math.sqrt(3))
    sft8 = summary[(summary["gen_length"] == "8") & (summary["method"] == "sft")].iloc[0]
    assert sft8["best_on_test_mean"] == pytest.approx(33.0) and sft8["val_chosen_mean"] == pytest.approx(33.0)


def test_paired_gains(tmp_path):
    scores = tables.protocol_scores(_grid(_write_grid(tmp_path)))
    gains = tables.paired_gains(scores, "sft", ["sft", "egspo_sa"])
    assert set(gains["method"]) == {"egspo_sa"}
    g = gains.set_index(["gen_length", "protocol"])
    # differences 30, 28, 26 (sd 2) and 10, 9, 8 (sd 1)
    row = g.loc[("8", "best_on_test")]
    assert row["diff_mean"] == pytest.approx(28.0)
    assert row["diff_ci_low"] == pytest.approx(28.0 - 2 * T2 / math.sqrt(3)) and bool(row["ci_excludes_zero"])
    row = g.loc[("8", "val_chosen")]
    assert row["diff_mean"] == pytest.approx(9.0)
    assert row["diff_ci_high"] == pytest.approx(9.0 + T2 / math.sqrt(3)) and row["n_seeds"] == 3
    assert g.loc[("16", "best_on_test"), "diff_mean"] == pytest.approx(15.0)


def test_validation_ties_pick_the_later_checkpoint(tmp_path):
    grid = pd.DataFrame([
        {"task": "t", "method": "m", "seed": 0, "ckpt": c, "step": s, "gen_length": 8, "split": sp, "value": v}
        for c, s, val, test in (("step_1", 1, 50.0, 10.0), ("step_2", 2, 50.0, 30.0), ("step_3", 3, 40.0, 90.0))
        for sp, v in (("validation", val), ("test", test))])
    scores = tables.protocol_scores(grid)
    row = scores[scores["gen_length"] == "8"].iloc[0]
    assert row["val_ckpt"] == "step_2" and row["val_chosen"] == 30.0 and row["best_on_test"] == 90.0


def test_task_qualified_checkpoint_list_overrides_the_method_list_for_that_task(tmp_path):
    eval_dir = _write_grid(tmp_path)  # countdown: egspo_sa has step_1 and step_2
    only_step_2 = {**CHECKPOINTS, "countdown:egspo_sa": ["step_2"], "sudoku:egspo_sa": ["step_9"]}
    grid = tables.load_eval_grid(eval_dir, tasks=["countdown"], methods=["sft", "egspo_sa"], seeds=SEEDS,
                                 checkpoints=only_step_2, lengths=[8, 16], splits=["validation", "test"])
    assert set(grid.loc[grid["method"] == "egspo_sa", "ckpt"]) == {"step_2"}
    assert set(grid.loc[grid["method"] == "sft", "ckpt"]) == {"sft"}
    with pytest.raises(ValueError, match="no checkpoint list for method 'egspo' of task 'countdown'"):
        tables.load_eval_grid(eval_dir, tasks=["countdown"], methods=["egspo"], seeds=SEEDS, checkpoints=CHECKPOINTS,
                              lengths=[8], splits=["test"])


def test_shared_start_model_is_read_once_and_paired_with_every_seed(tmp_path):
    eval_dir = _write_grid(tmp_path)
    for length in (8, 16):  # the one warm start, evaluated once under its own seed 9 with other values
        for split, acc in (("validation", 0.05), ("test", 0.07)):
            path = tables.eval_metrics_path(eval_dir, "countdown", "sft", 9, "sft", length, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"accuracy": acc, "n": 10}))
    grid = tables.load_eval_grid(eval_dir, tasks=["countdown"], methods=["sft", "egspo_sa"], seeds=SEEDS,
                                 checkpoints=CHECKPOINTS, lengths=[8, 16], splits=["validation", "test"],
                                 shared_seeds={"countdown:sft": 9})
    sft = grid[grid["method"] == "sft"]
    assert sorted(set(sft["seed"])) == sorted(SEEDS)
    assert sft.loc[sft["split"] == "test", "value"].tolist() == pytest.approx([7.0] * 2 * len(SEEDS))
    gains = tables.paired_gains(tables.protocol_scores(grid), "sft", ["sft", "egspo_sa"])
    row = gains[(gains["gen_length"] == "8") & (gains["protocol"] == "best_on_test")].iloc[0]
    assert row["n_seeds"] == len(SEEDS) and row["diff_mean"] == pytest.approx(61.0 - 7.0)  # 60/61/62 minus 7 each
    with pytest.raises(FileNotFoundError, match="seed4"):
        tables.load_eval_grid(eval_dir, tasks=["countdown"], methods=["sft"], seeds=SEEDS, checkpoints=CHECKPOINTS,
                              lengths=[8], splits=["test"], shared_seeds={"sft": 4})


def test_sudoku_uses_cell_accuracy_and_errors_name_the_problem(tmp_path):
    eval_dir = _write_grid(tmp_path, task="sudoku", extra={"cell_accuracy": 0.7})
    grid = _grid(eval_dir, task="sudoku")
    assert set(grid["value"]) == {70.0}
    with pytest.raises(ValueError, match="no field 'full_solve'"):
        tables.load_eval_grid(eval_dir, tasks=["sudoku"], methods=["sft"], seeds=[0], checkpoints=CHECKPOINTS,
                              lengths=[8], splits=["test"], metric={"sudoku": "full_solve"})
    with pytest.raises(FileNotFoundError, match="seed7"):
        tables.load_eval_grid(eval_dir, tasks=["sudoku"], methods=["sft"], seeds=[7], checkpoints=CHECKPOINTS,
                              lengths=[8], splits=["test"])
    bad = tables.eval_metrics_path(eval_dir, "sudoku", "sft", 0, "sft", 8, "test")
    bad.write_text(json.dumps({"accuracy": 1.5, "cell_accuracy": 1.5}))
    with pytest.raises(ValueError, match="not a fraction"):
        _grid(eval_dir, task="sudoku")


def test_paper_reference_rows():
    ref = tables.paper_reference_rows(["sudoku", "countdown"])
    sudoku = ref[ref["task"] == "sudoku"].set_index(["source", "method"])["best_on_test_mean"]
    assert sudoku[(tables.PAPER_SOURCE_FIGURE1, "d1")] == 22.1
    assert sudoku[(tables.PAPER_SOURCE_CARD, "EGSPO")] == 93.6
    assert sudoku[(tables.PAPER_SOURCE_CARD, "EGSPO-SA")] == 94.3
    assert ref[ref["task"] == "countdown"].set_index("method").loc["SPG", "best_on_test_mean"] == 71.5
    assert set(ref["gen_length"]) == {tables.BEST}


# ---- the command line, end to end on the synthetic files -------------------------------------------------------
def _accuracy_cli(tmp_path: Path, out: Path) -> None:
    eval_dir = _write_grid(tmp_path)
    rc = egspo_main(["report", "accuracy", "--eval-dir", str(eval_dir), "--tasks", "countdown",
                     "--methods", "sft", "egspo_sa", "--seeds", "0", "1", "2", "--lengths", "8", "16",
                     "--checkpoints", "sft=sft", "egspo_sa=step_1,step_2", "--reference", "sft",
                     "--paper-reference", "--table", str(out / "tables/main"), "--gains", str(out / "tables/gains"),
                     "--figure", str(out / "figures/fig1"), "--environment", str(out / "environment.json")])
    assert rc == 0


def test_accuracy_command_outputs_and_determinism(tmp_path):
    out1, out2 = tmp_path / "r1", tmp_path / "r2"
    _accuracy_cli(tmp_path, out1)
    _accuracy_cli(tmp_path, out2)
    names = ["tables/main.csv", "tables/main.md", "tables/gains.csv", "tables/gains.md", "figures/fig1.png",
             "figures/fig1.pdf"]
    for name in names:
        a, b = (out1 / name).read_bytes(), (out2 / name).read_bytes()
        assert len(a) > 100 and a == b, name
    main = pd.read_csv(out1 / "tables/main.csv")
    ours = main[main["source"] == tables.OURS]
    row = ours[(ours["gen_length"] == "8") & (ours["method"] == "egspo_sa")].iloc[0]
    assert row["best_on_test_mean"] == pytest.approx(61.0) and row["val_chosen_mean"] == pytest.approx(42.0)
    paper = main[main["source"] != tables.OURS]
    assert paper.set_index("method").loc["EGSPO-SA", "best_on_test_mean"] == 78.5
    md = (out1 / "tables/main.md").read_text()
    assert "n = 3" in md and "61.0 [58.5, 63.5]" in md and "42.0 [37.0, 47.0]" in md
    assert "paper's protocol" in md and "honest" in md
    gains_md = (out1 / "tables/gains.md").read_text()
    assert "28.0 [23.0, 33.0]" in gains_md
    assert (out1 / "figures/fig1.pdf").read_bytes().startswith(b"%PDF")
    assert b"CreationDate" not in (out1 / "figures/fig1.pdf").read_bytes()
    import torch
    environment = json.loads((out1 / "environment.json").read_text())  # where the tables came from
    assert environment["versions"]["torch"] == torch.__version__ and environment["processor"]


def test_gains_without_reference_is_an_error(tmp_path):
    eval_dir = _write_grid(tmp_path)
    with pytest.raises(ValueError, match="--reference"):
        egspo_main(["report", "accuracy", "--eval-dir", str(eval_dir), "--tasks", "countdown", "--methods", "sft",
                    "--seeds", "0", "--lengths", "8", "--checkpoints", "sft=sft", "--table", str(tmp_path / "t"),
                    "--gains", str(tmp_path / "g")])


def test_rl_metrics_resume_duplicates_keep_last_and_curves(tmp_path):
    rl = tmp_path / "rl"
    for method in ("egspo", "egspo_sa"):
        for seed in (0, 1):
            path = rl / "sudoku" / method / f"seed{seed}" / "metrics.jsonl"
            path.parent.mkdir(parents=True)
            rows = [{"step": s, "reward_mean": 0.1 * s + seed, "kl": 0.01 * s} for s in (1, 2, 3)]
            rows.append({"step": 3, "reward_mean": 9.0, "kl": 0.5})  # the step re-run after a resume
            path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    df = read_rl_metrics(rl / "sudoku" / "egspo" / "seed0" / "metrics.jsonl")
    assert df["step"].tolist() == [1, 2, 3] and df["reward_mean"].tolist() == pytest.approx([0.1, 0.2, 9.0])
    stem = tmp_path / "curves"
    assert egspo_main(["report", "curves", "--rl-dir", str(rl), "--tasks", "sudoku", "--methods", "egspo",
                       "egspo_sa", "--seeds", "0", "1", "--figure", str(stem)]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000 and (tmp_path / "curves.pdf").stat().st_size > 1000
    with pytest.raises(ValueError, match="no column"):
        egspo_main(["report", "curves", "--rl-dir", str(rl), "--tasks", "sudoku", "--methods", "egspo",
                    "--seeds", "0", "--columns", "entropy", "--figure", str(stem)])


def _trace(task: str, T: int = 8, selected=(1, 5)) -> dict:
    return {"task": task, "k": 2, "gen_length": 16, "steps": T,
            "samples": [{"prompt": "p", "completion": "c", "step_entropy": [0.1 * j + i for j in range(T)],
                         "selected": list(selected), "onestep_reward": [j / T for j in range(T)],
                         "final_reward": 1.0} for i in range(4)]}


def test_trace_figure_and_bad_trace(tmp_path):
    paths = []
    for task in ("sudoku", "countdown"):
        p = tmp_path / f"{task}.json"
        p.write_text(json.dumps(_trace(task)))
        paths.append(str(p))
    assert egspo_main(["report", "trace", "--traces", *paths, "--figure", str(tmp_path / "fig2")]) == 0
    assert (tmp_path / "fig2.png").stat().st_size > 1000
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_trace("sudoku", selected=(1, 8))))
    with pytest.raises(ValueError, match="outside 0..7"):
        egspo_main(["report", "trace", "--traces", str(bad), "--figure", str(tmp_path / "bad")])


def test_gradcheck_report(tmp_path):
    rows = []
    for remasking in ("random", "low_confidence"):
        for selection, k in (("all", 3), ("entropy", 1)):
            for baseline in ("none", "greedy"):
                for lam in (0.0, 0.5):
                    rows.append({"selection": selection, "k": k, "lam": lam, "baseline": baseline,
                                 "remasking": remasking, "cosine": 1.0, "rel_error": 1e-16 if selection == "all"
                                 else 0.5, "variance": 2.0 - lam, "score": "library", "grad_norm": 2.0,
                                 "estimate_norm": 2.0 if selection == "all" else 1.0})
    csv = tmp_path / "gc.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    assert egspo_main(["report", "gradcheck", "--csv", str(csv), "--table", str(tmp_path / "t"),
                       "--figure", str(tmp_path / "f")]) == 0
    assert pd.read_csv(tmp_path / "t.csv").shape == (16, 15)
    assert "| selection | k | lam |" in (tmp_path / "t.md").read_text()
    assert "rel_error_known_scale" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "f.pdf").stat().st_size > 1000
    pd.DataFrame(rows).drop(columns="variance").to_csv(csv, index=False)
    with pytest.raises(ValueError, match="variance"):
        egspo_main(["report", "gradcheck", "--csv", str(csv), "--table", str(tmp_path / "t"),
                    "--figure", str(tmp_path / "f")])


def test_task_without_validation_split_reports_val_chosen_as_na(tmp_path):
    """HumanEval has only a test split: `--task-splits humaneval=test` reads its test files alone, the
    validation-chosen column is n/a with a note, and the other task keeps both protocols."""
    eval_dir = _write_grid(tmp_path, "countdown")
    _write_grid(tmp_path, "humaneval")
    for path in (eval_dir / "humaneval").rglob("validation.metrics.json"):
        path.unlink()
    args = ["report", "accuracy", "--eval-dir", str(eval_dir), "--tasks", "countdown", "humaneval",
            "--methods", "sft", "egspo_sa", "--seeds", *map(str, SEEDS), "--lengths", "8", "16",
            "--checkpoints", "sft=sft", "egspo_sa=step_1,step_2", "--reference", "sft",
            "--table", str(tmp_path / "main"), "--gains", str(tmp_path / "gains")]
    # without the per-task splits the missing validation file is an error naming it
    with pytest.raises(FileNotFoundError, match="humaneval/.*validation.metrics.json"):
        egspo_main(args)
    assert egspo_main([*args, "--task-splits", "humaneval=test"]) == 0
    main = pd.read_csv(tmp_path / "main.csv").set_index(["task", "gen_length", "method"])
    he = main.loc[("humaneval", "8", "egspo_sa")]
    assert he["best_on_test_mean"] == pytest.approx(61.0) and math.isnan(he["val_chosen_mean"])
    cd = main.loc[("countdown", "8", "egspo_sa")]
    assert cd["best_on_test_mean"] == pytest.approx(61.0) and cd["val_chosen_mean"] == pytest.approx(42.0)
    md = (tmp_path / "main.md").read_text()
    he_rows = [line for line in md.splitlines() if line.startswith("| humaneval |")]
    assert he_rows and all(line.rstrip(" |").endswith("n/a") for line in he_rows)
    assert '"Chosen on validation" is n/a for humaneval: no validation split' in md
    gains = pd.read_csv(tmp_path / "gains.csv")
    assert set(gains.loc[gains["task"] == "humaneval", "protocol"]) == {"best_on_test"}
    # a task's splits must contain test, and a named task must be evaluated
    with pytest.raises(ValueError, match="no 'test'"):
        tables.load_eval_grid(eval_dir, tasks=["humaneval"], methods=["sft"], seeds=SEEDS, checkpoints=CHECKPOINTS,
                              lengths=[8], splits=["validation", "test"], task_splits={"humaneval": ["validation"]})
    with pytest.raises(ValueError, match="not in tasks"):
        tables.load_eval_grid(eval_dir, tasks=["countdown"], methods=["sft"], seeds=SEEDS, checkpoints=CHECKPOINTS,
                              lengths=[8], splits=["test"], task_splits={"humaneval": ["test"]})


def test_task_evaluated_at_fewer_lengths_has_only_those_rows(tmp_path):
    """`--task-lengths humaneval=8` reads that task's files at length 8 alone (its 16 files may not exist): its
    by-length rows are 8 and best (= 8), the other task keeps every length; a length outside --lengths is an error."""
    eval_dir = _write_grid(tmp_path, "countdown")
    _write_grid(tmp_path, "humaneval")
    for path in (eval_dir / "humaneval").rglob("len16"):
        shutil.rmtree(path)
    args = ["report", "accuracy", "--eval-dir", str(eval_dir), "--tasks", "countdown", "humaneval",
            "--methods", "sft", "egspo_sa", "--seeds", *map(str, SEEDS), "--lengths", "8", "16",
            "--checkpoints", "sft=sft", "egspo_sa=step_1,step_2", "--reference", "sft",
            "--table", str(tmp_path / "main"), "--gains", str(tmp_path / "gains"),
            "--per-seed", str(tmp_path / "per_seed.csv")]
    with pytest.raises(FileNotFoundError, match="humaneval/.*len16/.*metrics.json"):
        egspo_main(args)
    assert egspo_main([*args, "--task-lengths", "humaneval=8"]) == 0
    main = pd.read_csv(tmp_path / "main.csv", dtype={"gen_length": str})
    main = main[main["source"] == tables.OURS]
    assert set(main.loc[main["task"] == "humaneval", "gen_length"]) == {"8", tables.BEST}
    assert set(main.loc[main["task"] == "countdown", "gen_length"]) == {"8", "16", tables.BEST}
    he = main[(main["task"] == "humaneval") & (main["method"] == "egspo_sa")].set_index("gen_length")
    assert he.loc[tables.BEST, "best_on_test_mean"] == pytest.approx(61.0) == he.loc["8", "best_on_test_mean"]
    per_seed = pd.read_csv(tmp_path / "per_seed.csv")
    assert set(per_seed.loc[per_seed["task"] == "humaneval", "gen_length"]) == {8}
    with pytest.raises(ValueError, match=r"--task-lengths humaneval=12: lengths must be among --lengths \[8, 16\]"):
        egspo_main([*args, "--task-lengths", "humaneval=12"])
    with pytest.raises(ValueError, match="task_lengths names tasks not in tasks"):
        tables.load_eval_grid(eval_dir, tasks=["countdown"], methods=["sft"], seeds=SEEDS, checkpoints=CHECKPOINTS,
                              lengths=[8], splits=["test"], task_lengths={"humaneval": [8]})
