"""LoRA adapters: the peft ``LoraConfig`` with the authors' defaults (r 128, alpha 64, dropout 0.05) on every
attention and MLP projection of the model's family."""

from __future__ import annotations

from typing import Any

from egspo.models.families import ModelFamily

DEFAULT_LORA: dict[str, Any] = {"r": 128, "alpha": 64, "dropout": 0.05}
LORA_KEYS = frozenset({"r", "alpha", "dropout", "target_modules"})


def lora_config(lora: dict[str, Any], family: ModelFamily):
    """peft ``LoraConfig`` from ``{r, alpha, dropout, target_modules}`` (missing keys: r 128, alpha 64,
    dropout 0.05, the family's projections)."""
    from peft import LoraConfig

    unknown = set(lora) - LORA_KEYS
    if unknown:
        raise ValueError(f"unknown lora keys {sorted(unknown)}; allowed: {sorted(LORA_KEYS)}")
    spec = {**DEFAULT_LORA, **lora}
    if not isinstance(spec["r"], int) or spec["r"] < 1:
        raise ValueError(f"lora r must be a positive integer, got {spec['r']!r}")
    if not spec["alpha"] > 0:
        raise ValueError(f"lora alpha must be > 0, got {spec['alpha']!r}")
    if not 0.0 <= spec["dropout"] < 1.0:
        raise ValueError(f"lora dropout must be in [0, 1), got {spec['dropout']!r}")
    targets = spec.get("target_modules") or family.lora_target_modules
    if not targets:
        raise ValueError(f"family {family.name!r} has no default LoRA targets: set lora['target_modules']")
    if not isinstance(targets, str):
        targets = list(targets)
    return LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                      target_modules=targets, bias="none")
