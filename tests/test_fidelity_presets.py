"""The presets' resolved settings (docs/fidelity.md): rollout size, optimizer steps per rollout, columns per
optimizer step, checkpoint cadence in optimizer steps, LoRA modules wrapped on a LLaDA-shaped module tree, 4-bit,
prompt truncation; and one RL iteration of the tiny trainer in authors mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import egspo.tasks as task_registry
from egspo.core.schedule import optimizer_steps_per_rollout
from egspo.models.families import family_by_name
from egspo.models.lora import lora_config
from egspo.rl.config import RLConfig
from egspo.workflow.config import deep_merge
from egspo.tasks.base import Task
from egspo.workflow.plan import Plan

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
LLADA_BLOCK = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")  # LLaDA-8B's names


class _LLaDAShaped(nn.Module):
    """LLaDA's module tree (model.transformer.blocks.<i>.<projection>), two blocks of width 4."""

    def __init__(self, blocks: int = 2) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.transformer = nn.Module()
        self.model.transformer.blocks = nn.ModuleList(
            nn.ModuleDict({name: nn.Linear(4, 4, bias=False) for name in LLADA_BLOCK}) for _ in range(blocks))


def _plan(preset: str, override: dict | None = None) -> Plan:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["preset"] = preset
    if override:
        raw = deep_merge(raw, override)
    return Plan.from_raw(raw)


def _resolved(plan: Plan, method: str) -> dict:
    task = plan.C["tasks"][0]
    settings = plan.method_settings(method, task)
    cfg = RLConfig(model="m", task=task, train="t", out="o", **settings)
    cfg.validate(world_size=max(1, plan.C["resources"]["rl"]["gpu"]), check_files=False)  # gpu 0: CPU, 1 process
    sem = cfg.semantics()
    steps = optimizer_steps_per_rollout(sem.update_schedule, cfg.k, cfg.columns_per_step)
    model = plan.C["model"]
    wrapped = None
    if model.get("lora"):
        from peft import get_peft_model

        peft_model = get_peft_model(_LLaDAShaped(), lora_config(model["lora"], family_by_name("llada")))
        wrapped = sorted({name.split(".")[-1] for name, module in peft_model.named_modules()
                          if hasattr(module, "lora_A") and name.split(".")[-1] in LLADA_BLOCK})
    return {"fidelity": cfg.fidelity, "rollout": cfg.batch_size * cfg.num_generations,
            "optimizer_steps_per_rollout": len(steps), "columns_per_step": {len(group) for group in steps},
            "checkpoint_every_optimizer_steps": cfg.save_every * len(steps), "lora_modules": wrapped,
            "load_in_4bit": bool(model.get("quantize_4bit")), "max_prompt_length": cfg.max_prompt_length}


def test_paper_preset_is_the_authors_recipe():
    assert _resolved(_plan("paper"), "egspo_sa") == {
        "fidelity": "authors", "rollout": 48, "optimizer_steps_per_rollout": 4, "columns_per_step": {2},
        "checkpoint_every_optimizer_steps": 200, "lora_modules": ["k_proj", "q_proj", "up_proj", "v_proj"],
        "load_in_4bit": True, "max_prompt_length": 200}
    principled = _resolved(_plan("paper", {"rl": {"fidelity": "principled"}}), "egspo_sa")
    assert principled["fidelity"] == "principled"
    assert (principled["optimizer_steps_per_rollout"], principled["columns_per_step"]) == (8, {1})
    assert principled["checkpoint_every_optimizer_steps"] == 400  # save_every counts iterations
    assert principled["rollout"] == 48 and principled["lora_modules"] == ["k_proj", "q_proj", "up_proj", "v_proj"]
    d1 = _plan("paper").method_settings("diffu_grpo", "gsm8k")
    assert d1["batch_size"] * d1["num_generations"] == 96  # d1's own batch for its baseline


def test_tiny_preset_is_principled_without_lora():
    assert _resolved(_plan("tiny"), "egspo_sa") == {
        "fidelity": "principled", "rollout": 32, "optimizer_steps_per_rollout": 4, "columns_per_step": {1},
        "checkpoint_every_optimizer_steps": 40, "lora_modules": None, "load_in_4bit": False,
        "max_prompt_length": None}


def test_every_method_of_both_presets_validates():
    for preset in ("tiny", "paper"):
        plan = _plan(preset)
        for method in plan.C["methods"]:
            _resolved(plan, method)


def test_family_default_wraps_every_llada_projection():
    """What the authors' list leaves out: the family default wraps all 7 LLaDA projections."""
    from peft import get_peft_model

    peft_model = get_peft_model(_LLaDAShaped(), lora_config({"r": 2}, family_by_name("llada")))
    wrapped = {name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")
               and name.split(".")[-1] in LLADA_BLOCK}
    assert len(wrapped) == 2 * len(LLADA_BLOCK)


# ---- the tiny trainer in authors mode -----------------------------------------------------------------------------


class _CountA(Task):
    """Reward = number of 'a's / 10 (varies across a group of an untrained model)."""

    name = "count_a"

    def load(self, split, source="tiny", **kwargs):
        raise NotImplementedError("rows are given by the test")

    def prompt(self, row, style="tiny", tokenizer=None):
        return row["prompt"]

    def reward(self, completion, row):
        return completion.count("a") / 10.0

    def grade(self, completion, row):
        return {"correct": False, "reward": self.reward(completion, row)}


COUNT_A = _CountA()


@pytest.fixture(autouse=True)
def _register_task(monkeypatch):
    monkeypatch.setitem(task_registry._REGISTRY, COUNT_A.name, f"{__name__}:COUNT_A")


def test_authors_mode_iteration_steps_twice_over_column_pairs(tmp_path):
    """K 4 with 2 columns per optimizer step: 2 optimizer steps per rollout over columns (1, 2) and (3, 0); the
    principled schedule takes 4. Rollouts sample in train mode (rollout_dropout), prompts are truncated."""
    from egspo.models.tiny import build_tiny_model
    from egspo.rl.trainer import RLTrainer

    model = build_tiny_model(tmp_path / "tiny", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                             max_len=64, seed=0)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": f"q{i}:abcdef", "target": "a"}) + "\n" for i in range(4)))
    base = dict(model=str(model), task=COUNT_A.name, train=str(train), seed=1, num_generations=4, batch_size=2,
                max_steps=1, save_every=1, gen_length=8, steps=4, block_length=4, k=4, lr=1e-3, temperature=1.0,
                lam=0.5)
    counts = {}
    for mode in ("authors", "principled"):
        cfg = RLConfig(out=str(tmp_path / mode), fidelity=mode, max_prompt_length=3, **base)
        trainer = RLTrainer(cfg)
        steps, modes = [], []
        inner = trainer.optimizer_step
        trainer.optimizer_step = lambda: steps.append(1) or inner()
        trainer.policy.register_forward_pre_hook(lambda m, a: modes.append(m.training))
        result = trainer.run_iteration([0, 1])
        counts[mode] = len(steps)
        assert max(len(p) for p in trainer.prompt_ids) == 3
        if mode == "authors":
            assert modes[0] is True  # the first forward is the rollout's, in train mode
            assert result.selection.steps.shape == (8, 4)
            # entropy-rank columns: column 0 holds each row's highest-entropy step
            ent = result.rollout.step_entropy.gather(1, result.selection.steps)
            assert bool((ent[:, :-1] >= ent[:, 1:]).all())
        else:
            assert modes[0] is False
    assert counts == {"authors": 2, "principled": 4}
    assert torch.isfinite(torch.tensor(result.metrics["loss"]))
