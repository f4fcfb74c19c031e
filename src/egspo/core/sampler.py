"""Masked-diffusion generation (LLaDA's semi-autoregressive block decoding) with trajectory capture.

Steps are indexed forward: step ``j = 0 .. T-1`` maps state ``S_j`` to ``S_{j+1}``; ``S_0`` is the prompt plus L
mask tokens and ``S_T`` the completion (the paper's ``s_t`` is ``S_{T-t}``). ``U_j`` is the set of positions
committed at step ``j``.

At step ``j`` (block ``b = j // (T / n_blocks)``) one forward pass on ``S_j`` gives logits ``z_i`` at every position.
For every still-masked position ``i`` of block ``b`` a token is drawn by Gumbel-max,
``x_i = argmax_v (z_iv / tau + g_iv)`` with ``g ~ Gumbel(0, 1)`` (``x_i = argmax_v z_iv`` at ``tau = 0``), and the
``k_j`` positions to commit are

* ``low_confidence``: the ``k_j`` largest ``p_theta(x_i | S_j) = softmax(z_i)[x_i]`` (temperature 1, as in LLaDA),
* ``random``: ``k_j`` of the block's masked positions uniformly at random.

What is kept per trajectory is O(T*L) integers and O(T) floats: the step at which each position was committed, the
chosen-token log-probability ``log softmax(z_i)[x_i]`` at its commit step, ``log pi(S_{j+1} | S_j) = sum_{i in U_j}``
of those, the step entropy ``H_j = mean_{i in U_j} H(softmax(z_i))`` and (optionally) the greedy fill
``x_hat(S_j)`` (argmax at every masked position of ``S_j``, committed tokens kept), all from the same forward pass.
No full-vocabulary distribution outlives its step.

Which positions are masked is tracked by the commit steps, never by comparing tokens with the mask id, so a token
equal to the mask id that the model happens to sample is committed like any other (the model then sees it as a mask,
exactly as in LLaDA's sampler).

Authors-exact switches (docs/fidelity.md): ``attend_to_pads`` calls the model without an attention mask, so left pads
are attended; ``entropy_eps`` computes ``H = -sum_v p_v log(p_v + eps)`` (the authors use 1e-8);
``gumbel_in_model_dtype`` draws the noise and forms ``exp(z) / (-log u)^tau`` in the logits' dtype (bf16 on their
GPUs) instead of ``log p - tau log(-log u)`` in float32/float64. ``generate(uniforms=...)`` injects the uniforms.

How the model is called (device, attention mask, logits check, prompt padding) is `egspo.core.model_calls`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from egspo.core.constraints import REMASKING_METHODS, steps_per_block
from egspo.core.model_calls import (
    check_mask_id,
    forward_logits,
    model_device,
    needs_attention_mask,
    pad_prompts,
    score_dtype,
)


@dataclass(frozen=True)
class SamplerConfig:
    """Generation settings. ``steps`` (T) must be a multiple of the number of blocks ``gen_length // block_length``
    and give every step at least one token (``T / n_blocks <= block_length``)."""

    gen_length: int
    steps: int
    block_length: int
    mask_token_id: int
    temperature: float = 0.0
    remasking: str = "low_confidence"
    pad_token_id: int | None = None
    eos_token_id: int | None = None
    attend_to_pads: bool = False
    entropy_eps: float = 0.0
    gumbel_in_model_dtype: bool = False

    def __post_init__(self) -> None:
        step_schedule(self.gen_length, self.steps, self.block_length)  # validates the three lengths
        if not isinstance(self.mask_token_id, int) or self.mask_token_id < 0:
            raise ValueError(f"mask_token_id must be a non-negative int, got {self.mask_token_id!r}")
        if not (self.temperature >= 0.0) or self.temperature == float("inf"):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.remasking not in REMASKING_METHODS:
            raise ValueError(f"remasking must be one of {REMASKING_METHODS}, got {self.remasking!r}")
        if self.pad_token_id is not None and self.pad_token_id < 0:
            raise ValueError(f"pad_token_id must be >= 0 or None, got {self.pad_token_id!r}")
        if not (0.0 <= self.entropy_eps < 1.0):
            raise ValueError(f"entropy_eps must lie in [0, 1), got {self.entropy_eps!r}")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks

    @property
    def pad_id(self) -> int:
        """Token used for left padding of prompts (the mask id when ``pad_token_id`` is None)."""
        return self.mask_token_id if self.pad_token_id is None else self.pad_token_id


def step_schedule(gen_length: int, steps: int, block_length: int) -> torch.LongTensor:
    """Tokens committed per step, ``[T]``: each of the ``L / B`` blocks gets ``T / (L / B)`` consecutive steps and
    its B tokens are spread over them as evenly as possible, the remainder going to the first steps of the block.

    Example: L=10, B=5, T=6 -> blocks of 3 steps committing 5 = 2+2+1 tokens: ``[2, 2, 1, 2, 2, 1]``.
    """
    per_block = steps_per_block(gen_length, steps, block_length)  # the rule's checks (egspo.core.constraints)
    num_blocks = gen_length // block_length
    base, remainder = divmod(block_length, per_block)
    block = torch.full((per_block,), base, dtype=torch.long)
    block[:remainder] += 1
    return block.repeat(num_blocks)


@dataclass
class Rollout:
    """N trajectories (N = prompts x G). Shapes: P prompt length (left padded), L completion, T steps."""

    prompt_ids: torch.Tensor  # [N, P] long, left padded with config.pad_id
    prompt_mask: torch.Tensor  # [N, P] bool, True on real prompt tokens
    completion: torch.Tensor  # [N, L] long, S_T
    commit_step: torch.Tensor  # [N, L] long, step j at which each position was committed
    token_logprobs: torch.Tensor  # [N, L] float, log p_theta(x_i | S_j) at the commit step j (temperature 1)
    step_logprobs: torch.Tensor  # [N, T] float, sum over U_j of token_logprobs
    step_entropy: torch.Tensor  # [N, T] float, mean over U_j of the entropy of p_theta(. | S_j)
    greedy_fill: torch.Tensor | None  # [N, T, L] long, x_hat(S_j)
    config: SamplerConfig = field(repr=False)

    def __len__(self) -> int:
        return self.completion.shape[0]

    def state(self, j: int) -> torch.Tensor:
        """Completion part of ``S_j``, ``[N, L]``: committed tokens where ``commit_step < j``, the mask id elsewhere."""
        T = self.config.steps
        if not 0 <= int(j) <= T:
            raise ValueError(f"state index j must be in [0, {T}], got {j!r}")
        return torch.where(self.commit_step < int(j), self.completion, self.config.mask_token_id)

    def states(self) -> torch.Tensor:
        """All states ``S_0 .. S_T`` (completion part), ``[N, T+1, L]``."""
        js = torch.arange(self.config.steps + 1, device=self.completion.device).view(1, -1, 1)
        done = self.commit_step.unsqueeze(1) < js
        return torch.where(done, self.completion.unsqueeze(1), self.config.mask_token_id)

    def unmasked(self, j: int) -> torch.Tensor:
        """``U_j`` as a bool mask ``[N, L]``."""
        T = self.config.steps
        if not 0 <= int(j) < T:
            raise ValueError(f"step index j must be in [0, {T - 1}], got {j!r}")
        return self.commit_step == int(j)

    def to(self, device) -> Rollout:
        moved = {
            name: (getattr(self, name).to(device) if getattr(self, name) is not None else None)
            for name in _TENSOR_FIELDS
        }
        return replace(self, **moved)

    def index_select(self, idx) -> Rollout:
        """Sub-batch of rows ``idx`` (a LongTensor, list of ints or bool mask), in that order."""
        idx = torch.as_tensor(idx, device=self.completion.device)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().squeeze(1)
        picked = {
            name: (getattr(self, name).index_select(0, idx) if getattr(self, name) is not None else None)
            for name in _TENSOR_FIELDS
        }
        return replace(self, **picked)


_TENSOR_FIELDS = (
    "prompt_ids",
    "prompt_mask",
    "completion",
    "commit_step",
    "token_logprobs",
    "step_logprobs",
    "step_entropy",
    "greedy_fill",
)


# ---- generation ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model,
    prompt_ids: Sequence[Sequence[int]] | torch.Tensor,
    config: SamplerConfig,
    *,
    generator: torch.Generator | None = None,
    record_greedy_fill: bool = True,
    prompt_mask: torch.Tensor | None = None,
    uniforms: torch.Tensor | None = None,
) -> Rollout:
    """Generate one completion per prompt row with T forward passes of the whole batch; returns the trajectories.

    ``prompt_ids``: a list of token-id lists (left padded here) or a ``[N, P]`` tensor (with ``prompt_mask`` marking
    real tokens when it is padded). ``generator`` drives the Gumbel noise and random remasking (on the model's
    device). Repeat a prompt G times in ``prompt_ids`` for a group of G completions. ``uniforms`` ``[N, T, L, V]``
    (values in (0, 1)) replaces the Gumbel draws: step ``j`` uses ``uniforms[n, j, i, v]`` at completion position
    ``i`` (for replaying a recorded rollout; random remasking still uses ``generator``).
    """
    ids, pmask = pad_prompts(prompt_ids, config.pad_id, prompt_mask)
    device = model_device(model, ids.device)
    ids, pmask = ids.to(device), pmask.to(device)
    N, L, T = ids.shape[0], config.gen_length, config.steps
    check_mask_id(model, config.mask_token_id)
    if uniforms is not None and (uniforms.dim() != 4 or tuple(uniforms.shape[:3]) != (N, T, L)):
        raise ValueError(f"uniforms must have shape [N={N}, T={T}, L={L}, V], got {tuple(uniforms.shape)}")
    tokens = torch.full((N, L), config.mask_token_id, dtype=torch.long, device=device)
    commit_step = torch.full((N, L), T, dtype=torch.long, device=device)  # T = "not committed yet"
    record = _Record(N, L, T, device, record_greedy_fill, _record_dtype(model))
    _denoise(model, ids, pmask, tokens, commit_step, torch.zeros(N, dtype=torch.long, device=device), config,
             generator, record, uniforms)
    return Rollout(
        prompt_ids=ids,
        prompt_mask=pmask,
        completion=tokens,
        commit_step=commit_step,
        token_logprobs=record.token_logprobs,
        step_logprobs=record.step_logprobs,
        step_entropy=record.step_entropy,
        greedy_fill=record.greedy_fill,
        config=config,
    )


@torch.no_grad()
def continue_from(
    model,
    rollout: Rollout,
    rows: torch.Tensor,
    start_steps: torch.Tensor,
    config: SamplerConfig | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Finish partial trajectories: for each ``m``, take trajectory ``rows[m]`` of ``rollout`` at state
    ``S_{start_steps[m]}`` and run steps ``start_steps[m] .. T-1`` with ``config`` (default: the rollout's; its
    lengths, steps and mask id must match). Returns the final completions ``[M, L]``.

    All M continuations run together: at step j one forward pass covers every row with ``start_steps <= j``. Rows
    with ``start_steps == T`` are returned unchanged.
    """
    config = rollout.config if config is None else config
    base = rollout.config
    for name in ("gen_length", "steps", "block_length", "mask_token_id"):
        if getattr(config, name) != getattr(base, name):
            raise ValueError(f"config.{name}={getattr(config, name)!r} differs from the rollout's {getattr(base, name)!r}")
    device = rollout.completion.device
    rows = torch.as_tensor(rows, dtype=torch.long, device=device).reshape(-1)
    start_steps = torch.as_tensor(start_steps, dtype=torch.long, device=device).reshape(-1)
    if rows.shape != start_steps.shape:
        raise ValueError(f"rows ({rows.numel()}) and start_steps ({start_steps.numel()}) must have the same length")
    if rows.numel() == 0:
        return torch.empty((0, config.gen_length), dtype=torch.long, device=device)
    if int(rows.min()) < 0 or int(rows.max()) >= len(rollout):
        raise ValueError(f"rows must index the rollout's {len(rollout)} trajectories, got range "
                         f"[{int(rows.min())}, {int(rows.max())}]")
    T = config.steps
    if int(start_steps.min()) < 0 or int(start_steps.max()) > T:
        raise ValueError(f"start_steps must lie in [0, {T}], got range [{int(start_steps.min())}, {int(start_steps.max())}]")
    commit = rollout.commit_step.index_select(0, rows)
    kept = commit < start_steps.unsqueeze(1)
    tokens = torch.where(kept, rollout.completion.index_select(0, rows), config.mask_token_id)
    commit_step = torch.where(kept, commit, torch.full_like(commit, T))
    ids = rollout.prompt_ids.index_select(0, rows)
    pmask = rollout.prompt_mask.index_select(0, rows)
    _denoise(model, ids, pmask, tokens, commit_step, start_steps, config, generator, None)
    return tokens


