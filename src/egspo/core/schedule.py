"""Which selected column each micro-step trains and when the optimizer steps (``update_schedule``).

``authors`` (egspo_trainer.py at a7d618b, ``_prepare_inputs`` lines 554-565 and ``compute_loss`` line 93): a counter
``s`` starts at 0; at a micro-step a new rollout is made iff ``s`` is a multiple of ``K * num_gradient_steps``; then
``s`` is increased **before** the loss reads column ``s mod K``, so micro-step ``m`` trains column ``(m + 1) mod K``
(a rollout's highest-entropy column 0 comes last). The HF Trainer steps the optimizer after every ``grad_accum``
micro-steps and divides each micro-step's loss by ``grad_accum``. With K = 8, grad_accum = 2: 4 optimizer steps per
rollout over columns (1, 2), (3, 4), (5, 6), (7, 0).

``per_column``: one optimizer step per column, in column order 0 .. K-1, over the whole rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

UPDATE_SCHEDULES = ("per_column", "authors")


@dataclass(frozen=True)
class MicroStep:
    index: int  # micro-step m (0-based, over the whole run)
    new_rollout: bool  # a rollout is made at this micro-step
    rollout: int  # index of the rollout it trains on
    column: int  # selected column c it trains
    optimizer_step_after: bool  # the optimizer steps after this micro-step


def authors_micro_steps(k: int, grad_accum: int, num_gradient_steps: int, n_micro: int) -> list[MicroStep]:
    """The authors' first ``n_micro`` micro-steps (module docstring)."""
    for name, value in (("k", k), ("grad_accum", grad_accum), ("num_gradient_steps", num_gradient_steps),
                        ("n_micro", n_micro)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    out, counter, rollout = [], 0, -1
    for m in range(n_micro):
        new = counter % (k * num_gradient_steps) == 0
        rollout += int(new)
        counter += 1
        out.append(MicroStep(m, new, rollout, counter % k, (m + 1) % grad_accum == 0))
    return out


def optimizer_steps_per_rollout(schedule: str, k: int, grad_accum: int = 1,
                                num_gradient_steps: int = 1) -> list[list[int]]:
    """The columns each optimizer step of one rollout trains, in order (``[[1, 2], [3, 4], [5, 6], [7, 0]]`` for
    the authors' K = 8, grad_accum = 2). ``authors`` needs ``K * num_gradient_steps`` to be a multiple of
    ``grad_accum`` so that optimizer steps never straddle two rollouts (true of their recipe)."""
    if schedule not in UPDATE_SCHEDULES:
        raise ValueError(f"update_schedule must be one of {UPDATE_SCHEDULES}, got {schedule!r}")
    if schedule == "per_column":
        return [[c] for c in range(k)]
    if (k * num_gradient_steps) % grad_accum != 0:
        raise ValueError(f"update_schedule=authors needs K * num_gradient_steps = {k * num_gradient_steps} to be a "
                         f"multiple of the columns per optimizer step = {grad_accum} (an optimizer step would "
                         "straddle two rollouts)")
    steps, current = [], []
    for step in authors_micro_steps(k, grad_accum, num_gradient_steps, k * num_gradient_steps):
        current.append(step.column)
        if step.optimizer_step_after:
            steps.append(current)
            current = []
    return steps
