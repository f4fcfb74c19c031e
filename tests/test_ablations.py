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
