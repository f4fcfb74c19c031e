"""Exact enumeration of a masked-diffusion policy small enough to list every trajectory.

Steps are indexed forward (docs/architecture.md): ``S_0`` is the prompt plus L masks, step ``j = 0 .. T-1`` commits
the positions ``U_j`` and ``S_T`` is the completion. A trajectory ``tau = (x, c)`` is a completion
``x in {0..V-1}^L`` together with the commit step ``c_i`` of every position; ``S_j`` keeps ``x_i`` where
``c_i < j`` and the mask elsewhere. With ``k_j`` positions committed at step ``j`` (``step_schedule``), ``m_j``
masked positions in the current block of ``S_j`` and sampling at temperature 1:

* random remasking::

      P(tau) = prod_j  C(m_j, k_j)^-1  prod_{i in U_j} p_theta(x_i | S_j)

* low-confidence remasking (Gumbel-max at temperature 1 draws ``x_m ~ p_m`` at every masked position ``m`` of the
  block, then the ``k_j`` largest confidences ``p_m(x_m)`` are committed), with ``O_j`` the masked positions of the
  block that are not committed::

      P(U_j, x_U | S_j) = prod_{i in U_j} p_i(x_i) * sum_{y in V^O_j} prod_{o in O_j} p_o(y_o)
                          * 1[ min_{i in U_j} p_i(x_i) > max_{o in O_j} p_o(y_o) ]

  (for ``k_j = 1`` this is ``p_i(v) prod_{m != i} P(p_m(x_m) < p_i(v))``). Exact ties of confidences make the
  sampler's choice implementation-defined, so they are refused.

From these, ``J(theta) = sum_tau P(tau) r(x)`` and ``grad J`` follow by autograd, ``V(S_j) = E[r | S_j]`` by grouping
trajectories through the same state, and ``grad log P(S_{j+1} | S_j)`` per step; the exact moments of the library's
estimators from these are `egspo.verify.estimator_moments`. The policy and rewards are
`egspo.verify.enumerable_policy`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from egspo.verify.enumerable_policy import EnumerablePolicy, RewardFn


# ---------------------------------------------------------------------------------------------------------------
# Trajectories
# ---------------------------------------------------------------------------------------------------------------
def enumerate_trajectories(schedule: Sequence[int], gen_length: int, block_length: int, vocab: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every trajectory ``(x, c)`` the sampler can produce: ``completion`` and ``commit_step``, both ``[N, L]``.

    Block ``b`` owns positions ``[bB, (b+1)B)`` and steps ``[b T/nb, (b+1) T/nb)``; step ``j`` commits exactly
    ``schedule[j]`` of its block's still-masked positions. ``N = (#commit orders) * vocab^L``.
    """
    steps = len(schedule)
    if block_length < 1 or gen_length % block_length:
        raise ValueError(f"block_length must divide gen_length, got {block_length} and {gen_length}")
    n_blocks = gen_length // block_length
    if steps % n_blocks:
        raise ValueError(f"steps ({steps}) must be a multiple of the number of blocks ({n_blocks})")
    spb = steps // n_blocks
    per_block: list[list[dict[int, int]]] = []
    for b in range(n_blocks):
        ks = list(schedule[b * spb:(b + 1) * spb])
        if sum(ks) != block_length or min(ks) < 1:
            raise ValueError(f"schedule {list(schedule)} does not commit block {b} in {spb} steps of >= 1 token")
        per_block.append(list(_block_orders(list(range(b * block_length, (b + 1) * block_length)), ks, b * spb)))
    orders = []
    for parts in itertools.product(*per_block):
        c = [0] * gen_length
        for part in parts:
            for pos, j in part.items():
                c[pos] = j
        orders.append(c)
    tokens = torch.tensor(list(itertools.product(range(vocab), repeat=gen_length)), dtype=torch.long)
    commit = torch.tensor(orders, dtype=torch.long)
    completion = tokens.repeat(len(orders), 1)
    commit_step = commit.repeat_interleave(len(tokens), dim=0)
    return completion, commit_step


def _block_orders(positions: list[int], ks: list[int], first_step: int):
    if not ks:
        yield {}
        return
    for chosen in itertools.combinations(positions, ks[0]):
        rest = [p for p in positions if p not in chosen]
        for tail in _block_orders(rest, ks[1:], first_step + 1):
            yield {**{p: first_step for p in chosen}, **tail}


