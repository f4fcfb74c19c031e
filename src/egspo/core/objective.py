"""Per-step log-probabilities, the clipped surrogate, KL penalties and the diffu-GRPO (d1) estimator.

Step indexing as in `egspo.core.sampler`: step ``j`` maps ``S_j`` to ``S_{j+1}`` by committing ``U_j``. The per-step
policy is ``log pi_theta(S_{j+1} | S_j) = sum_{i in U_j} log p_theta(x_i | S_j)`` (``reduction="mean"`` divides by
``|U_j|``), scored from one forward pass on ``S_j`` at temperature 1.

Reductions (documented choices):

* ``clipped_surrogate`` works per row (one row = one selected step of one trajectory) with a *sequence-level* ratio
  ``rho = exp(logpi_theta - logpi_old)`` of the step's (summed or mean) log-probability; it returns the loss per row.
* ``kl_k3`` / ``kl_exact`` return per row the mean over ``U_j`` of a per-token KL (0 for a row without targets;
  ``step_batch`` never makes one, every step commits at least one token).
* ``egspo_loss`` averages ``(clipped + beta * kl) / scale`` over the valid rows.

Authors-exact forms (docs/fidelity.md; egspo_trainer.py at a7d618b, lines 106-146): ``kl_k3_step`` is k3 of the
step's *summed* log-prob difference, ``kl_exact(..., reduction="sum", log_eps=1e-10)`` the exact KL summed over
``U_j`` with both logs taken as ``log(softmax + 1e-10)``, and ``scale = L // T`` (tokens per step).
* ``d1_grpo_loss`` follows d1 (``diffu_grpo_trainer.py`` line 121 at 837888f): per-token clipped loss + ``beta * k3``
  pooled over the micro-batch, ``sum_{n,i} m_ni l_ni / sum_{n,i} m_ni`` (one token count for all completions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from egspo.core.constraints import STEP_REDUCTIONS
from egspo.core.model_calls import (
    accepts_attention_mask,
    forward_logits,
    model_device,
    needs_attention_mask,
    score_dtype,
)
from egspo.core.sampler import Rollout, step_schedule


@dataclass
class StepBatch:
    """Selected states of a rollout, flattened to M = N*K rows (row ``n*K + k`` is trajectory n, selection k)."""

    input_ids: torch.Tensor  # [M, P+L] long: prompt + S_j
    attention_mask: torch.Tensor  # [M, P+L] bool
    target_mask: torch.Tensor  # [M, L] bool: U_j
    targets: torch.Tensor  # [M, L] long: final tokens (read where target_mask)
    old_logprobs: torch.Tensor  # [M, L] float: rollout token_logprobs on U_j, 0 elsewhere
    row_index: torch.Tensor  # [M] long: trajectory n of each row
    step_index: torch.Tensor  # [M] long: step j of each row
    max_targets: int = 0  # an upper bound on |U_j| per row known on the host (0: unknown, counted when needed)
    has_padding: bool | None = None  # whether any prompt is padded (None: checked when needed)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def gen_length(self) -> int:
        return self.target_mask.shape[1]

    def to(self, device) -> StepBatch:
        return StepBatch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})

    def rows(self, idx) -> StepBatch:
        """Sub-batch of rows ``idx``."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.input_ids.device)
        return StepBatch(
            **{k: (v.index_select(0, idx) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        )


def step_batch(rollout: Rollout, steps: torch.Tensor) -> StepBatch:
    """Flatten the states ``S_{steps[n, k]}`` of ``rollout`` (``steps`` is ``[N, K]`` or ``[N]``) into a StepBatch."""
    N, L, T = len(rollout), rollout.config.gen_length, rollout.config.steps
    device = rollout.completion.device
    steps = torch.as_tensor(steps, dtype=torch.long, device=device)
    if steps.dim() == 1:
        steps = steps.unsqueeze(1)
    if steps.dim() != 2 or steps.shape[0] != N:
        raise ValueError(f"steps must have shape [N={N}, K] or [N], got {tuple(steps.shape)}")
    if steps.numel() and (int(steps.min()) < 0 or int(steps.max()) >= T):
        raise ValueError(f"steps must lie in [0, {T - 1}], got range [{int(steps.min())}, {int(steps.max())}]")
    K = steps.shape[1]
    row_index = torch.arange(N, device=device).repeat_interleave(K)
    step_index = steps.reshape(-1)
    commit = rollout.commit_step.index_select(0, row_index)  # [M, L]
    completion = rollout.completion.index_select(0, row_index)
    state = torch.where(commit < step_index.unsqueeze(1), completion, rollout.config.mask_token_id)
    target_mask = commit == step_index.unsqueeze(1)
    prompt_ids = rollout.prompt_ids.index_select(0, row_index)
    prompt_mask = rollout.prompt_mask.index_select(0, row_index)
    old = torch.where(target_mask, rollout.token_logprobs.index_select(0, row_index), 0.0)
    return StepBatch(
        input_ids=torch.cat([prompt_ids, state], dim=1),
        attention_mask=torch.cat([prompt_mask, torch.ones_like(target_mask)], dim=1),
        target_mask=target_mask,
        targets=completion,
        old_logprobs=old,
        row_index=row_index,
        step_index=step_index,
        max_targets=int(step_schedule(L, T, rollout.config.block_length).max()),
        has_padding=not bool(rollout.prompt_mask.all()),
    )


def token_logprobs(model, batch: StepBatch, micro_batch: int | None = None, return_logits_at_targets: bool = False,
                   attend_to_pads: bool = False):
    """``log p_theta(x_i | S_j)`` for every target position, ``[M, L]`` (0 off ``target_mask``), by batched forwards
    over chunks of ``micro_batch`` rows (all rows at once when None). Gradients flow when grad is enabled.
    ``attend_to_pads``: call the model without an attention mask (the authors' forward; left pads are attended).

    With ``return_logits_at_targets`` also returns the logits at the target positions packed as ``[S, V]`` in the
    row-major order of ``batch.target_mask.nonzero()`` (S = number of targets), for `kl_exact`.
    """
    M = len(batch)
    if micro_batch is not None and micro_batch <= 0:
        raise ValueError(f"micro_batch must be a positive int or None, got {micro_batch!r}")
    chunk = M if micro_batch is None else micro_batch
    device = model_device(model, batch.input_ids.device)
    padded = batch.has_padding if batch.has_padding is not None else not bool(batch.attention_mask.all())
    pass_mask = padded and not attend_to_pads and accepts_attention_mask(model)
    L = batch.gen_length
    # Gather a fixed number of positions per row (the targets and, in rows with fewer, some non-targets that are
    # zeroed): no data-dependent shapes, so no host-device synchronisation in the loop.
    kmax = batch.max_targets if batch.max_targets > 0 else int(batch.target_mask.sum(1).max())
    kmax = max(1, min(kmax, L))
    pieces, packed = [], []
    for start in range(0, M, chunk):
        sl = slice(start, min(start + chunk, M))
        ids = batch.input_ids[sl].to(device)
        tmask = batch.target_mask[sl].to(device)
        logits = forward_logits(model, ids, batch.attention_mask[sl].to(device), pass_mask)
        V = logits.shape[-1]
        pos = tmask.to(torch.float32).topk(kmax, dim=1, sorted=False).indices.sort(dim=1).values  # [c, kmax]
        valid = tmask.gather(1, pos)
        at_pos = logits[:, -L:, :].gather(1, pos.unsqueeze(-1).expand(-1, -1, V))
        at_pos = at_pos.to(score_dtype(at_pos))  # [c, kmax, V]
        targets = batch.targets[sl].to(device).gather(1, pos)
        lp = torch.log_softmax(at_pos, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        lp = torch.where(valid, lp, torch.zeros((), dtype=lp.dtype, device=device))
        pieces.append(torch.zeros(tmask.shape, dtype=lp.dtype, device=device).scatter(1, pos, lp))
        if return_logits_at_targets:
            packed.append(at_pos[valid])  # row-major, positions ascending: the order of target_mask.nonzero()
    result = torch.cat(pieces, dim=0) if pieces else torch.zeros((0, L), device=device)
    if return_logits_at_targets:
        return result, torch.cat(packed, dim=0)
    return result


def step_logprob(token_lp: torch.Tensor, target_mask: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """``log pi(S_{j+1} | S_j)`` per row ``[M]``: sum over ``U_j`` (``"mean"``: divided by ``|U_j|``)."""
    if reduction not in STEP_REDUCTIONS:
        raise ValueError(f"reduction must be one of {STEP_REDUCTIONS}, got {reduction!r}")
    mask = target_mask.to(token_lp.dtype)
    total = (token_lp * mask).sum(-1)
    if reduction == "sum":
        return total
    return total / mask.sum(-1).clamp_min(1.0)  # a row without targets (never made by step_batch) gives 0


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, eps_low: float = 0.2, eps_high: float = 0.5
) -> torch.Tensor:
    """PPO loss per row: ``-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)``, ``rho = exp(logp - old_logp)``."""
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low!r}, eps_high={eps_high!r}")
    advantages = advantages.to(logp.dtype)
    rho = torch.exp(logp - old_logp)
    clipped = torch.clamp(rho, 1.0 - eps_low, 1.0 + eps_high)
    return -torch.minimum(rho * advantages, clipped * advantages)


def _masked_row_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` per row; a row with no positions gives 0 (it has nothing to penalise).
    Written without a data-dependent check so that it never synchronises with the device."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(pi_theta || pi_ref) per row: mean over ``mask`` of ``exp(d) - d - 1``, ``d = ref - logp``
    (token log-probs ``[M, L]``; unbiased for the per-token KL when the tokens are drawn from pi_theta)."""
    d = torch.where(mask, ref_logp - logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
    return _masked_row_mean(torch.exp(d) - d - 1.0, mask)


def kl_k3_step(step_logp: torch.Tensor, ref_step_logp: torch.Tensor) -> torch.Tensor:
    """The authors' k3 per row ``[M]``: ``exp(d) - d - 1`` with ``d = log pi_ref(S_{j+1}|S_j) - log pi(S_{j+1}|S_j)``,
    the difference of the *summed* step log-probs (k3 of the joint step distribution, not a per-token mean)."""
    d = ref_step_logp - step_logp
    return torch.exp(d) - d - 1.0


KL_REDUCTIONS = ("mean", "sum")


def kl_exact(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor, reduction: str = "mean",
             log_eps: float = 0.0) -> torch.Tensor:
    """Exact ``KL(pi_theta || pi_ref) = sum_v p log(p / q)`` per target position, averaged (``reduction="mean"``) or
    summed (``"sum"``: the KL of the step's joint distribution) over ``mask`` per row ``[M]``. ``logits``/
    ``ref_logits`` are either ``[M, L, V]`` or packed ``[S, V]`` at ``mask.nonzero()``. ``log_eps > 0`` takes both
    logs as ``log(softmax + log_eps)`` and ``p = softmax + log_eps`` (the authors' 1e-10)."""
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
    if logits.shape != ref_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and ref_logits {tuple(ref_logits.shape)} differ in shape")
    if logits.dim() == 3:
        logits, ref_logits = logits[mask], ref_logits[mask]
    if logits.shape[0] != int(mask.sum()):
        raise ValueError(f"packed logits have {logits.shape[0]} rows but mask selects {int(mask.sum())} positions")
    dtype = score_dtype(logits)
    if log_eps > 0:
        logp = torch.log(torch.softmax(logits.to(dtype), -1) + log_eps)
        logq = torch.log(torch.softmax(ref_logits.to(dtype), -1) + log_eps)
    else:
        logp = torch.log_softmax(logits.to(dtype), -1)
        logq = torch.log_softmax(ref_logits.to(dtype), -1)
    p = logp.exp()
    per_pos = torch.where(p > 0, p * (logp - logq), torch.zeros((), dtype=dtype, device=p.device)).sum(-1)
    full = torch.zeros(mask.shape, dtype=dtype, device=p.device).masked_scatter(mask, per_pos)
    if reduction == "sum":
        return full.sum(-1)
    return _masked_row_mean(full, mask)


KL_ESTIMATORS = ("k3", "exact")
KL_FORMS = ("token_mean", "step_sum")


def step_kl(estimator: str, form: str, tok_lp: torch.Tensor, ref_tok_lp: torch.Tensor | None, mask: torch.Tensor,
            logits: torch.Tensor | None = None, ref_logits: torch.Tensor | None = None,
            log_eps: float = 0.0) -> torch.Tensor:
    """KL penalty per row ``[M]`` of one selected step. ``form="token_mean"``: `kl_k3` (per-token k3 of
    ``tok_lp``/``ref_tok_lp`` ``[M, L]``) or `kl_exact` averaged over ``U_j``; ``form="step_sum"`` (the authors'):
    `kl_k3_step` of the summed step log-probs or `kl_exact` summed over ``U_j``. ``exact`` needs the (packed)
    ``logits``/``ref_logits`` of `token_logprobs(..., return_logits_at_targets=True)`."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    if form not in KL_FORMS:
        raise ValueError(f"kl_form must be one of {KL_FORMS}, got {form!r}")
    if estimator == "exact":
        if logits is None or ref_logits is None:
            raise ValueError("the exact KL needs logits and ref_logits at the target positions")
        return kl_exact(logits, ref_logits, mask, "sum" if form == "step_sum" else "mean", log_eps)
    if ref_tok_lp is None:
        raise ValueError("the k3 KL needs the reference token log-probs")
    if form == "step_sum":
        return kl_k3_step(step_logprob(tok_lp, mask), step_logprob(ref_tok_lp, mask))
    return kl_k3(tok_lp, ref_tok_lp, mask)


def egspo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    kl: torch.Tensor | None = None,
    *,
    beta: float = 0.04,
    eps_low: float = 0.2,
    eps_high: float = 0.5,
    valid: torch.Tensor | None = None,
    normalizer: float | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Mean over valid rows of ``(clipped_surrogate(logp, old_logp, A) + beta * kl) / scale`` (inputs per row
    ``[M]``; the authors' ``scale`` is the tokens per step ``L // T``).

    ``normalizer`` replaces the count of valid rows in the denominator: the trainer scores an optimizer step's rows
    in pieces (and processes), each piece's loss being its valid rows' sum divided by the step's total count."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    per_row = clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high)
    if kl is not None and beta != 0.0:
        per_row = per_row + beta * kl
    per_row = per_row / scale
    if valid is None and normalizer is None:
        return per_row.mean()
    weight = torch.ones_like(per_row) if valid is None else valid.reshape(per_row.shape).to(per_row.dtype)
    if normalizer is not None:
        if not normalizer > 0:
            raise ValueError(f"normalizer must be positive, got {normalizer!r}")
        return (per_row * weight).sum() / normalizer
    if float(weight.sum()) == 0.0:
        raise ValueError("valid selects no rows")
    return (per_row * weight).sum() / weight.sum()


# ---- diffu-GRPO (d1) -----------------------------------------------------------------------------------------------


def d1_mask_prompt(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    mask_token_id: int,
    p_mask_prompt: float,
    generator: torch.Generator | None = None,
    *,
    mask_pads: bool = False,
    uniforms: torch.Tensor | None = None,
) -> torch.Tensor:
    """d1's prompt noise: each real prompt token (``prompt_mask``) independently replaced by the mask id with
    probability ``p_mask_prompt``, one uniform draw per position from ``generator`` on ``prompt_ids``'s device.
    d1's exact form (``forward_process``, diffu_grpo_trainer.py at 837888f): ``mask_pads`` lets left pads be masked
    too; ``uniforms`` ``[N, P]`` replaces the draws (a recorded run)."""
    if not 0.0 <= p_mask_prompt <= 1.0:
        raise ValueError(f"p_mask_prompt must lie in [0, 1], got {p_mask_prompt!r}")
    if uniforms is None:
        draw = torch.rand(prompt_ids.shape, generator=generator, device=prompt_ids.device)
    elif tuple(uniforms.shape) != tuple(prompt_ids.shape):
        raise ValueError(f"uniforms must have the prompt's shape {tuple(prompt_ids.shape)}, "
                         f"got {tuple(uniforms.shape)}")
    else:
        draw = uniforms.to(prompt_ids.device)
    hide = draw < p_mask_prompt
    if not mask_pads:
        hide = hide & prompt_mask.to(prompt_ids.device).bool()
    return torch.where(hide, mask_token_id, prompt_ids)


def d1_completion_logprobs(
    model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion: torch.Tensor, mask_token_id: int,
    attend_to_pads: bool = False,
) -> torch.Tensor:
    """Per-token ``log p_theta(x_i | prompt, fully masked completion)`` ``[N, L]`` from one forward pass; the prompt
    is used as given (already noised by `d1_mask_prompt` where wanted). ``attend_to_pads``: no attention mask (d1)."""
    if completion.dim() != 2 or prompt_ids.dim() != 2 or prompt_ids.shape[0] != completion.shape[0]:
        raise ValueError(
            f"prompt_ids [N, P] and completion [N, L] must share N, got {tuple(prompt_ids.shape)} and "
            f"{tuple(completion.shape)}"
        )
    device = model_device(model, completion.device)
    prompt_ids, prompt_mask, completion = prompt_ids.to(device), prompt_mask.to(device).bool(), completion.to(device)
    N, L = completion.shape
    ids = torch.cat([prompt_ids, torch.full_like(completion, mask_token_id)], dim=1)
    attention = torch.cat([prompt_mask, torch.ones((N, L), dtype=torch.bool, device=device)], dim=1)
    pass_mask = not attend_to_pads and needs_attention_mask(model, prompt_mask)
    logits = forward_logits(model, ids, attention, pass_mask)[:, -L:, :]
    logits = logits.to(score_dtype(logits))
    return torch.log_softmax(logits, -1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)


def d1_sequence_logprobs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion: torch.Tensor,
    mask_token_id: int,
    p_mask_prompt: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """d1's one-step estimate of per-token log-probs ``[N, L]``: a fresh `d1_mask_prompt` draw, then
    `d1_completion_logprobs` (completion fully masked, one forward)."""
    device = model_device(model, completion.device)
    noisy = d1_mask_prompt(prompt_ids.to(device), prompt_mask, mask_token_id, p_mask_prompt, generator)
    return d1_completion_logprobs(model, noisy, prompt_mask, completion, mask_token_id)


def eos_completion_mask(completion: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """``[N, L]`` bool: True up to and including the first EOS of each row (all True without EOS), as in d1/TRL."""
    N, L = completion.shape
    if eos_token_id is None:
        return torch.ones_like(completion, dtype=torch.bool)
    is_eos = completion == eos_token_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full((N,), L - 1, device=completion.device))
    return torch.arange(L, device=completion.device).unsqueeze(0) <= first.unsqueeze(1)


def d1_grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    *,
    beta: float = 0.04,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> torch.Tensor:
    """diffu-GRPO loss: per token ``-min(rho_i A, clip(rho_i, 1-eps_low, 1+eps_high) A) + beta * k3_i`` with
    ``rho_i = exp(logp_i - old_logp_i)``, pooled over the micro-batch as d1 does: ``sum_{n,i} m_ni l_ni / sum m_ni``
    (a long completion weighs more than a short one; not the per-completion mean). ``logp``/``old_logp``/``ref_logp``/
    ``completion_mask`` are ``[N, L]``, ``advantages`` ``[N]``; an all-zero mask gives 0."""
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low!r}, eps_high={eps_high!r}")
    A = advantages.to(logp.dtype).unsqueeze(1)
    rho = torch.exp(logp - old_logp)
    per_token = -torch.minimum(rho * A, torch.clamp(rho, 1.0 - eps_low, 1.0 + eps_high) * A)
    if ref_logp is not None and beta != 0.0:
        d = ref_logp - logp
        per_token = per_token + beta * (torch.exp(d) - d - 1.0)
    mask = completion_mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)
