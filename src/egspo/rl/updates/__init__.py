"""Update strategies of `egspo rl`, keyed by the ``algorithm:`` setting.

The loop (`egspo.rl.trainer.RLTrainer`) draws prompts, samples G completions per prompt with the current policy and
scores them (``r0 = r(S_T)``); everything after that, from advantages to the optimizer steps of one iteration, is the
strategy's. A strategy is a subclass of `egspo.rl.updates.base.UpdateStrategy`:

* ``records_greedy_fill`` (property, default False): whether the rollout must keep the greedy one-step fills
  ``x_hat(S_j)`` of every step (EGSPO-SA's greedy state baseline);
* ``update(rollout, rewards, rows, t0) -> IterationResult``: advantages, losses and optimizer steps on this
  process's rows, through the loop's services (``trainer.train_model``, ``trainer.reference``,
  ``trainer.optimizer_step()``, ``trainer.sync_context(last)``, ``trainer.global_sum(values)``, ...). Losses come
  from the tested functions of `egspo.core.objective`, never rebuilt inline.

**Adding an algorithm**: write ``egspo/rl/updates/<name>.py`` with a subclass of ``UpdateStrategy`` and add
``"<name>": "egspo.rl.updates.<name>:<Class>"`` to ``STRATEGIES`` below (or call `register` from your own code): the
name becomes an allowed value of ``--algorithm`` and of the workflow's ``algorithm:``. Modules are imported on first
use, so listing the names costs nothing.
"""

from __future__ import annotations

import importlib

# algorithm name -> "module:class" of its UpdateStrategy subclass
STRATEGIES: dict[str, str] = {
    "egspo": "egspo.rl.updates.egspo:EGSPOUpdate",
    "diffu_grpo": "egspo.rl.updates.diffu_grpo:DiffuGRPOUpdate",
    "wd1": "egspo.rl.updates.wd1:WD1Update",
    "spg": "egspo.rl.updates.spg:SPGUpdate",
}


def algorithm_names() -> tuple[str, ...]:
    """The allowed values of ``algorithm``."""
    return tuple(STRATEGIES)


def register(name: str, target: str) -> None:
    """Make ``algorithm: name`` run the UpdateStrategy subclass at ``target`` ("module:class")."""
    if ":" not in target:
        raise ValueError(f"strategy target must be 'module:class', got {target!r}")
    STRATEGIES[name] = target


def strategy_class(name: str):
    """The UpdateStrategy subclass registered as ``name``."""
    from egspo.rl.updates.base import UpdateStrategy

    if name not in STRATEGIES:
        raise ValueError(f"unknown algorithm {name!r}; known algorithms: {', '.join(STRATEGIES)}")
    module_name, attr = STRATEGIES[name].split(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, UpdateStrategy)):
        raise TypeError(f"algorithm {name!r} is registered as {STRATEGIES[name]!r}, which is not an UpdateStrategy")
    return cls


__all__ = ["STRATEGIES", "algorithm_names", "register", "strategy_class"]
