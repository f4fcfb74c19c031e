"""SPG: sandwiched policy gradient (`egspo.core.spg`), ``mu`` optimizer steps per rollout batch.

``A = r0 - mean_G(r0)``; completions with ``A > 0`` are scored by the ELBO term, the others by the ``spg_variant``
term (``elbo``, ``eubo`` with ``spg_beta``, or ``mix`` with weight ``spg_mix_weight``). Inner iteration i draws
fresh masks (``spg_masking``: ``block_random`` or ``random``, ``spg_num_t`` samples per completion; prompt tokens
and clean earlier blocks also hidden with probability ``p_mask_prompt``) and takes one optimizer step on
``sum_n -A_n s_n ell_n / sum_n ell_n`` pooled over the step's rows on all processes (the pieces of ``grad_accum`` /
``micro_batch`` are re-weighted by their share of ``ell``). No ratio, clipping or KL (``beta`` is not used).
"""

from __future__ import annotations

import torch

from egspo.rl.updates.base import IterationResult, UpdateStrategy, row_pieces, sequence_update_metrics


class SPGUpdate(UpdateStrategy):
    """``algorithm: spg``."""

    def update(self, rollout, rewards, rows, t0) -> IterationResult:
        from egspo.core.advantages import group_centered
        from egspo.core.objective import eos_completion_mask
        from egspo.core.spg import (
            block_random_masks,
            completion_lengths,
            elbo_term,
            eubo_term,
            masked_logprobs,
            noisy_inputs,
            random_masks,
            sequence_logp,
            spg_loss,
        )

        cfg, tr = self.cfg, self.trainer
        N, S = len(rollout), cfg.spg_num_t
        advantages = group_centered(rewards, cfg.num_generations, cfg.advantage_baseline)
        t_rollout = tr.advantages_known(t0)
        mask_id = tr.sampler_config.mask_token_id
        cmask = eos_completion_mask(rollout.completion, tr.sampler_config.eos_token_id)
        lengths = completion_lengths(cmask)
        A = advantages.to(tr.device)
        positive = A > 0
        ell_per_process = tr.global_sum([float(lengths.sum())])[0] / tr.world  # DDP averages over processes
        tr.policy.train()
        sums = {"loss": 0.0, "elbo": 0.0, "negative": 0.0}
        grad_norms = []
        for _ in range(cfg.mu):
            if cfg.spg_masking == "block_random":
                masked, noise_ok = block_random_masks(cmask, cfg.block_length, S, tr.generator)
            else:
                masked, noise_ok = random_masks(cmask, S, tr.generator)
            ids, attention, scored = noisy_inputs(rollout.prompt_ids, rollout.prompt_mask, rollout.completion,
                                                  masked, noise_ok, mask_id, cfg.p_mask_prompt, tr.generator)
            pieces = row_pieces(N, cfg.grad_accum, cfg.micro_batch)
            for p, piece in enumerate(pieces):
                piece = piece.to(tr.device)
                inputs = (piece.unsqueeze(1) * S + torch.arange(S, device=tr.device)).reshape(-1)
                with tr.sync_context(p == len(pieces) - 1):
                    logp = masked_logprobs(tr.train_model, ids[inputs], attention[inputs], rollout.completion[piece])
                    elbo = elbo_term(logp, scored[piece], cmask[piece])
                    eubo = None if cfg.spg_variant == "elbo" else \
                        eubo_term(logp, scored[piece], cmask[piece], cfg.spg_beta)
                    seq = sequence_logp(elbo, eubo, positive[piece], cfg.spg_variant, cfg.spg_mix_weight)
                    share = float(lengths[piece].sum()) / ell_per_process
                    loss = spg_loss(seq, A[piece], lengths[piece]) * share
                    tr.accelerator.backward(loss)
                with torch.no_grad():
                    sums["loss"] += float(loss.detach())
                    neg = ~positive[piece]
                    sums["elbo"] += float(elbo.sum())
                    sums["negative"] += float(seq[neg].sum())
            grad_norms.append(tr.optimizer_step())
        totals = dict(zip(sums, tr.global_sum(list(sums.values())), strict=True))
        counts = tr.global_sum([float(advantages.abs().sum()), float(advantages.numel()),
                                float((~positive).sum())])
        metrics = {
            **sequence_update_metrics(loss=totals["loss"] / (tr.world * cfg.mu), grad_norms=grad_norms,
                                      advantage_abs_mean=counts[0] / counts[1], t_rollout=t_rollout),
            "spg_elbo_per_token": totals["elbo"] / (counts[1] * cfg.mu),
            "spg_negative_per_token": totals["negative"] / max(counts[2] * cfg.mu, 1.0),
        }
        return IterationResult(rewards=rewards, advantages=advantages, rollout=rollout, metrics=metrics)


__all__ = ["SPGUpdate"]
