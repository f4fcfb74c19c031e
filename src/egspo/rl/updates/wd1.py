"""wd1: ratio-free weighted likelihood (`egspo.core.wd1`), ``mu`` optimizer steps per rollout batch.

``A = r0 - mean_G(r0)``; per row the coefficient ``w-_i - w+_i`` (softmax of ``-A`` and ``A`` within the prompt's
group) is fixed for the whole batch. Inner iteration i draws its own prompt mask (`d1_mask_prompt`, probability
``p_mask_prompt``), scores ``log pi(o | q)`` as the sum of d1's one-forward per-token log-probs up to the first EOS
and takes one optimizer step on ``mean_groups sum_i (w-_i - w+_i) log pi(o_i | q)``. No old policy, ratio, clipping
or KL (``beta`` is not used; a run with ``beta > 0`` only builds a reference it never reads). Pieces of rows
(``grad_accum`` / ``micro_batch``) add up to the same loss because it is linear in the rows.
"""

from __future__ import annotations

import torch

from egspo.rl.updates.base import IterationResult, UpdateStrategy, row_pieces, sequence_update_metrics


class WD1Update(UpdateStrategy):
    """``algorithm: wd1``."""

    def update(self, rollout, rewards, rows, t0) -> IterationResult:
        from egspo.core.advantages import group_centered
        from egspo.core.objective import d1_completion_logprobs, d1_mask_prompt, eos_completion_mask
        from egspo.core.wd1 import piece_loss, row_coefficients, sequence_logp

        cfg, tr = self.cfg, self.trainer
        N, G = len(rollout), cfg.num_generations
        advantages = group_centered(rewards, G, cfg.advantage_baseline)
        t_rollout = tr.advantages_known(t0)
        mask_id = tr.sampler_config.mask_token_id
        cmask = eos_completion_mask(rollout.completion, tr.sampler_config.eos_token_id)
        coef = row_coefficients(advantages.to(tr.device, torch.float64), G)
        groups_per_process = N // G  # DDP averages the processes' gradients: the global mean over groups
        tr.policy.train()
        loss_sum, grad_norms = 0.0, []
        for _ in range(cfg.mu):
            noisy = d1_mask_prompt(rollout.prompt_ids, rollout.prompt_mask, mask_id, cfg.p_mask_prompt, tr.generator)
            pieces = row_pieces(N, cfg.grad_accum, cfg.micro_batch)
            for p, piece in enumerate(pieces):
                piece = piece.to(tr.device)
                with tr.sync_context(p == len(pieces) - 1):
                    token_lp = d1_completion_logprobs(tr.train_model, noisy[piece], rollout.prompt_mask[piece],
                                                      rollout.completion[piece], mask_id)
                    seq = sequence_logp(token_lp, cmask[piece])
                    loss = piece_loss(seq, coef[piece], groups_per_process)
                    tr.accelerator.backward(loss)
                loss_sum += float(loss.detach())
            grad_norms.append(tr.optimizer_step())
        adv = tr.global_sum([float(advantages.abs().sum()), float(advantages.numel()), loss_sum])
        metrics = sequence_update_metrics(loss=adv[2] / (tr.world * cfg.mu), grad_norms=grad_norms,
                                          advantage_abs_mean=adv[0] / adv[1], t_rollout=t_rollout)
        return IterationResult(rewards=rewards, advantages=advantages, rollout=rollout, metrics=metrics)


__all__ = ["WD1Update"]