def _record_dtype(model) -> torch.dtype:
    """float64 for a float64 model (exact replays), float32 otherwise."""
    try:
        return score_dtype(next(model.parameters()))
    except (StopIteration, AttributeError):
        return torch.float32


class _Record:
    """Per-trajectory outputs of `generate` (not used by `continue_from`)."""

    def __init__(self, N: int, L: int, T: int, device, greedy: bool, dtype: torch.dtype = torch.float32) -> None:
        self.token_logprobs = torch.zeros((N, L), dtype=dtype, device=device)
        self.step_logprobs = torch.zeros((N, T), dtype=dtype, device=device)
        self.step_entropy = torch.zeros((N, T), dtype=dtype, device=device)
        self.greedy_fill = torch.zeros((N, T, L), dtype=torch.long, device=device) if greedy else None


def _gumbel_pick(logits_at, logp, tau, config, generator, uniforms):
    """Gumbel-max draw ``[n, m]`` at temperature ``tau > 0`` from logits ``[n, m, V]`` (``logp`` their log-softmax).

    Default: ``argmax_v log p_v - tau log(-log u_v)`` in logp's dtype (= argmax ``z_v / tau + g_v``). With
    ``config.gumbel_in_model_dtype``: the authors' form ``argmax_v exp(z_v) / (-log u_v)^tau`` with ``u`` and the
    arithmetic in the logits' own dtype (bf16 for a bf16 model)."""
    if config.gumbel_in_model_dtype:
        dtype = logits_at.dtype
        u = (torch.rand(logits_at.shape, generator=generator, device=logits_at.device, dtype=dtype)
             if uniforms is None else uniforms.to(dtype))
        return (logits_at.exp() / (-torch.log(u)) ** tau).max(-1).indices
    if uniforms is None:
        noise = torch.rand(logp.shape, generator=generator, device=logp.device, dtype=logp.dtype)
    else:
        noise = uniforms.to(logp.dtype).clone()
    noise.log_().neg_().log_()  # log(-log u) = -g
    return torch.add(logp, noise, alpha=-tau, out=noise).max(-1).indices


