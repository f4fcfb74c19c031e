"""EGSPO (``lam = 0``) and EGSPO-SA (``lam > 0``): K selected denoising steps per trajectory, trained column by column
(``update_schedule``: one optimizer step per column, or the authors' C columns per step in their order).

The algorithm's semantics come from ``cfg.semantics()`` (`egspo.core.semantics`; ``fidelity: authors`` is the authors'
code exactly, docs/fidelity.md): column order, selection variant, KL form, loss scale and the update schedule.

Choose K steps per trajectory (``selection``, entropy-guided by default). The state baseline ``b_j`` of a chosen
step is the reward of the greedy one-step fill ``x_hat(S_j)`` (``baseline: greedy``), the mean reward of M
continuations (``rollout``), or absent (``none``); returns ``R_j = (r0 + lam (r0 - b_j)) / (1 + lam)`` (``R = r0``
without a stepwise term, and then no baseline is computed); advantages ``A_j = R_j - mean_G(R_j)`` per column
(``loo``: mean of the other G-1). Reference log-probs of all N*K selected states come from one no-grad pass. Column k
uses the k-th selected state of every trajectory and `egspo.core.objective.egspo_loss`:
``mean_valid[-min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) + beta KL] / scale``,
``rho = exp(log pi_theta(S_{j+1}|S_j) - log pi_old(S_{j+1}|S_j))``, KL to pi_ref (k3 or exact; mean over U_j, or the
authors' step-summed form) and ``scale`` 1 or the authors' L // T.
"""

from __future__ import annotations

import numpy as np
import torch

from egspo.rl.updates.base import IterationResult, UpdateStrategy, clipped, row_pieces


