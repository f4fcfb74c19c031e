"""diffu-GRPO (d1): sequence-level group advantages, ``mu`` inner iterations on one-step log-prob estimates.

``A = r0 - mean_G(r0)`` (``loo``: mean of the other G-1). Each inner iteration i has its own prompt mask
(`egspo.core.objective.d1_mask_prompt`: real prompt tokens hidden with probability ``p_mask_prompt``); per-token
log-probs come from one forward with the completion fully masked (`d1_completion_logprobs`). Old and reference
log-probs are computed for all ``mu`` masks before the first update; iteration i takes one optimizer step on
`d1_grpo_loss` (per-token clipped loss + ``beta * k3`` pooled over the completion tokens up to each first EOS).
The loss of a piece of rows (``grad_accum`` / ``micro_batch``) is pooled over the piece and re-weighted by the
piece's share of the step's tokens on all processes, so the update is the step's pooled loss whatever the pieces.
"""

from __future__ import annotations

import torch

from egspo.rl.updates.base import IterationResult, UpdateStrategy, clipped, row_pieces, sequence_update_metrics


class DiffuGRPOUpdate(UpdateStrategy):
    """``algorithm: diffu_grpo``."""

    def update(self, rollout, rewards, rows, t0) -> IterationResult:
        from egspo.core.advantages import group_centered
        from egspo.core.objective import (
            d1_completion_logprobs,
            d1_grpo_loss,
            d1_mask_prompt,
            eos_completion_mask,
            kl_k3,
        )

        cfg, tr = self.cfg, self.trainer
        N = len(rollout)
        advantages = group_centered(rewards, cfg.num_generations, cfg.advantage_baseline)
        t_rollout = tr.advantages_known(t0)
        mask_id = tr.sampler_config.mask_token_id
        cmask = eos_completion_mask(rollout.completion, tr.sampler_config.eos_token_id)
        chunk = cfg.micro_batch or N

        pads = cfg.semantics().attend_to_pads  # d1's exact form: pads attended and maskable (forward_process)

        def seq_lp(model, prompts, rows_idx):
            return d1_completion_logprobs(model, prompts[rows_idx], rollout.prompt_mask[rows_idx],
                                          rollout.completion[rows_idx], mask_id, attend_to_pads=pads)

        noisy = [d1_mask_prompt(rollout.prompt_ids, rollout.prompt_mask, mask_id, cfg.p_mask_prompt, tr.generator,
                                mask_pads=pads) for _ in range(cfg.mu)]
        all_rows = [torch.arange(s, min(s + chunk, N), device=tr.device) for s in range(0, N, chunk)]
        with torch.no_grad():
            tr.policy.eval()
            old = [torch.cat([seq_lp(tr.policy, x, r) for r in all_rows]) for x in noisy]
            ref = None
            if cfg.beta > 0:
                with tr.reference.context() as ref_model:
                    ref_model.eval()
                    ref = [torch.cat([seq_lp(ref_model, x, r) for r in all_rows]) for x in noisy]
        A = advantages.to(tr.device)
        tokens_per_process = tr.global_sum([float(cmask.sum())])[0] / tr.world  # DDP averages over processes
        tr.policy.train()
        sums = {"loss": 0.0, "kl": 0.0, "clipped": 0.0, "tokens": 0.0}
        grad_norms = []
        for i in range(cfg.mu):
            pieces = row_pieces(N, cfg.grad_accum, cfg.micro_batch)
            for p, piece in enumerate(pieces):
                piece = piece.to(tr.device)
                with tr.sync_context(p == len(pieces) - 1):
                    lp = seq_lp(tr.train_model, noisy[i], piece)
                    ref_i = ref[i][piece] if ref is not None else None
                    loss = d1_grpo_loss(lp, old[i][piece], A[piece], cmask[piece], ref_i, beta=cfg.beta,
                                        eps_low=cfg.eps_low, eps_high=cfg.eps_high)
                    m = cmask[piece].to(lp.dtype)
                    share = float(m.sum()) / tokens_per_process
                    tr.accelerator.backward(loss * share)
                with torch.no_grad():
                    rho = torch.exp(lp - old[i][piece])
                    sums["loss"] += float(loss) * share
                    sums["clipped"] += float((clipped(rho, A[piece].unsqueeze(1), cfg.eps_low, cfg.eps_high)
                                              .to(m.dtype) * m).sum())
                    sums["tokens"] += float(m.sum())
                    if ref_i is not None:
                        sums["kl"] += float(kl_k3(lp, ref_i, cmask[piece]).sum())
            grad_norms.append(tr.optimizer_step())
        totals = dict(zip(sums, tr.global_sum(list(sums.values())), strict=True))
        rows_total = N * tr.world * cfg.mu
        adv = tr.global_sum([float(advantages.abs().sum()), float(advantages.numel())])
        metrics = sequence_update_metrics(
            loss=totals["loss"] / (tr.world * cfg.mu), kl=totals["kl"] / rows_total if cfg.beta > 0 else None,
            clip_frac=totals["clipped"] / max(totals["tokens"], 1.0), grad_norms=grad_norms,
            advantage_abs_mean=adv[0] / adv[1], t_rollout=t_rollout)
        return IterationResult(rewards=rewards, advantages=advantages, rollout=rollout, metrics=metrics)


__all__ = ["DiffuGRPOUpdate"]
