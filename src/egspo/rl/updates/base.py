"""The interface every update strategy implements, and what one iteration returns (see `egspo.rl.updates`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from egspo.rl.trainer import RLTrainer


@dataclass
class IterationResult:
    """What one iteration computed (exposed for tests and metrics); tensors are this process's rows."""

    rewards: torch.Tensor  # [N] r0
    advantages: torch.Tensor  # [N, K] (egspo) or [N] (diffu_grpo)
    returns: torch.Tensor | None = None  # [N, K] R_j (egspo)
    baseline_rewards: torch.Tensor | None = None  # [N, K] b_j (egspo with a stepwise term)
    selection: Any = None  # StepSelection (egspo)
    rollout: Any = None  # the Rollout
    completions: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


class UpdateStrategy(ABC):
    """One RL algorithm's update: from scored rollouts to optimizer steps. Built once per trainer."""

    def __init__(self, trainer: RLTrainer) -> None:
        self.trainer = trainer
        self.cfg = trainer.cfg

    @property
    def records_greedy_fill(self) -> bool:
        """Whether the rollout must record the greedy one-step fill of every step."""
        return False

    @abstractmethod
    def update(self, rollout, rewards: torch.Tensor, rows: list[dict[str, Any]], t0: float) -> IterationResult:
        """Advantages and optimizer steps for ``rollout`` (this process's N trajectories, G contiguous rows per
        prompt) with final rewards ``rewards`` [N] and dataset rows ``rows`` [N]; ``t0`` is the iteration's start
        (``metrics["time_rollout_s"]`` is the time until the advantages are known: take it from
        ``self.trainer.advantages_known(t0)``, which also splits the compute metrics there). Returns the iteration's
        result with the metrics ``loss``, ``kl``, ``clip_frac``, ``grad_norm``, ``advantage_abs_mean``,
        ``onestep_reward_mean`` and ``time_rollout_s`` (None where undefined)."""


def row_pieces(n: int, parts: int, cap: int | None) -> list[torch.Tensor]:
    """Row indices ``0 .. n-1`` split into ``parts`` equal slices, each further cut to at most ``cap`` rows: the
    pieces one optimizer step's gradients accumulate over (``grad_accum`` / ``micro_batch``)."""
    out = []
    size = n // parts
    for p in range(parts):
        lo, hi = p * size, (p + 1) * size
        step = hi - lo if cap is None else cap
        for s in range(lo, hi, step):
            out.append(torch.arange(s, min(s + step, hi)))
    return out


def clipped(rho: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """Where the PPO clip is active: ``rho < 1 - eps_low`` with ``A < 0``, or ``rho > 1 + eps_high`` with ``A > 0``."""
    return ((rho < 1 - eps_low) & (advantages < 0)) | ((rho > 1 + eps_high) & (advantages > 0))


def sequence_update_metrics(*, loss: float, grad_norms: list[float], advantage_abs_mean: float, t_rollout: float,
                            kl: float | None = None, clip_frac: float | None = None) -> dict[str, Any]:
    """The metrics row of a sequence-level update (diffu-GRPO, wd1, SPG: one advantage per completion, no
    one-step reward), in the column order every algorithm logs."""
    return {"loss": loss, "kl": kl, "clip_frac": clip_frac, "grad_norm": float(np.mean(grad_norms)),
            "advantage_abs_mean": advantage_abs_mean, "onestep_reward_mean": None, "time_rollout_s": t_rollout}


__all__ = ["IterationResult", "UpdateStrategy", "clipped", "row_pieces", "sequence_update_metrics"]