class EGSPOUpdate(UpdateStrategy):
    """``algorithm: egspo``."""

    @property
    def uses_baseline(self) -> bool:
        """Whether EGSPO-SA's stepwise term is on (needs a state baseline b_j)."""
        return self.cfg.lam > 0 and self.cfg.baseline != "none"

    @property
    def records_greedy_fill(self) -> bool:
        return self.uses_baseline and self.cfg.baseline == "greedy"

    def advantages(self, rollout, r0: torch.Tensor, rows):
        """Selected steps, baselines b_j (or None), returns R_j [N, K] and advantages A_j [N, K]."""
        from egspo.core.advantages import greedy_baseline_rewards, group_centered, multistep_values, stepwise_returns
        from egspo.core.selection import last_content_step, select_steps

        cfg, tr = self.cfg, self.trainer
        N, K = len(rollout), cfg.k
        last = last_content_step(rollout) if cfg.restrict_to_content else None
        sem = cfg.semantics()
        sel = select_steps(rollout.step_entropy, K, cfg.selection, generator=tr.generator, last_step=last,
                           column_order=sem.column_order, variant=sem.selection_variant)
        baseline = None
        if self.uses_baseline:
            reward_fn = tr.reward_fn(rows)
            if cfg.baseline == "greedy":
                baseline = greedy_baseline_rewards(rollout, sel.steps, reward_fn).float()
            else:
                tr.policy.eval()
                baseline = multistep_values(tr.policy, rollout, sel.steps, reward_fn, cfg.rollout_m,
                                            generator=tr.generator, micro_batch=cfg.micro_batch).float()
            returns = stepwise_returns(r0, baseline, cfg.lam)
        else:
            returns = r0.unsqueeze(1).expand(N, K).clone()
        advantages = group_centered(returns, cfg.num_generations, cfg.advantage_baseline, valid=sel.valid.cpu())
        return sel, baseline, returns, advantages

    def update(self, rollout, rewards, rows, t0) -> IterationResult:
        from egspo.core.objective import egspo_loss, step_batch, step_kl, step_logprob, token_logprobs
        from egspo.core.schedule import optimizer_steps_per_rollout

        cfg, tr = self.cfg, self.trainer
        N, K = len(rollout), cfg.k
        sem = cfg.semantics()
        pads = sem.attend_to_pads
        divisor = sem.loss_divisor(cfg.gen_length, cfg.steps)
        sel, baseline, returns, advantages = self.advantages(rollout, rewards, rows)
        valid_cpu = sel.valid.cpu()
        t_rollout = tr.advantages_known(t0)

        batch = step_batch(rollout, sel.steps)  # row n*K + k
        if tr.rollout_policy.recompute_old_logprobs:
            # The rollout sampled from merged weights (rounded differently from the trained LoRA forward): pi_old of
            # the ratio is the trained policy before the update, re-scored on the selected states in one pass.
            with torch.no_grad():
                tr.policy.eval()
                batch.old_logprobs = token_logprobs(tr.policy, batch, cfg.micro_batch, attend_to_pads=pads)
        exact = cfg.kl_estimator == "exact"
        ref_lp = ref_logits = ref_offsets = None
        if cfg.beta > 0:
            with torch.no_grad(), tr.reference.context() as ref_model:
                ref_model.eval()
                out = token_logprobs(ref_model, batch, cfg.micro_batch, return_logits_at_targets=exact,
                                     attend_to_pads=pads)
            ref_lp, ref_logits = (out if exact else (out, None))
            if exact:
                counts = batch.target_mask.sum(1)
                ref_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
        A = advantages.to(tr.device)
        valid_d = sel.valid.to(tr.device)
        tr.policy.train()
        sums = {"surrogate": 0.0, "kl": 0.0, "clipped": 0.0, "valid": 0.0}
        grad_norms = []
        # Optimizer steps of this rollout and the columns each trains (per_column: [[0], [1], ...]; authors:
        # [[1, 2], [3, 4], [5, 6], [7, 0]] for K 8 and 2 columns per step). Each column's loss is the mean over its
        # valid rows; a step over C columns takes their sum / C (the HF Trainer's division by accumulation).
        for group in optimizer_steps_per_rollout(sem.update_schedule, K, cfg.columns_per_step):
            counts = tr.global_sum([float(valid_d[:, k].sum()) for k in group])
            columns = [(k, n_valid) for k, n_valid in zip(group, counts, strict=True) if n_valid > 0]
            if not columns:
                continue
            for c, (k, n_valid) in enumerate(columns):
                idx = torch.arange(N, device=tr.device) * K + k
                denom = n_valid / tr.world * len(group)
                pieces = row_pieces(N, cfg.grad_accum, cfg.micro_batch)
                for p, piece in enumerate(pieces):
                    piece = piece.to(tr.device)
                    rows_m = idx[piece]
                    sub = batch.rows(rows_m)
                    with tr.sync_context(p == len(pieces) - 1 and c == len(columns) - 1):
                        out = token_logprobs(tr.train_model, sub, None, return_logits_at_targets=exact,
                                             attend_to_pads=pads)
                        tok_lp, logits = out if exact else (out, None)
                        logp = step_logprob(tok_lp, sub.target_mask, cfg.logprob_reduction)
                        old = step_logprob(sub.old_logprobs, sub.target_mask, cfg.logprob_reduction)
                        if sem.old_logprob_float32:  # the authors store pi_old's step log-prob in float32
                            old = old.float().to(logp.dtype)
                        if sem.single_step_ratio_one and K == 1:  # theirs: the current log-prob, detached
                            old = logp.detach()
                        a = A[piece, k]
                        kl = None
                        if cfg.beta > 0:
                            ref_packed = torch.cat([ref_logits[ref_offsets[r]:ref_offsets[r + 1]]
                                                    for r in rows_m.tolist()]) if exact else None
                            kl = step_kl(cfg.kl_estimator, sem.kl_form, tok_lp, None if exact else ref_lp[rows_m],
                                         sub.target_mask, logits, ref_packed, sem.kl_log_eps)
                        w = valid_d[piece, k]
                        loss = egspo_loss(logp, old, a, kl, beta=cfg.beta, eps_low=cfg.eps_low,
                                          eps_high=cfg.eps_high, valid=w, normalizer=denom, scale=divisor)
                        tr.accelerator.backward(loss)
                    with torch.no_grad():
                        self._accumulate(sums, logp, old, a, kl, w.to(logp.dtype))
            grad_norms.append(tr.optimizer_step())
        totals = dict(zip(sums, tr.global_sum(list(sums.values())), strict=True))
        nv = max(totals["valid"], 1.0)
        vsum = tr.global_sum([float((advantages.abs() * valid_cpu).sum()), float(valid_cpu.sum()),
                              float((baseline * valid_cpu).sum()) if baseline is not None else 0.0])
        metrics = {
            "loss": (totals["surrogate"] + cfg.beta * totals["kl"]) / nv,
            "kl": totals["kl"] / nv if cfg.beta > 0 else None,
            "clip_frac": totals["clipped"] / nv,
            "grad_norm": float(np.mean(grad_norms)) if grad_norms else None,
            "advantage_abs_mean": vsum[0] / max(vsum[1], 1.0),
            "onestep_reward_mean": vsum[2] / max(vsum[1], 1.0) if baseline is not None else None,
            "time_rollout_s": t_rollout,
        }
        return IterationResult(rewards=rewards, advantages=advantages, returns=returns, baseline_rewards=baseline,
                               selection=sel, rollout=rollout, metrics=metrics)

    def _accumulate(self, sums, logp, old, a, kl, w) -> None:
        """Add a piece's valid-weighted surrogate, KL and clipped-row counts to ``sums`` (metrics only)."""
        from egspo.core.objective import clipped_surrogate

        cfg = self.cfg
        sums["surrogate"] += float((clipped_surrogate(logp, old, a, cfg.eps_low, cfg.eps_high) * w).sum())
        sums["kl"] += float((kl * w).sum()) if kl is not None else 0.0
        sums["clipped"] += float((clipped(torch.exp(logp - old), a, cfg.eps_low, cfg.eps_high).to(w.dtype) * w).sum())
        sums["valid"] += float(w.sum())


__all__ = ["EGSPOUpdate"]
