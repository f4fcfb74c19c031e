"""SPG (Wang et al., "SPG: Sandwiched Policy Gradient for Masked Diffusion Language Models", arXiv 2510.09541):
an evidence lower bound for completions with positive advantage, an upper bound for the others, as the authors'
code runs it (facebookresearch/SPG, ``spg/spg_trainer.py``; their scripts in ``spg/slurm_scripts/``).

**Exact likelihood.** A masked-diffusion model defines ``p_theta(x | c)`` through its reverse process: in continuous
time every masked position is unmasked at the same rate, so the positions are revealed one at a time in a uniformly
random order sigma and

    p(x) = E_sigma prod_k p_theta(x_{sigma_k} | x_{sigma_<k}, rest masked)       (any-order autoregressive form)

For a block-wise (semi-autoregressive) generator the same holds block by block, later blocks masked. Both are
enumerable on a tiny model (``ell!`` orders), which is how the tests check the bounds below.

**Masks.** A sample is a set ``M`` of masked completion positions (positions past the first EOS are always masked and
never scored; ``ell`` = tokens up to and including the first EOS). ``random`` (their ``forward_type="random"``,
``spg_trainer.py:279-304``): ``n ~ U{1..ell}`` then ``n`` of the ``ell`` positions uniformly (``min_t=0, max_t=1``,
as their scripts). ``block_random`` (``:334-378``, what their scripts run): block ``b`` = one entry of a uniform
permutation of the ``L/B`` blocks taken modulo the completion's block count; every block after ``b`` fully masked;
``n ~ U{1..m}`` of block ``b``'s ``m`` completion positions masked uniformly; earlier blocks clean. With
``p_mask_prompt > 0`` every not-yet-masked prompt token and clean earlier-block token is also hidden with that
probability and, when in the completion, counts as masked (``:371-375``).

**Estimators** (per-token scale, as their code; ``t_s = |M_s| / ell``, ``S`` samples of weight ``w_s``, ``1/S``):

    ELBO(x)/ell ~ sum_s w_s mean_{i in M_s} log p(x_i | z_s)                                       (:532, :544)
    EUBO(x)/ell ~ (1/beta) mean_{i covered} log sum_s w_s 1[i in M_s] p(x_i | z_s)^beta / t_s     (:533-546)
    mix = omega EUBO + (1 - omega) ELBO for the negative side                                       (:547-548)

With the ``random`` masks, ``ell * E[ELBO term]`` is exactly the any-order ELBO
``E_sigma sum_k log p(x_{sigma_k} | x_{sigma_<k}) <= log p(x)`` (Jensen). Inside the EUBO's log,
``E[1[i in M] p_i^beta / t] = E_sigma[q_i(sigma)^beta]`` with ``q_i`` token i's factor in order sigma, so the
population EUBO is ``(1/beta) sum_i log E_sigma q_i^beta``; by Hoelder (``E prod_i q_i <= prod_i (E q_i^ell)^(1/ell)``)
and the power-mean inequality it bounds ``log p(x)`` from above **for beta >= ell**. For smaller beta it need not:
with two tokens and ``q_1 = q_2 = (1, e)`` over the two orders, ``log p = log((1 + e^2)/2)`` exceeds the
beta = 1 value ``2 log((1 + e)/2)``. The authors use beta in {1, 1.5, 2} with ell up to 256, i.e. as a tunable
surrogate rather than a guaranteed bound (docs/fidelity_baselines.md). The block-wise estimator also scores the fully
masked later blocks in the same mean, so it estimates neither block-wise bound exactly; it is what their code runs.

**Loss** (``:115-118``, no ratio, no clipping, no KL): ``sum_n -A_n s_n ell_n / sum_n ell_n`` with ``s_n`` the ELBO
term where ``A_n > 0`` and the EUBO / mix term otherwise (``:721``, ``:556``), ``A = r - mean_G(r)`` (``:720``).
"""

from __future__ import annotations

import math

import torch

from egspo.core.model_calls import forward_logits, model_device, needs_attention_mask, score_dtype

FORWARD_TYPES = ("block_random", "random")
VARIANTS = ("elbo", "eubo", "mix")


def completion_lengths(completion_mask: torch.Tensor) -> torch.Tensor:
    """``ell`` [N]: scored tokens per completion (``completion_mask`` is True up to and including the first EOS)."""
    return completion_mask.sum(-1)


