"""Counts the model forwards an RL iteration spends, for the compute table (`egspo report compute`).

A forward of a batch of n sequences counts n (``rows``): the unit the cost scales with, whatever the micro-batch
split. Hooks sit on every module that computes logits in the loop (the policy, whose adapter-off or merged-weight
uses are the same module, and a frozen reference copy when there is one).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn


class ForwardMeter:
    """``rows`` (sequences) and ``calls`` (batched forwards) through ``models`` since construction."""

    def __init__(self, models: Iterable[nn.Module]) -> None:
        self.rows = 0
        self.calls = 0
        self._handles = [m.register_forward_hook(self._count, with_kwargs=True) for m in models]

    def _count(self, module, args, kwargs, output) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is None:
            raise ValueError(f"{type(module).__name__}.forward called without input_ids: cannot count its rows")
        self.rows += int(ids.shape[0])
        self.calls += 1

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


__all__ = ["ForwardMeter"]
