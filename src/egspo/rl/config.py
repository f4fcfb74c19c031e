"""`RLConfig`: every setting of `egspo rl` (CLI flags are the field names with '-' for '_'); defaults: the authors'
(DESIGN §2). ``algorithm`` names an update strategy registered in `egspo.rl.updates`."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egspo.rl.updates import algorithm_names

STYLES = ("tiny", "d1")
BASELINES = ("greedy", "rollout", "none")
KL_ESTIMATORS = ("k3", "exact")
#: settings that may change between a run and its resumption (everything else must match the checkpoint).
RESUMABLE_CHANGES = frozenset({"max_steps", "save_every", "micro_batch", "grad_accum", "gradient_checkpointing",
                               "rollout_policy", "on_settings_change"})


@dataclass
class RLConfig:
    """Every setting of `egspo rl`; CLI flags are these names with '-' for '_'. Defaults: the authors' (DESIGN §2)."""

    model: str
    task: str
    train: str
    out: str
    seed: int = 0
    algorithm: str = "egspo"
    style: str = "d1"
    num_generations: int = 8
    batch_size: int = 4  # prompts per iteration, summed over processes
    grad_accum: int = 1
    max_steps: int = 100
    save_every: int = 50
    lr: float = 3e-5
    warmup_steps: int = 0
    weight_decay: float = 0.1
    max_grad_norm: float = 0.2
    k: int = 8
    lam: float = 0.5
    selection: str = "entropy"
    baseline: str = "greedy"
    rollout_m: int = 4
    advantage_baseline: str = "mean"
    logprob_reduction: str = "sum"
    restrict_to_content: bool = False
    eps_low: float = 0.2
    eps_high: float = 0.5
    beta: float = 0.04
    kl_estimator: str = "k3"
    mu: int = 8
    p_mask_prompt: float = 0.15
    temperature: float = 0.9
    remasking: str = "low_confidence"
    gen_length: int = 256
    steps: int = 128
    block_length: int = 32
    micro_batch: int | None = None
    lora_r: int = 0  # 0: full fine-tuning
    lora_alpha: float = 64.0
    lora_dropout: float = 0.05
    lora_targets: str | None = None  # comma-separated module names (or one regex); None: the family's default
    dtype: str = "float32"
    load_in_4bit: bool = False
    trust_remote_code: bool | None = None
    gradient_checkpointing: bool = False
    rollout_policy: str = "auto"  # merged | live | auto (merged with LoRA on CUDA); egspo.rl.rollout_policy
    # checkpoints in --out written with other settings: "error" refuses to resume; "restart" deletes them and the
    # metrics and trains from the start (what the workflow wants when it reruns a job because its settings changed)
    on_settings_change: str = "error"

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RLConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    def validate(self, world_size: int = 1) -> None:
        """ValueError naming the first bad setting."""
        from egspo.core.sampler import REMASKING_METHODS, step_schedule
        from egspo.core.selection import SELECTION_METHODS

        choices = {
            "algorithm": algorithm_names(), "style": STYLES, "selection": SELECTION_METHODS, "baseline": BASELINES,
            "advantage_baseline": ("mean", "loo"), "logprob_reduction": ("sum", "mean"),
            "kl_estimator": KL_ESTIMATORS, "remasking": REMASKING_METHODS,
            "dtype": ("float32", "bfloat16", "float16"), "rollout_policy": ("auto", "merged", "live"),
            "on_settings_change": ("error", "restart"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        positive = ("num_generations", "batch_size", "grad_accum", "max_steps", "save_every", "k", "rollout_m", "mu",
                    "gen_length", "steps", "block_length")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 for a group baseline, got {self.num_generations}")
        if self.micro_batch is not None and self.micro_batch <= 0:
            raise ValueError(f"micro_batch must be a positive integer or unset, got {self.micro_batch!r}")
        step_schedule(self.gen_length, self.steps, self.block_length)  # gen_length / steps / block_length
        if self.k > self.steps:
            raise ValueError(f"k={self.k} exceeds the number of denoising steps steps={self.steps}")
        if self.selection == "all" and self.k != self.steps:
            raise ValueError(f"selection='all' needs k == steps, got k={self.k}, steps={self.steps}")
        if self.batch_size % world_size:
            raise ValueError(f"batch_size={self.batch_size} prompts cannot be split evenly over {world_size} processes")
        local_rows = self.batch_size // world_size * self.num_generations
        if local_rows % self.grad_accum:
            raise ValueError(f"batch_size*num_generations/processes = {local_rows} rows per process is not divisible "
                             f"by grad_accum={self.grad_accum}")
        ranges = {
            "lr": self.lr >= 0, "warmup_steps": self.warmup_steps >= 0, "weight_decay": self.weight_decay >= 0,
            "max_grad_norm": self.max_grad_norm > 0, "lam": 0 <= self.lam < math.inf,
            "eps_low": 0 <= self.eps_low < 1, "eps_high": self.eps_high >= 0, "beta": self.beta >= 0,
            "p_mask_prompt": 0 <= self.p_mask_prompt <= 1, "temperature": 0 <= self.temperature < math.inf,
            "lora_r": self.lora_r >= 0, "lora_alpha": self.lora_alpha > 0, "lora_dropout": 0 <= self.lora_dropout < 1,
        }
        for name, ok in ranges.items():
            if not ok:
                raise ValueError(f"{name} is out of range: {getattr(self, name)!r}")
        if self.rollout_policy == "merged" and (not self.lora_r or self.load_in_4bit):
            raise ValueError("rollout_policy='merged' needs LoRA (lora_r > 0) without load_in_4bit")
        if self.load_in_4bit and not self.lora_r:
            raise ValueError("load_in_4bit needs LoRA (lora_r > 0): 4-bit weights cannot be fine-tuned directly")
        if not Path(self.train).is_file():
            raise ValueError(f"train file {self.train!r} does not exist")

    def lora(self) -> dict[str, Any] | None:
        if not self.lora_r:
            return None
        spec: dict[str, Any] = {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout}
        if self.lora_targets:
            targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
            spec["target_modules"] = targets[0] if len(targets) == 1 and any(c in targets[0] for c in "*\\|(") \
                else targets
        return spec


__all__ = ["RLConfig", "RESUMABLE_CHANGES"]