def _choose(counts: torch.Tensor, eligible: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """For each row r of ``eligible`` [R, L], ``counts[r]`` of its True positions uniformly without replacement."""
    keys = torch.rand(eligible.shape, generator=generator, device=eligible.device)
    keys = torch.where(eligible, keys, torch.full_like(keys, 2.0))  # ineligible positions sort last
    rank = keys.argsort(dim=1).argsort(dim=1)
    return eligible & (rank < counts.unsqueeze(1))


def _uniform_counts(high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``n ~ U{1 .. high[r]}`` per row (``high >= 1``)."""
    u = torch.rand(high.shape, generator=generator, device=high.device, dtype=torch.float64)
    return (u * high.to(torch.float64)).floor().long().clamp(max=high - 1) + 1


def random_masks(completion_mask: torch.Tensor, num_t: int, generator: torch.Generator | None = None):
    """``(masked, noise_ok)`` [N, num_t, L]: SPG's ``random`` masks (``n ~ U{1..ell}`` of the ``ell`` completion
    positions; positions past the completion always masked); ``noise_ok`` is all False (only the prompt is noised)."""
    cmask = _check_completion_mask(completion_mask)
    N, L = cmask.shape
    ell = completion_lengths(cmask).repeat_interleave(num_t)
    rows = cmask.repeat_interleave(num_t, dim=0)
    chosen = _choose(_uniform_counts(ell, generator), rows, generator)
    masked = (chosen | ~rows).reshape(N, num_t, L)
    return masked, torch.zeros_like(masked)


def block_random_masks(completion_mask: torch.Tensor, block_length: int, num_t: int,
                       generator: torch.Generator | None = None):
    """``(masked, noise_ok)`` [N, num_t, L]: SPG's ``block_random`` masks (module docstring); ``noise_ok`` marks the
    clean positions of the blocks before the chosen one, which prompt-style noise may also hide."""
    cmask = _check_completion_mask(completion_mask)
    N, L = cmask.shape
    if block_length < 1 or L % block_length:
        raise ValueError(f"gen_length {L} is not a multiple of block_length {block_length}")
    n_blocks = L // block_length
    if not 1 <= num_t <= n_blocks:
        raise ValueError(f"num_t must lie in [1, {n_blocks}] (the number of blocks), got {num_t}")
    ell = completion_lengths(cmask)
    comp_blocks = (ell - 1) // block_length + 1  # blocks holding at least one completion token
    perm = torch.rand((N, n_blocks), generator=generator, device=cmask.device).argsort(dim=1)[:, :num_t]
    block = perm % comp_blocks.unsqueeze(1)  # [N, num_t]
    pos_block = torch.arange(L, device=cmask.device) // block_length  # [L]
    later = pos_block.view(1, 1, L) > block.unsqueeze(2)
    inside = pos_block.view(1, 1, L) == block.unsqueeze(2)
    rows = cmask.unsqueeze(1)
    in_block = inside & rows  # the chosen block's completion positions
    m = in_block.sum(-1).reshape(-1)
    chosen = _choose(_uniform_counts(m, generator), in_block.reshape(N * num_t, L), generator).reshape(N, num_t, L)
    masked = later | chosen | ~rows
    noise_ok = (pos_block.view(1, 1, L) < block.unsqueeze(2)) & rows
    return masked, noise_ok


def _check_completion_mask(completion_mask: torch.Tensor) -> torch.Tensor:
    cmask = completion_mask.bool()
    if cmask.dim() != 2:
        raise ValueError(f"completion_mask must be [N, L], got shape {tuple(cmask.shape)}")
    if not bool(cmask[:, 0].all()) or bool((cmask[:, 1:] & ~cmask[:, :-1]).any()):
        raise ValueError("completion_mask must be a prefix mask (True up to the first EOS) with at least one token")
    return cmask


def noisy_inputs(prompt_ids, prompt_mask, completion, masked, noise_ok, mask_token_id: int, p_mask_prompt: float,
                 generator: torch.Generator | None = None):
    """Model inputs for every (row, sample): ``(input_ids [N*S, P+L], attention [N*S, P+L], scored_mask [N, S, L])``.
    Real prompt tokens and ``noise_ok`` completion positions are hidden with probability ``p_mask_prompt``;
    ``scored_mask`` is ``masked`` plus the hidden completion positions."""
    if not 0.0 <= p_mask_prompt <= 1.0:
        raise ValueError(f"p_mask_prompt must lie in [0, 1], got {p_mask_prompt!r}")
    N, S, L = masked.shape
    pmask = prompt_mask.bool().unsqueeze(1).expand(N, S, -1)
    hide_prompt = (torch.rand(pmask.shape, generator=generator, device=masked.device) < p_mask_prompt) & pmask
    hide_clean = (torch.rand(masked.shape, generator=generator, device=masked.device) < p_mask_prompt) & noise_ok
    scored = masked | hide_clean
    prompt = torch.where(hide_prompt, mask_token_id, prompt_ids.unsqueeze(1).expand(N, S, -1))
    comp = torch.where(scored, mask_token_id, completion.unsqueeze(1).expand(N, S, L))
    ids = torch.cat([prompt, comp], dim=2).reshape(N * S, -1)
    attention = torch.cat([pmask, torch.ones_like(masked)], dim=2).reshape(N * S, -1)
    return ids, attention, scored


def masked_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion: torch.Tensor,
                    micro_batch: int | None = None) -> torch.Tensor:
    """``log p_theta(x_i | z_s)`` [N, S, L] at every completion position, from batched forwards over the N*S noisy
    inputs (chunks of ``micro_batch`` rows). Gradients flow when grad is enabled."""
    N, L = completion.shape
    rows = input_ids.shape[0]
    if rows % N:
        raise ValueError(f"{rows} noisy inputs are not a multiple of {N} completions")
    S = rows // N
    device = model_device(model, input_ids.device)
    targets = completion.to(device).repeat_interleave(S, dim=0)
    pass_mask = needs_attention_mask(model, attention_mask)
    chunk = rows if micro_batch is None else micro_batch
    out = []
    for start in range(0, rows, chunk):
        sl = slice(start, min(start + chunk, rows))
        logits = forward_logits(model, input_ids[sl].to(device), attention_mask[sl].to(device), pass_mask)[:, -L:]
        logits = logits.to(score_dtype(logits))
        out.append(torch.log_softmax(logits, -1).gather(-1, targets[sl].unsqueeze(-1)).squeeze(-1))
    return torch.cat(out).reshape(N, S, L)


def _weights(S: int, weights, like: torch.Tensor) -> torch.Tensor:
    if weights is None:
        return torch.full((S,), 1.0 / S, dtype=like.dtype, device=like.device)
    w = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if w.shape != (S,) or bool((w < 0).any()):
        raise ValueError(f"weights must be {S} non-negative numbers, got shape {tuple(w.shape)}")
    return w


def elbo_term(logp: torch.Tensor, scored: torch.Tensor, completion_mask: torch.Tensor, weights=None) -> torch.Tensor:
    """[N]: ``sum_s w_s mean_{i in M_s} log p(x_i | z_s)`` over scored completion positions (``ell`` times it is the
    ELBO estimate). ``logp``/``scored`` [N, S, L]; ``weights`` [S] (default ``1/S``)."""
    m = (scored & completion_mask.bool().unsqueeze(1)).to(logp.dtype)
    per_sample = (logp * m).sum(-1) / m.sum(-1).clamp_min(1.0)
    return per_sample @ _weights(logp.shape[1], weights, logp)


def eubo_term(logp: torch.Tensor, scored: torch.Tensor, completion_mask: torch.Tensor, beta: float,
              weights=None) -> torch.Tensor:
    """[N]: ``(1/beta) mean_{i covered} log sum_s w_s 1[i in M_s] p(x_i | z_s)^beta / t_s`` with
    ``t_s = |M_s| / ell`` (``ell`` times it is the EUBO estimate); computed in log space."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    cmask = completion_mask.bool()
    m = scored & cmask.unsqueeze(1)  # [N, S, L]
    ell = cmask.sum(-1, keepdim=True).to(logp.dtype)  # [N, 1]
    t = m.sum(-1).to(logp.dtype) / ell  # [N, S]
    w = _weights(logp.shape[1], weights, logp)
    log_terms = beta * logp + (w.log().view(1, -1) - t.clamp_min(1e-30).log()).unsqueeze(-1)
    covered = (m & (w > 0).view(1, -1, 1)).any(1)  # [N, L]
    safe = torch.where(m, log_terms, torch.full_like(log_terms, -math.inf))
    safe = torch.where(covered.unsqueeze(1), safe, torch.zeros_like(safe))  # keeps uncovered tokens finite
    per_token = torch.logsumexp(safe, dim=1)  # [N, L]
    c = covered.to(logp.dtype)
    return (per_token * c).sum(-1) / c.sum(-1).clamp_min(1.0) / beta


def sequence_logp(elbo: torch.Tensor, eubo: torch.Tensor | None, positive: torch.Tensor, variant: str,
                  mix_weight: float = 0.5) -> torch.Tensor:
    """[N]: the ELBO term where ``positive`` (``A > 0``), else the variant's term: ``elbo``, ``eubo`` or
    ``mix = mix_weight * eubo + (1 - mix_weight) * elbo``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not 0.0 <= mix_weight <= 1.0:
        raise ValueError(f"mix_weight must lie in [0, 1], got {mix_weight!r}")
    if variant == "elbo":
        negative = elbo
    elif eubo is None:
        raise ValueError(f"variant {variant!r} needs the EUBO term")
    elif variant == "eubo":
        negative = eubo
    else:
        negative = mix_weight * eubo + (1.0 - mix_weight) * elbo
    return torch.where(positive.bool(), elbo, negative)


def spg_loss(seq_logp: torch.Tensor, advantages: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``sum_n -A_n s_n ell_n / sum_n ell_n``: the length-weighted policy-gradient loss of their ``compute_loss``."""
    if not (seq_logp.shape == advantages.shape == lengths.shape):
        raise ValueError(f"seq_logp {tuple(seq_logp.shape)}, advantages {tuple(advantages.shape)} and lengths "
                         f"{tuple(lengths.shape)} must have one shape [N]")
    ell = lengths.to(seq_logp.dtype)
    return (-advantages.to(seq_logp.dtype) * seq_logp * ell).sum() / ell.sum().clamp_min(1.0)


__all__ = ["FORWARD_TYPES", "VARIANTS", "block_random_masks", "completion_lengths", "elbo_term", "eubo_term",
           "masked_logprobs", "noisy_inputs", "random_masks", "sequence_logp", "spg_loss"]
