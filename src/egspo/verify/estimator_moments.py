"""Exact moments of the library's gradient estimators over every enumerated trajectory (`egspo.verify.exact`).

An estimator ``g(tau) = sum_j w_j(tau) grad log pi(S_{j+1} | S_j)`` with detached weights ``w`` has, under the
exact ``P(tau)``, mean ``E g = sum_tau P(tau) g(tau)`` and variance ``E|g|^2 - |E g|^2`` (trace of the covariance),
compared with ``grad J`` by cosine and relative error. ``log pi`` and its per-step gradients are the library
objective's (`egspo.core.objective`), not re-derived.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from egspo.verify.exact import row_jacobian, trajectory_chunks


def library_step_scores(model: nn.Module, rollout, params: Sequence[torch.Tensor] | None = None,
                        chunk_rows: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The library objective's per-step scores on every step of ``rollout``: ``(logpi [N, T], grad logpi
    [N, T, D])`` with ``log pi(S_{j+1} | S_j) = step_logprob(token_logprobs(model, step_batch(rollout, j)), U_j)``,
    over sub-rollouts of about ``chunk_rows`` (trajectory, step) rows (the Jacobian costs O(rows^2) per chunk)."""
    from egspo.core.objective import step_batch, step_logprob, token_logprobs

    n, steps = rollout.completion.shape[0], rollout.config.steps
    params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    values, jacs = [], []
    for idx in trajectory_chunks(n, steps, chunk_rows):
        part = rollout.index_select(idx)
        batch = step_batch(part, torch.arange(steps).expand(len(idx), steps).contiguous())
        ell = step_logprob(token_logprobs(model, batch), batch.target_mask, reduction="sum")
        jacs.append(row_jacobian(ell, params).view(len(idx), steps, -1))
        values.append(ell.detach().view(len(idx), steps))
    return torch.cat(values), torch.cat(jacs)


@dataclass
class EstimatorStats:
    """Exact moments of ``g(tau) = sum_j w_j grad log pi_j`` and how ``E g`` compares with ``grad J``."""

    mean: torch.Tensor   # E[g]  [D]
    variance: float      # trace Cov(g) = E|g|^2 - |E g|^2
    cosine: float        # cos(E g, grad J)
    rel_error: float     # |E g - grad J| / |grad J|


def estimator_stats(prob: torch.Tensor, scores: torch.Tensor, weights: Sequence[torch.Tensor],
                    grad_j: torch.Tensor) -> EstimatorStats:
    """Exact statistics of an estimator whose per-trajectory weights ``w [N, T]`` are drawn uniformly from
    ``weights`` (one entry for a deterministic selector; every K-subset for the random one)."""
    if not weights:
        raise ValueError("estimator_stats: weights is empty")
    mean = torch.zeros(scores.shape[-1], dtype=torch.float64)
    second = 0.0
    for w in weights:
        g = torch.einsum("nt,ntd->nd", w.to(torch.float64), scores)
        mean += prob @ g / len(weights)
        second += float(prob @ (g * g).sum(-1)) / len(weights)
    norm_j = grad_j.norm()
    if float(norm_j) == 0.0:
        raise ValueError("grad J is exactly zero; cosine and relative error are undefined")
    cosine = float(mean @ grad_j / (mean.norm() * norm_j)) if float(mean.norm()) > 0 else 0.0
    return EstimatorStats(mean=mean, variance=second - float(mean @ mean), cosine=cosine,
                          rel_error=float((mean - grad_j).norm() / norm_j))


def all_subsets(steps: int, k: int, n: int) -> list[torch.Tensor]:
    """One ``[n, T]`` 0/1 indicator per K-subset of the T steps (the random selector's equally likely outcomes)."""
    if not 1 <= k <= steps:
        raise ValueError(f"k must lie in [1, {steps}], got {k}")
    out = []
    for subset in itertools.combinations(range(steps), k):
        ind = torch.zeros(n, steps, dtype=torch.float64)
        ind[:, list(subset)] = 1.0
        out.append(ind)
    return out
