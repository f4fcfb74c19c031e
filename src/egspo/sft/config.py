"""`SFTConfig`: every setting of `egspo sft`, each defined once with its help text, allowed values or range and where
config.yaml sets it (`egspo.settings.setting`); the CLI flags, the value checks and the config schema's ``sft`` block
are derived from it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from egspo.rl.config import DTYPES, STYLES
from egspo.settings import check_values, from_namespace, setting

DEFAULT_EPS = 1e-3


@dataclass
class SFTConfig:
    """Every setting of `egspo sft`; CLI flags are these names with '-' for '_'."""

    model: str = setting(help="HF model dir or hub id (the tiny init, or the paper base)", config="workflow")
    train: str = setting(help="training rows (JSONL)", config="workflow")
    out: str = setting(help="output HF model dir (written atomically)", config="workflow")
    gen_length: int = setting(help="completion length L (EOS padded)", minimum=1, config="sft")
    max_steps: int = setting(help="optimizer steps", minimum=1, config="sft")
    batch_size: int = setting(help="examples per device per micro-batch", minimum=1, config="sft")
    lr: float = setting(help="AdamW peak learning rate (linear warm-up and decay)", exclusive_minimum=0, config="sft")
    task: str | None = setting(None, help="task name (egspo.tasks); required unless --format s1k", config="workflow")
    seed: int = setting(0, help="seed of the data order and the noise", minimum=0, config="workflow")
    style: str = setting("tiny", help="prompt / target style of the task", choices=STYLES, config="workflow")
    warmup_ratio: float = setting(0.0, help="fraction of max_steps spent warming up", minimum=0, exclusive_maximum=1,
                                  config="sft")
    weight_decay: float = setting(0.0, help="AdamW weight decay", minimum=0, config="sft")
    grad_accum: int = setting(1, help="micro-batches per optimizer step", minimum=1, config="sft")
    max_grad_norm: float = setting(1.0, help="gradient clipping norm (<= 0 disables clipping)", config="sft")
    eps: float = setting(DEFAULT_EPS, help="smallest noise level t", exclusive_minimum=0, exclusive_maximum=1,
                         config="sft")
    eval: str | None = setting(None, help="held-out rows (JSONL): fixed-noise loss logged as eval_loss (command "
                                          "line only: the workflow evaluates models by generation)", config=None)
    eval_every: int = setting(0, help="steps between evaluations (0: only at the end; command line only, with "
                                      "--eval)", minimum=0, config=None)
    format: str = setting("task", help="task: rows through the task's prompt/target; s1k: question/solution fields "
                                       "(set by the workflow from sft.data)", choices=("task", "s1k"),
                          config="workflow")
    prompt_field: str = setting("question", help="--format s1k: prompt field", config="sft")
    target_field: str = setting("solution", help="--format s1k: target field", config="sft")
    skip_long: bool = setting(False, help="skip (and count) rows whose target exceeds --gen-length instead of "
                                          "failing", config="sft")
    dtype: str = setting("float32", help="weight dtype", choices=DTYPES, config="model.dtype")
    lora_r: int = setting(0, help="LoRA rank; 0 = full fine-tuning", minimum=0, config="model.lora.r")
    lora_alpha: float = setting(64.0, help="LoRA alpha", exclusive_minimum=0, config="model.lora.alpha")
    lora_dropout: float = setting(0.05, help="LoRA dropout", minimum=0, exclusive_maximum=1,
                                  config="model.lora.dropout")
    lora_targets: str | None = setting(None, help="comma-separated module names (default: the family's)",
                                       config="model.lora.target_modules")
    quantize_4bit: bool = setting(False, help="bitsandbytes NF4 base weights (LoRA only)",
                                  config="model.quantize_4bit")
    save_adapter: bool = setting(False, help="LoRA: save the adapter dir instead of the merged model (command line "
                                             "only: the workflow's later stages load merged models)", config=None)
    no_progress: bool = setting(False, help="no progress bar (command line only)", config=None)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> SFTConfig:
        return from_namespace(cls, args)

    def validate(self) -> None:
        """ValueError naming the first bad setting: each field's type, allowed values and range, then the rules
        between fields."""
        check_values(self)
        if self.format == "task" and not self.task:
            raise ValueError("--task is required with --format task")
        if self.quantize_4bit and self.lora_r <= 0:
            raise ValueError("--quantize-4bit needs LoRA (--lora-r > 0): quantized weights cannot be trained")
        if self.quantize_4bit and not self.save_adapter:
            raise ValueError("--quantize-4bit needs --save-adapter: merging LoRA into 4-bit weights is lossy; merge "
                             "the adapter into the bf16 base afterwards with `egspo merge`")
        if self.save_adapter and self.lora_r <= 0:
            raise ValueError("--save-adapter needs LoRA (--lora-r > 0)")


__all__ = ["DEFAULT_EPS", "SFTConfig"]
