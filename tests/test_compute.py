"""The compute split: forwards the loop logs per phase (counted by hooks, checked against the counts the algorithm
implies: T batched forwards of N rows to sample, K + K reference rows per column for EGSPO, M continuations for a
rollout baseline), and the compute table from metrics files (hand-computed means, ratio and interval)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import egspo.tasks as task_registry
from egspo.cli import run_command as egspo_main
from egspo.rl.trainer import RLConfig, RLTrainer

T2 = 4.302652729749464  # t_{0.975, 2}


@pytest.fixture(autouse=True)
def _register_toy(monkeypatch):
    monkeypatch.setitem(task_registry._REGISTRY, "toy", "conftest:TOY")


def _metrics(tiny_model, train_file, out, **overrides) -> dict:
    settings = dict(model=str(tiny_model), task="toy", train=str(train_file), out=str(out), seed=3,
                    num_generations=4, batch_size=2, max_steps=1, save_every=1, gen_length=8, steps=4,
                    block_length=4, k=2, mu=2, lr=1e-3, temperature=1.0)
    settings.update(overrides)
    RLTrainer(RLConfig(**settings)).train()
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def test_forward_counts_per_phase(tiny_model, train_file, tmp_path):
    N, T, K, M = 8, 4, 2, 3  # N = batch_size * G rows
    greedy = _metrics(tiny_model, train_file, tmp_path / "greedy", lam=0.5, baseline="greedy")
    assert greedy["forwards_sampling"] == N * T  # T denoising steps of the whole batch
    assert greedy["forwards_advantage"] == 0  # the greedy fill is read off the sampling forwards
    assert greedy["forwards_update"] == N * K + N * K  # one reference pass over N*K states + K steps of N rows
    no_kl = _metrics(tiny_model, train_file, tmp_path / "no_kl", lam=0.5, baseline="greedy", beta=0.0)
    assert no_kl["forwards_update"] == N * K
    rollout = _metrics(tiny_model, train_file, tmp_path / "rollout", lam=0.5, baseline="rollout", rollout_m=M)
    # M continuations of every selected state S_j, each running the remaining denoising steps: between M*N*K
    # (every state one step from the end) and M*N*K*T forwards
    assert M * N * K <= rollout["forwards_advantage"] <= M * N * K * T
    for row in (greedy, rollout):
        assert row["time_sampling_s"] > 0 and row["time_advantage_s"] >= 0
        assert row["time_sampling_s"] + row["time_advantage_s"] == pytest.approx(row["time_rollout_s"])
    assert rollout["time_advantage_s"] > greedy["time_advantage_s"]


def _write_run(root: Path, task: str, method: str, seed: int, total: float, forwards_adv: int = 0) -> None:
    path = root / task / method / f"seed{seed}" / "metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"step": i + 1, "time_sampling_s": 0.5 * total, "time_advantage_s": 0.1 * total,
             "time_update_s": 0.4 * total + (0.2 if i else -0.2), "forwards_sampling": 64,
             "forwards_advantage": forwards_adv, "forwards_update": 32} for i in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_compute_table_hand_values(tmp_path):
    for seed, total in enumerate([1.0, 2.0, 3.0]):
        _write_run(tmp_path, "sudoku", "diffu_grpo", seed, total)
        _write_run(tmp_path, "sudoku", "egspo_sa", seed, 2 * total, forwards_adv=96)
    out = tmp_path / "compute"
    assert egspo_main(["report", "compute", "--rl-dir", str(tmp_path), "--tasks", "sudoku", "--methods",
                       "diffu_grpo", "egspo_sa", "--seeds", "0", "1", "2", "--reference", "diffu_grpo",
                       "--table", str(out)]) == 0
    df = pd.read_csv(out.with_suffix(".csv")).set_index("method")
    sa = df.loc["egspo_sa"]
    # per run totals 2, 4, 6 (the +-0.2 of the two iterations cancel): mean 4, sd 2
    assert sa["total_s"] == pytest.approx(4.0) and sa["rollout_s"] == pytest.approx(2.0)
    assert sa["advantage_s"] == pytest.approx(0.4) and sa["update_s"] == pytest.approx(1.6)
    assert sa["total_s_ci_high"] - sa["total_s"] == pytest.approx(T2 * 2 / math.sqrt(3), abs=1e-4)
    assert sa["time_ratio"] == pytest.approx(2.0) and df.loc["diffu_grpo", "time_ratio"] == pytest.approx(1.0)
    assert sa["forwards_total"] == 64 + 96 + 32 and sa["iterations"] == 6
    md = out.with_suffix(".md").read_text()
    assert "| sudoku | EGSPO-SA | 3 | 2.00 | 0.40 | 1.60 | 4.00 [" in md


def test_compute_table_names_missing_split(tmp_path):
    path = tmp_path / "sudoku" / "egspo" / "seed0" / "metrics.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"step": 1, "time_rollout_s": 1.0, "time_update_s": 1.0}) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl: column 'time_sampling_s'"):
        egspo_main(["report", "compute", "--rl-dir", str(tmp_path), "--tasks", "sudoku", "--methods", "egspo",
                    "--seeds", "0", "--table", str(tmp_path / "c")])
