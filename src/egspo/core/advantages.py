"""Group baselines, stepwise (EGSPO-SA) returns and multi-step rollout values.

Rows are trajectories; the G completions of one prompt are contiguous (row ``n`` belongs to group ``n // G``).
Steps are indexed forward as in `egspo.core.sampler`.

Reward functions: ``reward_fn(completions, rows) -> rewards`` with ``completions`` a LongTensor ``[R, L]`` of
completion token ids and ``rows`` a LongTensor ``[R]`` giving, for each completion, the trajectory (rollout row) it
belongs to, so the caller can find its prompt / dataset row; it returns R floats (tensor, list or array).
Non-finite rewards raise ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from egspo.core.sampler import Rollout, SamplerConfig, continue_from

RewardFn = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | Sequence[float]"]
GROUP_MODES = ("mean", "loo")


def _check_finite(name: str, values: torch.Tensor) -> None:
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        first = int(bad.reshape(-1).nonzero()[0])
        raise ValueError(f"{name} has non-finite values (first at flat index {first}: {values.reshape(-1)[first]})")


def group_centered(values: torch.Tensor, group_size: int, mode: str = "mean",
                   valid: torch.Tensor | None = None) -> torch.Tensor:
    """``A = v - b`` per column, ``b`` the mean of ``v`` over the G rows of the group (``mode="mean"``) or over the
    other G-1 rows (``mode="loo"``, i.e. ``G/(G-1) * (v - mean)``); no std division. ``values`` is ``[N]`` or
    ``[N, K]``. With ``valid`` (same shape) only valid entries enter the baselines and invalid ones get 0; under
    ``loo`` an entry with no other valid entry in its group and column also gets 0."""
    if mode not in GROUP_MODES:
        raise ValueError(f"mode must be one of {GROUP_MODES}, got {mode!r}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if mode == "loo" and group_size < 2:
        raise ValueError(f"mode='loo' needs group_size >= 2, got {group_size}")
    if values.dim() not in (1, 2) or values.shape[0] == 0:
        raise ValueError(f"values must be a non-empty [N] or [N, K] tensor, got shape {tuple(values.shape)}")
    N = values.shape[0]
    if N % group_size != 0:
        raise ValueError(f"N={N} rows is not a multiple of group_size={group_size}")
    _check_finite("values", values)
    squeeze = values.dim() == 1
    v = values.unsqueeze(1) if squeeze else values
    v = v if v.is_floating_point() else v.float()
    w = torch.ones_like(v) if valid is None else valid.reshape(v.shape).to(v.dtype)
    grouped_v = (v * w).view(N // group_size, group_size, -1)
    grouped_w = w.view(N // group_size, group_size, -1)
    total = grouped_v.sum(1, keepdim=True)
    count = grouped_w.sum(1, keepdim=True)
    if mode == "mean":
        baseline = total / count.clamp_min(1)
        usable = grouped_w > 0
    else:
        others = count - grouped_w
        baseline = (total - grouped_v) / others.clamp_min(1)
        usable = (grouped_w > 0) & (others > 0)
    adv = torch.where(usable, v.view_as(grouped_v) - baseline, torch.zeros((), dtype=v.dtype, device=v.device))
    adv = adv.view(N, -1)
    return adv.squeeze(1) if squeeze else adv


def stepwise_returns(final_reward: torch.Tensor, baseline_reward: torch.Tensor, lam: float) -> torch.Tensor:
    """``R_j = (r0 + lam * (r0 - b_j)) / (1 + lam)`` ``[N, K]`` from ``r0 = r(S_T)`` ``[N]`` and the state
    baseline ``b_j`` ``[N, K]`` (greedy-fill reward ``r(x_hat(S_j))`` or a value estimate); ``lam = 0`` gives r0."""
    if not (lam >= 0.0) or lam == float("inf"):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    final_reward = torch.as_tensor(final_reward)
    baseline_reward = torch.as_tensor(baseline_reward)
    if baseline_reward.dim() != 2 or final_reward.shape != baseline_reward.shape[:1]:
        raise ValueError(f"final_reward must be [N] and baseline_reward [N, K], got {tuple(final_reward.shape)} "
                         f"and {tuple(baseline_reward.shape)}")
    _check_finite("final_reward", final_reward)
    _check_finite("baseline_reward", baseline_reward)
    r0 = final_reward.unsqueeze(1).to(baseline_reward.dtype if baseline_reward.is_floating_point() else torch.float32)
    return (r0 + lam * (r0 - baseline_reward)) / (1.0 + lam)


def score(reward_fn: RewardFn, completions: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``reward_fn(completions, rows)`` as a float64 tensor ``[R]``, checked for length and finiteness."""
    out = reward_fn(completions, rows)
    rewards = torch.as_tensor(out if isinstance(out, torch.Tensor) else list(out), dtype=torch.float64)
    rewards = rewards.reshape(-1).cpu()
    if rewards.shape[0] != completions.shape[0]:
        raise ValueError(f"reward_fn returned {rewards.shape[0]} rewards for {completions.shape[0]} completions")
    _check_finite("rewards (reward_fn output)", rewards)
    return rewards


