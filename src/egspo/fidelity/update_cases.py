"""Recompute the ``egspo_update`` and ``schedule`` cases with the library in authors mode.

``egspo_update``: replay the rollout (`egspo.fidelity.sampler_cases.replay`), select by entropy in rank order,
stepwise returns and per-column group advantages from the stored reward tables, reference / policy step log-probs
from `egspo.core.objective.token_logprobs`, the per-row loss ``(clipped + beta * KL) / (L // T)`` with
`egspo.core.objective.step_kl` in the authors' ``step_sum`` form, its mean per column and that mean's gradient.
``schedule``: `egspo.core.schedule.authors_micro_steps` against the recorded micro-steps, and the selected steps of
each rollout (greedy, all K = T steps in entropy-rank order) replayed with `model_rollout`.
"""

from __future__ import annotations

import torch

from egspo.core.advantages import group_centered, stepwise_returns
from egspo.core.objective import clipped_surrogate, egspo_loss, step_batch, step_kl, step_logprob, token_logprobs
from egspo.core.schedule import authors_micro_steps
from egspo.core.selection import select_steps
from egspo.core.semantics import semantics_for
from egspo.fidelity.compare import Comparison, compare
from egspo.fidelity.fixtures import Case, Fixture, FixtureError
from egspo.fidelity.sampler_cases import replay


def _scored(model, batch, N: int, K: int, log_eps: float):
    """Token log-probs ``[M, L]``, packed logits, step log-probs ``[N, K]`` and ``log(softmax + eps)`` at the
    targets ``[N, K, k, V]`` of one model (gradients flow when enabled)."""
    tok, logits = token_logprobs(model, batch, return_logits_at_targets=True, attend_to_pads=True)
    step = step_logprob(tok, batch.target_mask).view(N, K)
    all_lp = torch.log(torch.softmax(logits, -1) + log_eps).reshape(N, K, -1, logits.shape[-1])
    return tok, logits, step, all_lp


