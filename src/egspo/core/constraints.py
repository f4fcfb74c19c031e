"""The core's allowed names and the block schedule's rule, without torch: what `egspo.settings` checks when the
workflow validates a config at DAG time (no torch import there) is the code the sampler itself runs."""

from __future__ import annotations

REMASKING_METHODS = ("low_confidence", "random")  # egspo.core.sampler
SELECTION_METHODS = ("entropy", "uniform", "random", "all")  # egspo.core.selection
STEP_REDUCTIONS = ("sum", "mean")  # egspo.core.objective.step_logprob


def steps_per_block(gen_length: int, steps: int, block_length: int) -> int:
    """Denoising steps each block gets, T / (L / B); ValueError unless L, T, B are positive ints, B divides L, the
    L / B blocks divide T, and no block has more steps than tokens (every step commits at least one token)."""
    for name, value in (("gen_length", gen_length), ("steps", steps), ("block_length", block_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if gen_length % block_length != 0:
        raise ValueError(f"gen_length={gen_length} is not divisible by block_length={block_length}")
    num_blocks = gen_length // block_length
    if steps % num_blocks != 0:
        raise ValueError(f"steps={steps} is not a multiple of the number of blocks "
                         f"gen_length/block_length={num_blocks}")
    per_block = steps // num_blocks
    if per_block > block_length:
        raise ValueError(
            f"steps={steps} gives {per_block} steps per block but a block has only block_length={block_length} "
            "tokens; every step must commit at least one token"
        )
    return per_block


__all__ = ["REMASKING_METHODS", "SELECTION_METHODS", "STEP_REDUCTIONS", "steps_per_block"]