def greedy_baseline_rewards(rollout: Rollout, steps: torch.Tensor, reward_fn: RewardFn) -> torch.Tensor:
    """``b_{n,k} = r(x_hat(S_{steps[n,k]}))`` ``[N, K]`` from the rollout's recorded greedy fills (EGSPO-SA)."""
    if rollout.greedy_fill is None:
        raise ValueError("rollout.greedy_fill is None; generate with record_greedy_fill=True")
    steps = torch.as_tensor(steps, dtype=torch.long, device=rollout.completion.device)
    N, K = steps.shape
    rows = torch.arange(N, device=steps.device).repeat_interleave(K)
    fills = rollout.greedy_fill[rows, steps.reshape(-1)]  # [N*K, L]
    return score(reward_fn, fills, rows).view(N, K)


def multistep_values(
    model,
    rollout: Rollout,
    steps: torch.Tensor,
    reward_fn: RewardFn,
    M: int,
    config: SamplerConfig | None = None,
    generator: torch.Generator | None = None,
    *,
    micro_batch: int | None = None,
) -> torch.Tensor:
    """``V_hat(S_j) = (1/M) sum_m r(S_T^(m))`` ``[N, K]``: the mean reward of M stochastic continuations of each
    selected state ``S_{steps[n, k]}`` under the current policy (``config``: the rollout's by default, so its
    temperature and remasking). All N*K*M continuations run batched through `egspo.core.sampler.continue_from`
    (``micro_batch`` bounds the rows per chunk)."""
    if not isinstance(M, int) or isinstance(M, bool) or M <= 0:
        raise ValueError(f"M must be a positive int, got {M!r}")
    steps = torch.as_tensor(steps, dtype=torch.long, device=rollout.completion.device)
    if steps.dim() != 2 or steps.shape[0] != len(rollout):
        raise ValueError(f"steps must be [N={len(rollout)}, K], got {tuple(steps.shape)}")
    N, K = steps.shape
    rows = torch.arange(N, device=steps.device).repeat_interleave(K * M)
    starts = steps.repeat_interleave(M, dim=1).reshape(-1)
    chunk = rows.numel() if micro_batch is None else micro_batch
    if chunk <= 0:
        raise ValueError(f"micro_batch must be a positive int or None, got {micro_batch!r}")
    finals = [
        continue_from(model, rollout, rows[s : s + chunk], starts[s : s + chunk], config, generator=generator)
        for s in range(0, rows.numel(), chunk)
    ]
    rewards = score(reward_fn, torch.cat(finals, dim=0), rows)
    return rewards.view(N, K, M).mean(-1)
