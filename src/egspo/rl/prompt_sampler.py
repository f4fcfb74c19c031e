"""Epoch-shuffled, seeded, resumable order of training prompts: every prompt is used exactly once per epoch.

The order is the concatenation of one permutation per epoch, ``perm_0 ++ perm_1 ++ ...``, where ``perm_e`` is a
permutation of ``0 .. n-1`` drawn from a generator seeded with ``(seed, e)``. Batches are consecutive slices of this
stream: a batch that does not fit in what is left of epoch ``e`` takes its remaining prompts from the head of
``perm_{e+1}`` (the remainder *wraps* into the next epoch). So no prompt is ever skipped or repeated inside an epoch,
whatever the batch size, and the whole state is one integer (``position``: prompts consumed so far) plus the seed
and the dataset size, which makes resuming exact.

Data-parallel ranks draw the same global batch and take contiguous shards of it (see :meth:`PromptOrder.shard`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class PromptOrder:
    """Stream of prompt indices ``perm_0 ++ perm_1 ++ ...`` (see the module docstring)."""

    def __init__(self, num_prompts: int, seed: int, position: int = 0) -> None:
        if not isinstance(num_prompts, int) or num_prompts <= 0:
            raise ValueError(f"num_prompts must be a positive int, got {num_prompts!r}")
        if not isinstance(position, int) or position < 0:
            raise ValueError(f"position must be a non-negative int, got {position!r}")
        self.num_prompts = num_prompts
        self.seed = int(seed)
        self.position = position
        self._cache: tuple[int, np.ndarray] | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        """``perm_epoch``: a permutation of ``0 .. n-1`` that depends only on ``(seed, epoch)``."""
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch])
            self._cache = (epoch, rng.permutation(self.num_prompts))
        return self._cache[1]

    @property
    def epoch(self) -> int:
        """Epoch of the next prompt to be drawn (0-based)."""
        return self.position // self.num_prompts

    def next_batch(self, batch_size: int) -> list[int]:
        """The next ``batch_size`` indices of the stream (wrapping into the next epoch's permutation)."""
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        out: list[int] = []
        while len(out) < batch_size:
            epoch, offset = divmod(self.position, self.num_prompts)
            take = min(batch_size - len(out), self.num_prompts - offset)
            out.extend(int(i) for i in self.permutation(epoch)[offset : offset + take])
            self.position += take
        return out

    @staticmethod
    def shard(batch: list[int], rank: int, world_size: int) -> list[int]:
        """Contiguous share of rank ``rank``: ``batch[rank*b : (rank+1)*b]`` with ``b = len(batch) / world_size``."""
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank!r} / world_size {world_size!r} is not a valid process index")
        if len(batch) % world_size != 0:
            raise ValueError(f"a batch of {len(batch)} prompts cannot be split evenly over {world_size} processes")
        per = len(batch) // world_size
        return batch[rank * per : (rank + 1) * per]

    def state_dict(self) -> dict[str, Any]:
        return {"num_prompts": self.num_prompts, "seed": self.seed, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``position``; the dataset size and seed must match the saved ones (else the order differs)."""
        for key in ("num_prompts", "seed"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"cannot resume the prompt order: saved {key}={state[key]!r} but this run has "
                    f"{key}={getattr(self, key)!r} (different training file or seed)"
                )
        self.position = int(state["position"])
        self._cache = None


__all__ = ["PromptOrder"]
