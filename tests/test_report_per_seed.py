"""per_seed.csv and the method-vs-method table: every interval of main.csv, gains.csv and pairs.csv recomputed from
per_seed.csv alone by an independent implementation (plain Python, hard-coded t quantiles), the shared warm start
shown once (n = 1, no interval) yet paired with every seed, and hand-computed pair differences."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pandas as pd
import pytest

from egspo.cli import run_command as egspo_main
from egspo.report import tables
from egspo.report.per_seed import COLUMNS, grid_from_per_seed

T_975 = {1: 12.706204736174698, 2: 4.302652729749464, 3: 3.182446305284263}  # t_{0.975, df} (printed tables)
SEEDS = [0, 1, 2]
METHODS = ["sft", "diffu_grpo", "egspo", "egspo_sa"]
CKPTS = {"sft": ["sft"], "diffu_grpo": ["step_2", "step_4"], "egspo": ["step_2", "step_4"],
         "egspo_sa": ["step_2", "step_4"]}
LENGTHS = [8, 16]
TASKS = {"countdown": "accuracy", "sudoku": "cell_accuracy"}
N_EXAMPLES = 40


def _write(root: Path) -> Path:
    """Random-looking fractions k / 40 for every file of the grid; the warm start once, under seed 2."""
    rng = random.Random(12)
    eval_dir = root / "eval"
    for task, field in TASKS.items():
        for method, ckpts in CKPTS.items():
            for seed in ([2] if method == "sft" else SEEDS):
                for ckpt in ckpts:
                    for length in LENGTHS:
                        for split in ("validation", "test"):
                            path = tables.eval_metrics_path(eval_dir, task, method, seed, ckpt, length, split)
                            path.parent.mkdir(parents=True, exist_ok=True)
                            path.write_text(json.dumps({field: rng.randint(0, N_EXAMPLES) / N_EXAMPLES,
                                                        "n": N_EXAMPLES}))
    return eval_dir


def _run(root: Path) -> Path:
    out = root / "out"
    ckpts = [f"{m}={','.join(c)}" for m, c in CKPTS.items()]
    assert egspo_main(["report", "accuracy", "--eval-dir", str(_write(root)), "--tasks", *TASKS,
                       "--methods", *METHODS, "--seeds", *map(str, SEEDS), "--lengths", *map(str, LENGTHS),
                       "--checkpoints", *ckpts, "--shared-seed", "sft=2", "--reference", "sft",
                       "--table", str(out / "main"), "--gains", str(out / "gains"), "--per-seed",
                       str(out / "per_seed.csv"), "--pairs", "egspo_sa-diffu_grpo", "egspo_sa-egspo",
                       "egspo-diffu_grpo", "--pairs-table", str(out / "pairs")]) == 0
    return out


def _interval(values: list[float]) -> tuple[float, float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = T_975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _protocols(rows: list[dict]) -> tuple[float, float]:
    """best_on_test = max test score over (step, length); val_chosen = test score at the validation argmax (ties:
    the later step, then the shorter length)."""
    test = {(r["step"], r["gen_length"]): r["score"] for r in rows if r["split"] == "test"}
    val = {(r["step"], r["gen_length"]): r["score"] for r in rows if r["split"] == "validation"}
    chosen = max(val, key=lambda key: (val[key], key[0], -key[1]))
    return max(test.values()), test[chosen]


def _recompute(per_seed: pd.DataFrame) -> dict:
    """(task, method, seed, length) -> (best_on_test, val_chosen); length 'best' over all lengths. A method with
    one seed is the shared warm start: the same value for every seed."""
    out = {}
    records = per_seed.to_dict("records")
    for task in TASKS:
        for method in METHODS:
            mine = [r for r in records if r["task"] == task and r["method"] == method]
            seeds = sorted({r["seed"] for r in mine})
            for seed in SEEDS:
                src = seeds[0] if len(seeds) == 1 else seed
                rows = [r for r in mine if r["seed"] == src]
                for length in LENGTHS:
                    out[task, method, seed, str(length)] = _protocols([r for r in rows if r["gen_length"] == length])
                out[task, method, seed, "best"] = _protocols(rows)
    return out


def _check(row, mean: float, low: float, high: float, prefix: str) -> None:
    assert row[f"{prefix}mean"] == pytest.approx(mean, abs=1e-4)
    for got, want in ((row[f"{prefix}ci_low"], low), (row[f"{prefix}ci_high"], high)):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-4)


def test_every_interval_recomputes_from_per_seed_alone(tmp_path):
    out = _run(tmp_path)
    per_seed = pd.read_csv(out / "per_seed.csv")
    assert list(per_seed.columns) == COLUMNS
    # the warm start once per (task, step, length, split), under its evaluation seed, at step 0
    sft = per_seed[per_seed["method"] == "sft"]
    assert set(sft["seed"]) == {2} and set(sft["step"]) == {0} and len(sft) == len(TASKS) * len(LENGTHS) * 2
    assert len(per_seed) == len(TASKS) * (len(LENGTHS) * 2 + 3 * 3 * 2 * len(LENGTHS) * 2)
    assert set(per_seed["n"]) == {N_EXAMPLES}
    scores = _recompute(per_seed)
    protocols = {"best_on_test": 0, "val_chosen": 1}

    main = pd.read_csv(out / "main.csv", dtype={"gen_length": str})
    assert len(main) == len(TASKS) * 3 * len(METHODS)
    for _, row in main.iterrows():
        seeds = [SEEDS[0]] if row["method"] == "sft" else SEEDS  # one evaluation of one model: n = 1
        assert row["n_seeds"] == len(seeds)
        for protocol, i in protocols.items():
            values = [scores[row["task"], row["method"], s, row["gen_length"]][i] for s in seeds]
            _check(row, *_interval(values), prefix=f"{protocol}_")

    def check_differences(table: pd.DataFrame) -> None:
        for _, row in table.iterrows():
            i = protocols[row["protocol"]]
            diffs = [scores[row["task"], row["method"], s, row["gen_length"]][i]
                     - scores[row["task"], row["reference"], s, row["gen_length"]][i] for s in SEEDS]
            assert row["n_seeds"] == 3
            _check(row, *_interval(diffs), prefix="diff_")
            assert bool(row["ci_excludes_zero"]) == (row["diff_ci_low"] > 0 or row["diff_ci_high"] < 0)

    gains = pd.read_csv(out / "gains.csv", dtype={"gen_length": str})
    assert len(gains) == len(TASKS) * 3 * 2 * 3 and set(gains["reference"]) == {"sft"}
    check_differences(gains)
    pairs = pd.read_csv(out / "pairs.csv", dtype={"gen_length": str})
    assert len(pairs) == len(TASKS) * 3 * 2 * 3
    assert list(dict.fromkeys(zip(pairs["method"], pairs["reference"]))) == [
        ("egspo_sa", "diffu_grpo"), ("egspo_sa", "egspo"), ("egspo", "diffu_grpo")]
    check_differences(pairs)
    md = (out / "pairs.md").read_text()
    assert "EGSPO-SA - diffu-GRPO" in md and "EGSPO - diffu-GRPO" in md


def test_grid_round_trip_gives_the_same_tables(tmp_path):
    """The library's own tables from per_seed.csv (grid_from_per_seed) equal those from the metrics files."""
    out = _run(tmp_path)
    scores = tables.protocol_scores(grid_from_per_seed(pd.read_csv(out / "per_seed.csv"), SEEDS))
    summary = tables.summarize(scores, METHODS)
    main = pd.read_csv(out / "main.csv", dtype={"gen_length": str})
    pd.testing.assert_frame_equal(summary.reset_index(drop=True), main, check_dtype=False, atol=1e-4)


