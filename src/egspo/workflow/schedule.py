"""Step schedules the workflow plans with: the RL save schedule (which checkpoints exist), the evaluation's
denoising steps T = L * steps_per_token, and the sampler's block rule (L % B == 0, T a multiple of L / B)."""

from __future__ import annotations

from egspo.rl.run_layout import checkpoint_name
from egspo.workflow.config import ConfigError


def saved_steps(max_steps: int, save_every: int, last: int | None = None) -> list[int]:
    """Optimizer steps at which `egspo rl` saves: every `save_every` and at `max_steps`; only the final `last` of them
    when `last` is set (config key 'eval.last_checkpoints')."""
    steps = list(range(save_every, max_steps + 1, save_every))
    if not steps or steps[-1] != max_steps:
        steps.append(max_steps)
    return steps[-last:] if last else steps


def saved_checkpoints(max_steps: int, save_every: int, last: int | None = None) -> list[str]:
    """The checkpoint directory names (`step_N`) of `saved_steps`."""
    return [checkpoint_name(n) for n in saved_steps(max_steps, save_every, last)]


def eval_steps(length: int, steps_per_token: float) -> int:
    """Denoising steps for evaluation at generation length L: T = L * eval.steps_per_token (a positive integer)."""
    steps = length * steps_per_token
    if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
        raise ConfigError(f"config key 'eval.steps_per_token' = {steps_per_token} gives a non-integer step count "
                          f"{steps} at eval.gen_lengths entry {length}")
    return int(round(steps))


def check_block_schedule(where: str, gen_length: int, steps: int, block_length: int) -> None:
    """L % B == 0 and T a multiple of the number of blocks L / B (each block gets T * B / L steps)."""
    if gen_length % block_length:
        raise ConfigError(f"{where}: gen_length {gen_length} is not a multiple of block_length {block_length}")
    blocks = gen_length // block_length
    if steps % blocks:
        raise ConfigError(f"{where}: steps {steps} is not a multiple of the {blocks} blocks "
                          f"(gen_length {gen_length} / block_length {block_length})")
