"""`RLConfig`: every setting of `egspo rl`, each defined once with its help text, allowed values or range and where
config.yaml sets it (`egspo.settings.setting`); the CLI flags (field names with '-' for '_'), the value checks and
the config schema's ``rl`` / ``methods`` / ``task_settings`` blocks are derived from it. Defaults: the authors'
(DESIGN §2). ``algorithm`` names an update strategy registered in `egspo.rl.updates`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from egspo.core.constraints import REMASKING_METHODS, SELECTION_METHODS, STEP_REDUCTIONS, steps_per_block
from egspo.rl.updates import algorithm_names
from egspo.settings import check_values, from_namespace, setting

STYLES = ("tiny", "d1")
BASELINES = ("greedy", "rollout", "none")
KL_ESTIMATORS = ("k3", "exact")
DTYPES = ("float32", "bfloat16", "float16")
#: settings that may change between a run and its resumption (everything else must match the checkpoint).
RESUMABLE_CHANGES = frozenset({"max_steps", "save_every", "micro_batch", "grad_accum", "gradient_checkpointing",
                               "rollout_policy", "on_settings_change"})


def _fidelity_override(name: str):
    """An optional setting overriding one difference of `fidelity` (`egspo.core.semantics.SETTINGS`)."""
    from egspo.core.semantics import SETTINGS

    spec = SETTINGS[name]
    return setting(None, help=f"{spec.help} (unset: the value of `fidelity`)", choices=spec.allowed, config="rl")


@dataclass
class RLConfig:
    """Every setting of `egspo rl`; CLI flags are these names with '-' for '_'."""

    model: str = setting(help="initial policy: HF model dir or hub id (the SFT output for the tiny preset)",
                         config="workflow")
    task: str = setting(help="task name (egspo.tasks)", config="workflow")
    train: str = setting(help="training prompts, JSONL rows of the task", config="workflow")
    out: str = setting(help="run directory: checkpoints/, metrics.jsonl, config.json", config="workflow")
    seed: int = setting(0, help="seed of the prompt order, LoRA initialisation and sampling", minimum=0,
                        config="workflow")
    algorithm: str = setting("egspo", help="update strategy (egspo.rl.updates)", choices=algorithm_names, config="rl")
    style: str = setting("d1", help="prompt style of the task", choices=STYLES, config="workflow")
    num_generations: int = setting(8, help="G completions per prompt (>= 2 for a group baseline)", minimum=2,
                                   config="rl")
    batch_size: int = setting(4, help="prompts per iteration (all processes together)", minimum=1, config="rl")
    grad_accum: int = setting(1, help="pieces each optimizer step's rows are processed in (memory only; same update)",
                              minimum=1, config="rl")
    max_steps: int = setting(100, help="iterations (rollout batch + K or mu optimizer steps each)", minimum=1,
                             config="rl")
    save_every: int = setting(50, help="checkpoint every N iterations (and at max_steps)", minimum=1, config="rl")
    lr: float = setting(3e-5, help="AdamW learning rate (constant after warm-up)", minimum=0, config="rl")
    warmup_steps: int = setting(0, help="linear warm-up optimizer steps", minimum=0, config="rl")
    weight_decay: float = setting(0.1, help="AdamW weight decay", minimum=0, config="rl")
    max_grad_norm: float = setting(0.2, help="gradient clipping norm", exclusive_minimum=0, config="rl")
    k: int = setting(8, help="K steps selected per trajectory (egspo)", minimum=1, config="rl")
    lam: float = setting(0.5, help="lambda of the stepwise return (0 = EGSPO)", minimum=0, config="rl")
    selection: str = setting("entropy", help="how the K steps are chosen", choices=SELECTION_METHODS, config="rl")
    baseline: str = setting("greedy", help="state baseline b_j: greedy one-step fill, M-continuation rollout value, "
                                           "or none", choices=BASELINES, config="rl")
    rollout_m: int = setting(4, help="M continuations per state for --baseline rollout", minimum=1, config="rl")
    advantage_baseline: str = setting("mean", help="group baseline: mean of the G rows, or leave-one-out",
                                      choices=("mean", "loo"), config="rl")
    logprob_reduction: str = setting("sum", help="step log-prob over U_j: sum or mean", choices=STEP_REDUCTIONS,
                                     config="rl")
    restrict_to_content: bool = setting(False, help="select only steps up to the last one that committed a non-EOS "
                                                    "token", config="rl")
    eps_low: float = setting(0.2, help="lower clip epsilon", minimum=0, exclusive_maximum=1, config="rl")
    eps_high: float = setting(0.5, help="upper clip epsilon", minimum=0, config="rl")
    beta: float = setting(0.04, help="KL penalty weight (0: no reference model)", minimum=0, config="rl")
    kl_estimator: str = setting("k3", help="KL to the reference: k3 estimate or exact", choices=KL_ESTIMATORS,
                                config="rl")
    mu: int = setting(8, help="inner iterations (optimizer steps) per rollout batch (diffu_grpo, wd1, spg)", minimum=1,
                      config="rl")
    p_mask_prompt: float = setting(0.15, help="probability of hiding each prompt token (diffu_grpo)", minimum=0,
                                   maximum=1, config="rl")
    spg_variant: str = setting("mix", help="SPG: bound for completions with A <= 0: elbo, eubo or mix (ELBO for "
                                           "A > 0; their scripts: mix)", choices=("elbo", "eubo", "mix"), config="rl")
    spg_beta: float = setting(1.5, help="SPG: EUBO exponent beta (their scripts: 1.0 Sudoku, 1.5 otherwise)",
                              exclusive_minimum=0, config="rl")
    spg_mix_weight: float = setting(0.5, help="SPG: weight of the EUBO in mix", minimum=0, maximum=1, config="rl")
    spg_num_t: int = setting(2, help="SPG: mask samples per completion", minimum=1, config="rl")
    spg_masking: str = setting("block_random", help="SPG: masks, block_random or random",
                               choices=("block_random", "random"), config="rl")
    temperature: float = setting(0.9, help="sampling temperature of the rollouts", minimum=0, config="rl")
    remasking: str = setting("low_confidence", help="which masked positions a step commits",
                             choices=REMASKING_METHODS, config="rl")
    gen_length: int = setting(256, help="completion length L", minimum=1, config="rl")
    steps: int = setting(128, help="denoising steps T (a multiple of gen_length / block_length, at most gen_length)",
                         minimum=1, config="rl")
    block_length: int = setting(32, help="semi-autoregressive block length B (divides gen_length)", minimum=1,
                                config="rl")
    micro_batch: int | None = setting(None, help="rows per forward pass (unset: all)", minimum=1, config="rl")
    lora_r: int = setting(0, help="LoRA rank (0 = full fine-tuning)", minimum=0, config="model.lora.r")
    lora_alpha: float = setting(64.0, help="LoRA alpha", exclusive_minimum=0, config="model.lora.alpha")
    lora_dropout: float = setting(0.05, help="LoRA dropout", minimum=0, exclusive_maximum=1,
                                  config="model.lora.dropout")
    lora_targets: str | None = setting(None, help="comma-separated LoRA target modules (or one regex; unset: the "
                                                  "family's default)", config="model.lora.target_modules")
    dtype: str = setting("float32", help="weight dtype", choices=DTYPES, config="model.dtype")
    load_in_4bit: bool = setting(False, help="bitsandbytes NF4 base weights (LoRA only)",
                                 config="model.quantize_4bit")
    trust_remote_code: bool | None = setting(None, help="true/false (default: the model family's)",
                                             config="model.trust_remote_code")
    gradient_checkpointing: bool = setting(False, help="recompute activations in the backward pass (memory only)",
                                           config="rl")
    rollout_policy: str = setting("auto", help="rollout weights: merged (separate W0 + s*B@A copy, old log-probs "
                                               "re-scored live), live, or auto (merged with LoRA on CUDA, else live)",
                                  choices=("auto", "merged", "live"), config="rl")
    on_settings_change: str = setting("error", help="checkpoints in --out written with other settings: error refuses "
                                                    "to resume, restart deletes them and trains from the start (the "
                                                    "workflow's choice)", choices=("error", "restart"),
                                      config="workflow")

    fidelity: str = setting("principled", help="algorithm semantics: the authors' code exactly (authors) or "
                                               "principled; every difference is also a setting of its own below "
                                               "(docs/fidelity.md)", choices=("authors", "principled"), config="rl")
    kl_form: str | None = _fidelity_override("kl_form")
    loss_scale: str | None = _fidelity_override("loss_scale")
    column_order: str | None = _fidelity_override("column_order")
    update_schedule: str | None = _fidelity_override("update_schedule")
    reward_text: str | None = _fidelity_override("reward_text")
    selection_variant: str | None = _fidelity_override("selection_variant")
    attend_to_pads: bool | None = _fidelity_override("attend_to_pads")
    gumbel_in_model_dtype: bool | None = _fidelity_override("gumbel_in_model_dtype")
    rollout_dropout: bool | None = _fidelity_override("rollout_dropout")
    single_step_ratio_one: bool | None = _fidelity_override("single_step_ratio_one")
    entropy_eps: float | None = _fidelity_override("entropy_eps")
    kl_log_eps: float | None = _fidelity_override("kl_log_eps")
    old_logprob_float32: bool | None = _fidelity_override("old_logprob_float32")
    columns_per_step: int = setting(2, help="update_schedule authors: selected columns (micro-steps) per optimizer "
                                            "step, the authors' gradient_accumulation_steps", minimum=1, config="rl")
    max_prompt_length: int | None = setting(None, help="keep only the last N tokens of each prompt (the authors: 200; "
                                                       "unset: whole prompts)", minimum=1, config="rl")

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RLConfig:
        return from_namespace(cls, args)

    def validate(self, world_size: int = 1, check_files: bool = True) -> None:
        """ValueError naming the first bad setting: each field's type, allowed values and range, then the rules
        between fields (the sampler's block schedule, K <= T, process and accumulation splits, LoRA needs)."""
        check_values(self)
        steps_per_block(self.gen_length, self.steps, self.block_length)  # the sampler's own rule
        if self.algorithm == "spg" and self.spg_masking == "block_random" and self.spg_num_t > self.gen_length // self.block_length:
            raise ValueError(f"spg_num_t={self.spg_num_t} exceeds the {self.gen_length // self.block_length} blocks "
                             "that block_random masking draws from")
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
        if self.rollout_policy == "merged" and (not self.lora_r or self.load_in_4bit):
            raise ValueError("rollout_policy='merged' needs LoRA (lora_r > 0) without load_in_4bit")
        if self.load_in_4bit and not self.lora_r:
            raise ValueError("load_in_4bit needs LoRA (lora_r > 0): 4-bit weights cannot be fine-tuned directly")
        semantics = self.semantics()
        if self.algorithm == "egspo":
            from egspo.core.schedule import optimizer_steps_per_rollout

            optimizer_steps_per_rollout(semantics.update_schedule, self.k, self.columns_per_step)
            if semantics.selection_variant == "authors" and self.restrict_to_content and self.selection in (
                    "uniform", "random"):
                raise ValueError("selection_variant='authors' (uniform / random) selects over all steps; it cannot "
                                 "be combined with restrict_to_content")
        if check_files and not Path(self.train).is_file():
            raise ValueError(f"train file {self.train!r} does not exist")

    def semantics(self):
        """The resolved `egspo.core.semantics.Semantics`: ``fidelity``'s values with the settings given here."""
        from egspo.core.semantics import SETTINGS, semantics_for

        overrides = {name: getattr(self, name) for name in SETTINGS if getattr(self, name) is not None}
        return semantics_for(self.fidelity, **overrides)

    def lora(self) -> dict[str, Any] | None:
        if not self.lora_r:
            return None
        spec: dict[str, Any] = {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout}
        if self.lora_targets:
            targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
            spec["target_modules"] = targets[0] if len(targets) == 1 and any(c in targets[0] for c in "*\\|(") \
                else targets
        return spec


__all__ = ["DTYPES", "RESUMABLE_CHANGES", "RLConfig", "STYLES"]