def test_method_pairs_hand_values():
    rows = []
    for seed, (a, b) in enumerate([(50.0, 40.0), (52.0, 41.0), (57.0, 43.0)]):
        for method, value in (("egspo_sa", a), ("diffu_grpo", b)):
            rows.append({"task": "t", "method": method, "seed": seed, "gen_length": "8", "best_on_test": value,
                         "val_chosen": value - 1.0})
    pairs = tables.method_pairs(pd.DataFrame(rows), [("egspo_sa", "diffu_grpo")])
    row = pairs[pairs["protocol"] == "best_on_test"].iloc[0]
    # differences 10, 11, 14: mean 35/3, sd sqrt(13/3)
    assert row["diff_mean"] == pytest.approx(35 / 3)
    assert row["diff_ci_high"] - row["diff_mean"] == pytest.approx(T_975[2] * math.sqrt(13 / 3) / math.sqrt(3))
    assert bool(row["ci_excludes_zero"])
    with pytest.raises(ValueError, match="spg"):
        tables.method_pairs(pd.DataFrame(rows), [("spg", "diffu_grpo")])


def test_bad_pair_and_missing_n_are_named(tmp_path):
    with pytest.raises(SystemExit):
        egspo_main(["report", "accuracy", "--eval-dir", "x", "--tasks", "countdown", "--methods", "sft",
                    "--seeds", "0", "--lengths", "8", "--checkpoints", "sft=sft", "--table", "t", "--pairs", "ab"])
    path = tables.eval_metrics_path(tmp_path, "countdown", "sft", 0, "sft", 8, "test")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(ValueError, match=r"test.metrics.json: field 'n'"):
        tables.load_eval_grid(tmp_path, tasks=["countdown"], methods=["sft"], seeds=[0], checkpoints={"sft": ["sft"]},
                              lengths=[8], splits=["test"])


