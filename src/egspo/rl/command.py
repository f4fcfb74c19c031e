"""`egspo rl`: the command-line flags (one per `RLConfig` field, ``-`` for ``_``) and the call that trains."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from egspo.rl.config import RLConfig


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none", "null", "0") else int(text)


def _optional_bool(text: str) -> bool | None:
    return None if text.strip().lower() in ("", "none", "null", "auto") else _bool(text)


_HELP = {
    "model": "initial policy: HF model dir or hub id (the SFT output for the tiny preset)",
    "task": "task name (egspo.tasks)", "train": "training prompts, JSONL rows of the task",
    "out": "run directory: checkpoints/, metrics.jsonl, config.json",
    "batch_size": "prompts per iteration (all processes together)",
    "grad_accum": "pieces each optimizer step's rows are processed in (memory only; same update)",
    "max_steps": "iterations (rollout batch + K or mu optimizer steps each)",
    "save_every": "checkpoint every N iterations (and at max_steps)",
    "k": "K steps selected per trajectory (egspo)", "lam": "lambda of the stepwise return (0 = EGSPO)",
    "baseline": "state baseline b_j: greedy one-step fill, M-continuation rollout value, or none",
    "rollout_m": "M continuations per state for --baseline rollout",
    "advantage_baseline": "group baseline: mean of the G rows, or leave-one-out",
    "restrict_to_content": "select only steps up to the last one that committed a non-EOS token",
    "mu": "inner iterations per rollout batch (diffu_grpo)", "micro_batch": "rows per forward pass (unset: all)",
    "lora_r": "LoRA rank (0 = full fine-tuning)", "lora_targets": "comma-separated LoRA target modules",
    "trust_remote_code": "true/false (default: the model family's)",
    "rollout_policy": "rollout weights: merged (separate W0 + s*B@A copy, old log-probs re-scored live), live, or "
                      "auto (merged with LoRA on CUDA, else live)",
}


def configure(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(RLConfig):
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"help": _HELP.get(f.name)}
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
            if kwargs["help"] is None:
                kwargs["help"] = f"default {f.default!r}"
        if f.name == "trust_remote_code":
            kwargs.update(type=_optional_bool, nargs="?", const=True)
        elif f.type in ("bool", bool):
            kwargs.update(type=_bool, nargs="?", const=True)
        elif f.name == "micro_batch":
            kwargs["type"] = _optional_int
        elif f.name in ("algorithm", "style", "baseline", "kl_estimator", "advantage_baseline", "logprob_reduction",
                        "selection", "remasking", "dtype"):
            kwargs["type"] = str
        elif f.default is not dataclasses.MISSING and f.default is not None and f.type != "str | None":
            kwargs["type"] = type(f.default)
        else:
            kwargs["type"] = str
        parser.add_argument(flag, dest=f.name, **kwargs)


def run(args: argparse.Namespace) -> int:
    config = RLConfig.from_namespace(args)
    from egspo.rl.trainer import RLTrainer

    RLTrainer(config).train()
    return 0


__all__ = ["configure", "run"]