def _denoise(model, prompt_ids, prompt_mask, tokens, commit_step, start_steps, config, generator, record,
             uniforms=None) -> None:
    """Run steps ``min(start_steps) .. T-1`` in place on ``tokens``/``commit_step`` (``commit_step == T`` marks a
    masked position). Row n takes part in step j iff ``start_steps[n] <= j``. ``uniforms``: see `generate`."""
    N, P = prompt_ids.shape
    L, T, B = config.gen_length, config.steps, config.block_length
    device = tokens.device
    schedule = step_schedule(L, T, B).tolist()
    per_block = config.steps_per_block
    tau = float(config.temperature)
    # an all-ones attention mask is the same as none: pass it only when some prompt is padded (checked once)
    use_mask = not config.attend_to_pads and needs_attention_mask(model, prompt_mask)
    x = torch.cat([prompt_ids, tokens], dim=1)  # [N, P+L] the model input S_j
    attention = torch.cat([prompt_mask, torch.ones((N, L), dtype=torch.bool, device=device)], dim=1)
    starts = start_steps.tolist()  # host copy: no device synchronisation inside the loop
    vocab_checked = False
    for j in range(min(starts), T):
        active = [n for n, s in enumerate(starts) if s <= j]
        rows = None if len(active) == N else torch.tensor(active, dtype=torch.long, device=device)
        x_in = x if rows is None else x.index_select(0, rows)
        att_in = attention if rows is None else attention.index_select(0, rows)
        masked = (commit_step if rows is None else commit_step.index_select(0, rows)) == T  # [n, L]
        logits = forward_logits(model, x_in, att_in if use_mask else None, use_mask)  # [n, P+L, V]
        V = logits.shape[-1]
        if not vocab_checked:
            check_mask_id(model, config.mask_token_id, V)
            vocab_checked = True
        n = x_in.shape[0]
        k = schedule[j]
        block_start = (j // per_block) * per_block
        lo = (j // per_block) * B
        # Masked positions of the current block: every row has the same number m, known from the shared schedule;
        # a stable sort puts them first, in ascending order.
        m = B - sum(schedule[block_start:j])
        cand = masked[:, lo : lo + B]
        positions = torch.sort((~cand).to(torch.uint8), dim=1, stable=True).indices[:, :m] + lo  # [n, m]
        # log p_theta(. | S_j) at the block's masked positions, temperature 1: [n, m, V], one fused pass
        logits_at = logits[:, P:, :].gather(1, positions.unsqueeze(-1).expand(n, m, V))
        logp = torch.log_softmax(logits_at, dim=-1)
        if logp.dtype not in (torch.float32, torch.float64):
            logp = logp.float()
        if tau == 0.0:
            sampled = logp.max(-1).indices  # argmax z (max().indices: first maximum, faster than argmax on CPU)
        else:
            # Gumbel-max: the per-position log-normaliser and the factor tau > 0 do not move the argmax
            u = None
            if uniforms is not None:
                u_rows = uniforms[:, j] if rows is None else uniforms[rows.to(uniforms.device), j]
                u = u_rows.to(device).gather(1, positions.unsqueeze(-1).expand(n, m, V))
            sampled = _gumbel_pick(logits_at, logp, tau, config, generator, u)
        chosen_lp = logp.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)  # [n, m]
        if config.remasking == "low_confidence":
            confidence = chosen_lp  # log p is monotone in p = softmax(z)[x]
        else:
            confidence = torch.rand((n, m), generator=generator, device=device)
        pick = confidence.topk(k, dim=1).indices  # [n, k] indices into the m candidates
        commit_pos = positions.gather(1, pick)  # [n, k]
        commit_tok = sampled.gather(1, pick)
        if record is not None:
            lp_k = chosen_lp.gather(1, pick)
            p_k = logp.gather(1, pick.unsqueeze(-1).expand(n, k, V)).exp_()
            if config.entropy_eps > 0:
                ent_k = -(p_k * torch.log(p_k + config.entropy_eps)).sum(-1)  # the authors' H
            else:
                ent_k = torch.special.entr(p_k).sum(-1)  # H = -sum p log p, with 0 log 0 = 0
            del p_k
            dest = slice(None) if rows is None else rows
            if rows is None:
                record.token_logprobs.scatter_(1, commit_pos, lp_k.to(record.token_logprobs.dtype))
            else:
                record.token_logprobs[rows.unsqueeze(1), commit_pos] = lp_k.to(record.token_logprobs.dtype)
            record.step_logprobs[dest, j] = lp_k.sum(1).to(record.step_logprobs.dtype)
            record.step_entropy[dest, j] = ent_k.mean(1).to(record.step_entropy.dtype)
            if record.greedy_fill is not None:
                # x_hat(S_j): blocks before the current one are complete, so only positions >= lo can be masked
                greedy = logits[:, P + lo :, :].max(-1).indices  # [n, L - lo]
                fill = x_in[:, P:].clone()
                fill[:, lo:] = torch.where(masked[:, lo:], greedy, fill[:, lo:])
                record.greedy_fill[dest, j] = fill
        del logits, logp
        if rows is None:
            x.scatter_(1, commit_pos + P, commit_tok)
            commit_step.scatter_(1, commit_pos, j)
        else:
            x[rows.unsqueeze(1), commit_pos + P] = commit_tok
            commit_step[rows.unsqueeze(1), commit_pos] = j
    tokens.copy_(x[:, P:])