# ---- gradcheck: bias after the scale each estimator is unbiased up to ---------------------------------------------
def test_scaled_error_matches_vectors():
    """e(c) = |c g_hat - g| / |g| from (cos, r) equals the direct vector computation; c* = cos / r minimises it."""
    import torch

    from egspo.report.gradcheck_scale import scaled_error

    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        g, g_hat = torch.randn(6, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen,
                                                                                 dtype=torch.float64)
        cos = float(g @ g_hat / (g.norm() * g_hat.norm()))
        r = float(g_hat.norm() / g.norm())
        for c in (0.5, 1.0, 3.0, cos / r):
            assert scaled_error(cos, r, c) == pytest.approx(float((c * g_hat - g).norm() / g.norm()), rel=1e-9)
        best = scaled_error(cos, r, cos / r)
        assert best == pytest.approx(math.sqrt(1 - cos * cos), rel=1e-9)
        assert all(scaled_error(cos, r, c) >= best - 1e-12 for c in (0.9 * cos / r, 1.1 * cos / r))


def test_random_k_is_exact_after_its_known_scale():
    """Random K = 1 of T = 3 estimates grad J / 3: relative error 2/3 unscaled, 0 after T/K = 3; entropy top-K
    keeps c = 1; the best scalar of a 60-degree estimate leaves sin 60."""
    from egspo.report.gradcheck_scale import add_scaled_bias

    df = pd.DataFrame([
        {"selection": "all", "k": 3, "cosine": 1.0, "rel_error": 0.0, "grad_norm": 2.0, "estimate_norm": 2.0},
        {"selection": "random", "k": 1, "cosine": 1.0, "rel_error": 2 / 3, "grad_norm": 2.0, "estimate_norm": 2 / 3},
        {"selection": "entropy", "k": 1, "cosine": 0.5, "rel_error": math.sqrt(3) / 2, "grad_norm": 2.0,
         "estimate_norm": 1.0},
    ])
    out = add_scaled_bias(df).set_index("selection")
    assert out.loc["random", "known_scale"] == 3.0 and out.loc["random", "rel_error_known_scale"] < 1e-7
    assert out.loc["random", "best_scale"] == pytest.approx(3.0)
    assert out.loc["entropy", "known_scale"] == 1.0
    # |g_hat| = 1, |g| = 2, 60 degrees: |g_hat - g| = sqrt(1 - 2 + 4) = sqrt 3, relative sqrt(3) / 2
    assert out.loc["entropy", "rel_error_known_scale"] == pytest.approx(math.sqrt(3) / 2)
    assert out.loc["entropy", "rel_error_best_scale"] == pytest.approx(math.sqrt(3) / 2)
    assert out.loc["entropy", "best_scale"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="estimate_norm"):
        add_scaled_bias(df.drop(columns="estimate_norm"))


def test_random_k_at_its_known_scale_is_the_all_steps_estimator():
    """Differential check on the real exact gradient check: a uniformly random K of T steps, scaled by T/K, has the
    all-steps estimator's error under every remasking (exact 0 with random remasking), and its best scalar is T/K."""
    from egspo.report.gradcheck_scale import add_scaled_bias
    from egspo.verify.gradcheck import Setting, build_problem, gradcheck_rows

    df = add_scaled_bias(pd.DataFrame(gradcheck_rows(build_problem(Setting()), ks=[1, 2], lams=[0.0, 0.5])))
    df = df[df["score"] == "library"]
    for (remasking, baseline, lam), group in df.groupby(["remasking", "baseline", "lam"]):
        all_steps = group[group["selection"] == "all"].iloc[0]
        for _, row in group[group["selection"] == "random"].iterrows():
            assert row["known_scale"] == 3 / row["k"]
            assert row["rel_error_known_scale"] == pytest.approx(all_steps["rel_error"], abs=1e-6)
            if remasking == "random":
                assert row["rel_error"] == pytest.approx(1 - row["k"] / 3, abs=1e-9)
                assert row["rel_error_known_scale"] < 1e-6 and row["best_scale"] == pytest.approx(3 / row["k"])