def states_from(completion: torch.Tensor, commit_step: torch.Tensor, steps: int, mask_token_id: int) -> torch.Tensor:
    """``[N, T+1, L]``: completion part of ``S_j`` = ``x_i`` where ``c_i < j``, else the mask."""
    j = torch.arange(steps + 1).view(1, -1, 1)
    masks = torch.full_like(completion, mask_token_id).unsqueeze(1)
    return torch.where(commit_step.unsqueeze(1) < j, completion.unsqueeze(1), masks)


@dataclass
class TrajectoryTerms:
    """Per-trajectory quantities the sampler records, computed from ``log p_theta(. | S_j)`` (temperature 1)."""

    token_logprobs: torch.Tensor  # [N, L] log p(x_i | S_{c_i})
    step_logprobs: torch.Tensor   # [N, T] sum over U_j
    step_entropy: torch.Tensor    # [N, T] mean over U_j of the entropy at S_j
    greedy_fill: torch.Tensor     # [N, T, L] argmax fill of the masked positions of S_j


class ExactProblem:
    """All trajectories of one prompt under ``config`` (``SamplerConfig``) for an :class:`EnumerablePolicy`,
    with every exact quantity of the gradient check. Tensors are float64; ``N`` trajectories, ``T`` steps."""

    def __init__(self, model: EnumerablePolicy, prompt_ids: Sequence[int], config, reward_fn: RewardFn):
        from egspo.core.sampler import step_schedule

        if config.mask_token_id != model.mask_token_id:
            raise ValueError(f"config.mask_token_id ({config.mask_token_id}) must be the model's mask id "
                             f"({model.mask_token_id})")
        prompt = [int(t) for t in prompt_ids]
        if not prompt or any(t < 0 or t >= model.vocab for t in prompt):
            raise ValueError(f"prompt_ids must be non-empty real token ids in [0, {model.vocab}), got {prompt}")
        if len(prompt) + config.gen_length != model.seq_len:
            raise ValueError(f"prompt length {len(prompt)} + gen_length {config.gen_length} must equal the model's "
                             f"seq_len {model.seq_len}")
        self.model = model
        self.config = config
        self.vocab = model.vocab
        self.mask_id = model.mask_token_id
        self.prompt = torch.tensor(prompt, dtype=torch.long)
        self.L, self.T, self.B = config.gen_length, config.steps, config.block_length
        self.schedule = [int(k) for k in step_schedule(self.L, self.T, self.B).tolist()]
        self.completion, self.commit_step = enumerate_trajectories(self.schedule, self.L, self.B, self.vocab)
        self.N = self.completion.shape[0]
        self.states = states_from(self.completion, self.commit_step, self.T, self.mask_id)  # [N, T+1, L]
        self.reward_fn = reward_fn
        self.rewards = reward_fn(self.completion).to(torch.float64)
        self.params = [p for p in model.parameters() if p.requires_grad]
        # block of step j and its masked-position count m_j before the step
        spb = self.T // (self.L // self.B)
        self.step_block = [j // spb for j in range(self.T)]
        committed_before = [sum(self.schedule[self.step_block[j] * spb:j]) for j in range(self.T)]
        self.masked_in_block = [self.B - c for c in committed_before]

    # --- policy on every state ------------------------------------------------------------------------------
    def _rows(self, idx: torch.Tensor | None) -> torch.Tensor:
        return torch.arange(self.N) if idx is None else torch.as_tensor(idx, dtype=torch.long)

    def step_log_probs(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, T, L, V]``: log p_theta(. | S_j) over the real tokens at every completion position (graph kept),
        for the trajectories ``idx`` (all when None)."""
        idx = self._rows(idx)
        n, n_rows = len(idx), len(idx) * self.T
        ids = torch.cat([self.prompt.expand(n_rows, -1), self.states[idx, :self.T].reshape(n_rows, self.L)], dim=1)
        logits = self.model(input_ids=ids).logits[:, len(self.prompt):, :]
        logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
        if bool((logp[..., self.mask_id] > -700).any()):
            raise ValueError("the model gives the mask token non-zero probability; exact enumeration needs zero")
        real = torch.cat([logp[..., :self.mask_id], logp[..., self.mask_id + 1:]], dim=-1)
        return real.view(n, self.T, self.L, self.vocab)

    def terms(self, logp: torch.Tensor | None = None, idx: torch.Tensor | None = None) -> TrajectoryTerms:
        """Token / step log-probs, step entropies and greedy fills of the trajectories ``idx`` (all when None;
        ``logp`` must then be ``step_log_probs(idx)``); the log-probs are differentiable."""
        idx = self._rows(idx)
        logp = self.step_log_probs(idx) if logp is None else logp
        c = self.commit_step[idx]
        at_commit = logp.gather(1, c.view(len(idx), 1, self.L, 1).expand(-1, 1, -1, self.vocab)).squeeze(1)
        token_lp = at_commit.gather(-1, self.completion[idx].unsqueeze(-1)).squeeze(-1)  # [n, L]
        onehot = (c.unsqueeze(1) == torch.arange(self.T).view(1, -1, 1)).to(torch.float64)  # [N, T, L]
        step_lp = (onehot * token_lp.unsqueeze(1)).sum(-1)
        with torch.no_grad():
            ent = -(logp.exp() * logp).sum(-1)  # [N, T, L]
            step_ent = (onehot * ent).sum(-1) / onehot.sum(-1)
            states = self.states[idx, :self.T]
            masked = states == self.mask_id
            greedy = torch.where(masked, logp.argmax(-1), states)
        return TrajectoryTerms(token_lp, step_lp, step_ent, greedy)

    # --- exact transition probabilities ---------------------------------------------------------------------
    def step_probs(self, remasking: str, idx: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, T]``: exact ``P(S_{j+1} | S_j)`` of every step of the trajectories ``idx`` (all when None) under
        ``remasking`` (differentiable)."""
        if remasking not in ("random", "low_confidence"):
            raise ValueError(f"remasking must be 'random' or 'low_confidence', got {remasking!r}")
        idx = self._rows(idx)
        logp = self.step_log_probs(idx)
        terms = self.terms(logp, idx)
        if remasking == "random":
            choose = torch.tensor([math.comb(m, k) for m, k in zip(self.masked_in_block, self.schedule)],
                                  dtype=torch.float64)
            return terms.step_logprobs.exp() / choose
        return torch.stack([self._low_confidence_step(j, logp, terms, idx) for j in range(self.T)], dim=1)

    def _low_confidence_step(self, j: int, logp: torch.Tensor, terms: TrajectoryTerms, idx: torch.Tensor
                             ) -> torch.Tensor:
        n, b = len(idx), self.step_block[j]
        in_block = torch.zeros(self.L, dtype=torch.bool)
        in_block[b * self.B:(b + 1) * self.B] = True
        commit_step = self.commit_step[idx]
        committed = commit_step == j
        others = (commit_step > j) & in_block  # O_j: masked in the block, left masked
        q = self.masked_in_block[j] - self.schedule[j]
        p_commit = terms.token_logprobs.exp()
        conf_min = torch.where(committed, p_commit, torch.full_like(p_commit, math.inf)).min(-1).values  # [N]
        prod_commit = torch.where(committed, p_commit, torch.ones_like(p_commit)).prod(-1)
        if q == 0:
            return prod_commit
        pos = torch.nonzero(others)[:, 1].view(n, q)
        p_other = logp[:, j].exp().gather(1, pos.unsqueeze(-1).expand(-1, -1, self.vocab))  # [N, q, V]
        combos = torch.tensor(list(itertools.product(range(self.vocab), repeat=q)), dtype=torch.long)  # [C, q]
        conf = p_other[:, torch.arange(q).unsqueeze(0), combos]  # [N, C, q]
        conf_max = conf.max(-1).values
        if bool((conf_max == conf_min.unsqueeze(1)).any()):
            raise ValueError(f"exact tie of confidences at step {j}: the low-confidence choice is ambiguous")
        win = (conf_max < conf_min.unsqueeze(1)).to(torch.float64)
        return prod_commit * (conf.prod(-1) * win).sum(-1)

    # --- exact objective, gradient, value --------------------------------------------------------------------
    def objective(self, remasking: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(J, P)``: ``J = sum_tau P(tau) r(tau)`` (scalar, differentiable) and ``P`` ``[N]`` (differentiable)."""
        prob = self.step_probs(remasking).prod(-1)
        return (prob * self.rewards).sum(), prob

    def exact_gradient(self, remasking: str) -> tuple[float, torch.Tensor, torch.Tensor]:
        """``(J, grad J [D], P [N] detached)`` with ``D`` the flattened parameter count."""
        J, prob = self.objective(remasking)
        total = prob.sum().item()
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"trajectory probabilities under {remasking!r} sum to {total!r}, not 1")
        grads = torch.autograd.grad(J, self.params)
        return J.item(), flat(grads), prob.detach()

    def state_values(self, prob: torch.Tensor) -> torch.Tensor:
        """``[N, T]``: ``V(S_j) = E[r | S_j] = sum_{tau' through S_j} P r / sum P`` (0 for unreachable states)."""
        keys = torch.cat([torch.arange(self.T).repeat(self.N).view(-1, 1),
                          self.states[:, :self.T].reshape(-1, self.L)], dim=1)
        _, inverse = torch.unique(keys, dim=0, return_inverse=True)
        w = prob.detach().repeat_interleave(self.T)
        mass = torch.zeros(int(inverse.max()) + 1, dtype=torch.float64).index_add_(0, inverse, w)
        reward_mass = torch.zeros_like(mass).index_add_(0, inverse, w * self.rewards.repeat_interleave(self.T))
        value = torch.where(mass > 0, reward_mass / mass.clamp_min(1e-300), torch.zeros_like(mass))
        return value[inverse].view(self.N, self.T)

    def exact_step_scores(self, remasking: str, chunk_rows: int = 512) -> torch.Tensor:
        """``[N, T, D]``: ``grad log P(S_{j+1} | S_j)`` of the exact transition (0 where the step has P = 0),
        computed over chunks of about ``chunk_rows`` (trajectory, step) rows."""
        out = []
        for idx in trajectory_chunks(self.N, self.T, chunk_rows):
            step_p = self.step_probs(remasking, idx)
            jac = row_jacobian(step_p.reshape(-1), self.params).view(len(idx), self.T, -1)
            p = step_p.detach().unsqueeze(-1)
            out.append(torch.where(p > 0, jac / p.clamp_min(1e-300), torch.zeros_like(jac)))
        return torch.cat(out)

    # --- the library's view --------------------------------------------------------------------------------
    def rollout(self, remasking: str | None = None):
        """A ``Rollout`` holding every enumerated trajectory (fields as the sampler records them)."""
        from dataclasses import replace

        from egspo.core.sampler import Rollout

        config = self.config if remasking is None else replace(self.config, remasking=remasking)
        with torch.no_grad():
            t = self.terms()
        return Rollout(prompt_ids=self.prompt.expand(self.N, -1).clone(),
                       prompt_mask=torch.ones(self.N, len(self.prompt), dtype=torch.bool),
                       completion=self.completion.clone(), commit_step=self.commit_step.clone(),
                       token_logprobs=t.token_logprobs, step_logprobs=t.step_logprobs,
                       step_entropy=t.step_entropy, greedy_fill=t.greedy_fill, config=config)

    def trajectory_index(self, completion: torch.Tensor, commit_step: torch.Tensor) -> torch.Tensor:
        """Index into the enumeration of each sampled ``(completion, commit_step)`` row (ValueError if absent)."""
        lookup = {(tuple(x), tuple(c)): i for i, (x, c) in
                  enumerate(zip(self.completion.tolist(), self.commit_step.tolist()))}
        out = []
        for x, c in zip(completion.tolist(), commit_step.tolist()):
            key = (tuple(x), tuple(c))
            if key not in lookup:
                raise ValueError(f"sampled trajectory completion={x} commit_step={c} is not in the enumeration")
            out.append(lookup[key])
        return torch.tensor(out, dtype=torch.long)


def trajectory_chunks(n: int, steps: int, chunk_rows: int) -> list[torch.Tensor]:
    """Consecutive index blocks of the ``n`` trajectories holding about ``chunk_rows`` (trajectory, step) rows."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    per = max(1, chunk_rows // steps)
    return [torch.arange(start, min(start + per, n)) for start in range(0, n, per)]


def row_jacobian(values: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[M, D]``: gradient of every entry of ``values`` ``[M]`` with respect to the flattened ``params``."""
    m = values.shape[0]
    eye = torch.eye(m, dtype=values.dtype)
    grads = torch.autograd.grad(values, list(params), grad_outputs=eye, is_grads_batched=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros(m, *p.shape, dtype=values.dtype)).reshape(m, -1)
                      for g, p in zip(grads, params)], dim=1)


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def chi2_sf(stat: float, dof: int) -> float:
    """Upper tail ``P(chi2_dof >= stat)`` via the regularised incomplete gamma function."""
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))
