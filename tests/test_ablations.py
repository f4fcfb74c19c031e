"""The selection ablation is compute-matched: every variant of the shipped configuration takes the same number of
optimizer steps per rollout (all-steps averages its T columns C = T / K per step) and trains every selected column
once. That the loop takes exactly those steps is tests/test_fidelity_presets.py's authors-mode iteration (2
optimizer steps over column pairs vs 4)."""

from __future__ import annotations

from pathlib import Path

import yaml

from egspo.core.schedule import optimizer_steps_per_rollout
from egspo.rl.config import RLConfig
from egspo.workflow.plan import Plan

ROOT = Path(__file__).resolve().parents[1]


def _rl_config(settings: dict, task: str) -> RLConfig:
    return RLConfig(model="model", task=task, train="train.jsonl", out="out", **settings)


def _steps(cfg: RLConfig) -> list[list[int]]:
    return optimizer_steps_per_rollout(cfg.semantics().update_schedule, cfg.k, cfg.columns_per_step)


def test_shipped_selection_ablation_takes_the_same_optimizer_steps():
    plan = Plan.from_raw(yaml.safe_load((ROOT / "config.yaml").read_text()))
    methods = plan.C["ablations"]["selection"]["methods"]
    for task in plan.rl_tasks:
        counts = {}
        for method in methods:
            cfg = _rl_config(plan.method_settings(method, task), task)
            steps = _steps(cfg)
            counts[method] = len(steps)
            # every selected column is trained exactly once per rollout
            assert sorted(c for step in steps for c in step) == list(range(cfg.k)), method
        assert set(counts.values()) == {counts["egspo_sa"]}, counts
        all_steps = _rl_config(plan.method_settings("egspo_sa_all", task), task)
        assert all_steps.selection == "all" and all_steps.k == all_steps.steps
        assert len(_steps(all_steps)) == counts["egspo_sa"] < all_steps.k


def test_ablation_and_sweep_targets_plan_the_runs_they_report(tmp_path):
    """A dry run of paper_evidence (every ablation and sweep) on a fresh directory plans exactly the RL runs of their
    methods (tasks as configured, every seed, each run once), one report per table, and the sweeps' points carry the
    merged setting values."""
    import re
    import subprocess
    import sys
    from collections import Counter

    snakemake = Path(sys.executable).parent / "snakemake"
    tiny = yaml.safe_load((ROOT / "config.yaml").read_text())["presets"]["tiny"]
    seeds = len(tiny["seeds"])

    def dry(*targets: str) -> str:
        res = subprocess.run([str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                              "--cores", "1", "-n", "-p", *targets], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
        return res.stdout + res.stderr

    def rl_runs(output: str) -> Counter:
        return Counter((task, method) for task, method in re.findall(r"egspo rl .*?--out \S+/rl/(\w+)/(\w+)/seed\d+",
                                                                       output))

    out = dry("paper_evidence")  # every ablation and sweep
    expected = Counter()
    for spec in tiny["ablations"].values():
        expected.update({(t, m): seeds for t in spec.get("tasks", tiny["tasks"]) for m in spec["methods"]})
    for spec in tiny["sweeps"].values():
        expected.update({(t, m): seeds for t in spec.get("tasks", tiny["tasks"]) for m in spec["methods"]})
    assert rl_runs(out) == Counter({key: seeds for key in expected})  # each run once, however many tables use it
    assert "--sweep egspo_sa_k1=1 egspo_sa_k2=2 egspo_sa=4 egspo_sa_k8=8 'egspo_sa_k16=all (16)'" in out
    assert "--sweep egspo=0 egspo_sa_lam025=0.25 egspo_sa=0.5 egspo_sa_lam1=1 egspo_sa_lam2=2" in out
    assert out.count("egspo report compute") == len(tiny["ablations"])
    assert out.count("--sweep-table") == len(tiny["sweeps"])
    assert out.count("--title 'Ablation: ") == len(tiny["ablations"])
