"""wd1 (Tang et al., "wd1: Weighted Policy Optimization for Reasoning in Diffusion Language Models"): a ratio-free
weighted-likelihood objective, as the authors' code runs it (xiaohangt/wd1, ``wd1/trainers/rev_grpo_trainer.py``).

For the G completions ``o_1 .. o_G`` of one prompt with group-centred advantages ``A_i = r_i - mean_G(r)`` (no std
division, ``rev_grpo_trainer.py:638``):

    w+_i = softmax_i(A)     (raises the likelihood of the better completions)
    w-_i = softmax_i(-A)    (lowers the likelihood of the worse ones)
    loss = sum_i (w-_i - w+_i) * log pi_theta(o_i | q)                                         (:145-160)

with no importance ratio, no clipping and no KL term. ``log pi_theta(o_i | q)`` is d1's one-forward estimate
(`egspo.core.objective.d1_sequence_logprobs`: prompt tokens hidden with probability ``p_mask_prompt``, completion
fully masked) **summed** over the completion's tokens up to and including the first EOS (``:154``), not averaged.
Several groups in one batch: the mean over groups of each group's loss (their per-device batch is one group of 6, and
the Trainer averages the gradient-accumulation micro-batches).

Everything here is a pure function of tensors; the update strategy (`egspo.rl.updates.wd1`) owns the loop.
"""

from __future__ import annotations

import torch


def _groups(values: torch.Tensor, group_size: int) -> torch.Tensor:
    """``values`` [N] viewed as [N / G, G] (the G completions of a prompt are contiguous)."""
    if values.dim() != 1:
        raise ValueError(f"advantages must be a vector [N], got shape {tuple(values.shape)}")
    if group_size < 1 or values.shape[0] % group_size:
        raise ValueError(f"{values.shape[0]} rows cannot be split into groups of group_size={group_size}")
    return values.reshape(-1, group_size)


def wd1_weights(advantages: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w+, w-)`` [N]: ``softmax(A)`` and ``softmax(-A)`` within each group of ``group_size`` rows; each group's
    weights sum to 1. Constants (no gradient flows into them)."""
    grouped = _groups(advantages.detach(), group_size)
    return torch.softmax(grouped, dim=1).reshape(-1), torch.softmax(-grouped, dim=1).reshape(-1)


def sequence_logp(token_logp: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """``log pi(o | q)`` [N] as wd1 scores it: the sum of the per-token log-probs [N, L] over ``completion_mask``."""
    if token_logp.shape != completion_mask.shape:
        raise ValueError(f"token_logp {tuple(token_logp.shape)} and completion_mask "
                         f"{tuple(completion_mask.shape)} differ in shape")
    return (token_logp * completion_mask.to(token_logp.dtype)).sum(-1)


def row_coefficients(advantages: torch.Tensor, group_size: int) -> torch.Tensor:
    """``w-_i - w+_i`` [N]: the loss is linear in the log-likelihoods, ``sum_i coef_i * seq_logp_i`` per group, so
    rows can be processed in any pieces once the coefficients of the whole batch are known."""
    w_pos, w_neg = wd1_weights(advantages, group_size)
    return w_neg - w_pos


def piece_loss(seq_logp: torch.Tensor, coefficients: torch.Tensor, n_groups: int) -> torch.Tensor:
    """``sum_i coef_i * seq_logp_i / n_groups`` over any subset of rows: the pieces of a batch add up to `wd1_loss`."""
    if seq_logp.shape != coefficients.shape:
        raise ValueError(f"seq_logp {tuple(seq_logp.shape)} and coefficients {tuple(coefficients.shape)} differ "
                         "in shape")
    return (coefficients.to(seq_logp.dtype) * seq_logp).sum() / n_groups


def wd1_loss(seq_logp: torch.Tensor, advantages: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean over prompt groups of ``sum_i (w-_i - w+_i) * seq_logp_i`` (``seq_logp`` and ``advantages`` [N])."""
    if seq_logp.shape != advantages.shape:
        raise ValueError(f"seq_logp {tuple(seq_logp.shape)} and advantages {tuple(advantages.shape)} differ in shape")
    coefficients = row_coefficients(advantages.to(seq_logp.dtype), group_size)
    return piece_loss(seq_logp, coefficients, seq_logp.shape[0] // group_size)


__all__ = ["piece_loss", "row_coefficients", "sequence_logp", "wd1_loss", "wd1_weights"]