def check_egspo_update(fx: Fixture, case: Case) -> list[Comparison]:
    m, t, name = case.meta, case.tensors, case.name
    sem = semantics_for("authors")
    source = fx.case(str(case.get("inputs_from")).split()[0])
    G, K = int(case.get("G")), int(case.get("K"))
    prompts = case.tensor("prompt_rows").repeat_interleave(G, dim=0)
    rollout, _ = replay(fx, case, prompts, source, case.get("rollout_policy"))
    N, P, T, L = len(rollout), prompts.shape[1], rollout.config.steps, rollout.config.gen_length
    states = torch.cat([prompts.unsqueeze(1).expand(N, T + 1, P), rollout.states()], dim=2)
    out = [compare(name, "trajectory", states, t["trajectory"]),
           compare(name, "selection_entropy", rollout.step_entropy, t["selection_entropy"])]
    steps = select_steps(rollout.step_entropy, K, "entropy", column_order=sem.column_order).steps
    out.append(compare(name, "selected_steps", steps, t["selected_steps"]))
    final, baseline = case.tensor("final_reward"), case.tensor("step_reward").gather(1, steps)
    out.append(compare(name, "rewards_scored", torch.cat([baseline, final.unsqueeze(1)], 1).float(),
                       t["rewards_scored"]))
    old = rollout.step_logprobs.gather(1, steps)
    out.append(compare(name, "old_step_logprob_float64", old, t["old_step_logprob_float64"]))
    old_used = old.float() if sem.old_logprob_float32 else old
    out.append(compare(name, "old_step_logprob", old_used, t["old_step_logprob"]))
    old_used = old_used.to(old.dtype)
    batch = step_batch(rollout, steps)  # row n * K + c
    with torch.no_grad():
        ref_tok, ref_logits, ref_step, ref_all = _scored(fx.model(case.get("reference")), batch, N, K, sem.kl_log_eps)
    out += [compare(name, "ref_step_logprob", ref_step, t["ref_step_logprob"]),
            compare(name, "ref_all_token_logprobs", ref_all, t["ref_all_token_logprobs"])]
    policy = fx.model(case.get("policy"))
    tok, logits, pol_step, pol_all = _scored(policy, batch, N, K, sem.kl_log_eps)
    out += [compare(name, "policy_step_logprob", pol_step, t["policy_step_logprob"]),
            compare(name, "policy_all_token_logprobs", pol_all, t["policy_all_token_logprobs"])]
    beta, eps_low, eps_high = float(case.get("beta")), float(case.get("eps_low")), float(case.get("eps_high"))
    divisor = sem.loss_divisor(L, T)
    variants = case.get("variants")
    for v, spec in variants.items():
        lam = float(spec.get("lambda1", 0.0))
        returns = stepwise_returns(final, baseline, lam)
        adv = group_centered(returns, G)
        out += [compare(name, f"{v}/returns", returns, t[f"{v}/returns"]),
                compare(name, f"{v}/advantages", adv, t[f"{v}/advantages"])]
        estimator = "exact" if spec.get("use_exact_kl") else "k3"
        kl = step_kl(estimator, sem.kl_form, tok, ref_tok, batch.target_mask, logits, ref_logits,
                     sem.kl_log_eps).view(N, K)
        rows = (clipped_surrogate(pol_step, old_used, adv, eps_low, eps_high) + beta * kl) / divisor
        out.append(compare(name, f"{v}/row_loss", rows, t[f"{v}/row_loss"]))
        losses = [egspo_loss(pol_step[:, c], old_used[:, c], adv[:, c], kl[:, c], beta=beta, eps_low=eps_low,
                             eps_high=eps_high, scale=divisor) for c in range(K)]
        out.append(compare(name, f"{v}/loss", torch.stack(losses).detach(), t[f"{v}/loss"]))
        if f"{v}/grad" in t:  # optional: a fixture made without the reference code's backward pass has none
            grads = torch.stack([fx.flat_grad(policy, loss) for loss in losses])
            out.append(compare(name, f"{v}/grad", grads, t[f"{v}/grad"]))
    return out


def check_schedule(fx: Fixture, case: Case) -> list[Comparison]:
    t, name = case.tensors, case.name
    K, micro_n = int(case.get("K")), int(case.get("micro_steps"))
    micro = authors_micro_steps(K, int(case.get("gradient_accumulation_steps")), int(case.get("num_gradient_steps")),
                                micro_n)
    out = [compare(name, "new_rollout_made", [s.new_rollout for s in micro], t["new_rollout_made"]),
           compare(name, "rollout_used", [s.rollout for s in micro], t["rollout_used"]),
           compare(name, "column_used", [s.column for s in micro], t["column_used"]),
           compare(name, "optimizer_step_after", [s.optimizer_step_after for s in micro], t["optimizer_step_after"])]
    if "selected_steps_per_rollout" not in t:  # optional: the bookkeeping alone
        return out
    G, prompts = int(case.get("G")), case.tensor("prompts")
    if prompts.shape[0] != micro_n:
        raise FixtureError(f"{case.json_path.with_suffix('.safetensors')}: prompts has {prompts.shape[0]} rows, "
                           f"micro_steps is {micro_n}")
    if "block_length" not in case.meta:
        case.meta["block_length"] = int(case.get("L"))  # one block: the README's greedy L = T rollouts
    selected = []
    for step in micro:
        if step.new_rollout:
            rollout, _ = replay(fx, case, prompts[step.index : step.index + 1].repeat(G, 1), None,
                                case.meta.get("rollout_policy", "model_rollout"))
            selected.append(select_steps(rollout.step_entropy, K, "entropy", column_order="entropy_rank").steps)
    out.append(compare(name, "selected_steps_per_rollout", torch.stack(selected), t["selected_steps_per_rollout"]))
    return out
