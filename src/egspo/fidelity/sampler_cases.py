"""Recompute the ``sampler`` and ``selection_variants`` cases with the library in authors mode.

``sampler``: `egspo.core.sampler.generate` with the authors' settings (no attention mask, entropy with ``+1e-8``,
Gumbel noise in the model dtype) and the recorded uniforms replays the rollout; the committed distributions are
recomputed on a second path (`egspo.core.objective.token_logprobs` on every state). With the pads masked (principled
``attend_to_pads=False``) it must give the json's counterfactual instead.
``selection_variants``: `egspo.core.selection.select_steps` with ``variant="authors"`` and a generator seeded as the
authors seeded the global one.
"""

from __future__ import annotations

import torch

from egspo.core.objective import step_batch, token_logprobs
from egspo.core.sampler import SamplerConfig, generate
from egspo.core.selection import last_content_step, select_steps
from egspo.core.semantics import semantics_for
from egspo.fidelity.compare import Comparison, compare
from egspo.fidelity.fixtures import Case, Fixture, FixtureError


def token_ids(case: Case, model) -> dict:
    """mask / pad / eos ids: the case's json (``mask_id``, ``pad_id``, ``eos_id``) or else the model's config."""
    cfg = model.config
    ids = {"mask": case.meta.get("mask_id", getattr(cfg, "mask_token_id", None)),
           "pad": case.meta.get("pad_id", getattr(cfg, "pad_token_id", None)),
           "eos": case.meta.get("eos_id", getattr(cfg, "eos_token_id", None))}
    if ids["mask"] is None:
        raise FixtureError(f"{case.json_path}: no 'mask_id' and the model config has no mask_token_id")
    return ids


def sampler_config(case: Case, ids: dict, mode: str = "authors", **overrides) -> SamplerConfig:
    m = case.meta
    options = semantics_for(mode, **overrides).sampler_options()
    try:
        return SamplerConfig(gen_length=int(m["L"]), steps=int(m["T"]), block_length=int(m["block_length"]),
                             mask_token_id=int(ids["mask"]), temperature=float(m["temperature"]),
                             remasking=m.get("remasking", "low_confidence"), pad_token_id=ids["pad"],
                             eos_token_id=ids["eos"], **options)
    except KeyError as exc:
        raise FixtureError(f"{case.json_path}: missing field {exc.args[0]!r}") from exc
    except ValueError as exc:
        raise FixtureError(f"{case.json_path}: bad sampler settings ({exc})") from exc


def replay(fx: Fixture, case: Case, prompts: torch.Tensor, uniforms_case: Case | None, model_name: str,
           mode: str = "authors", **overrides):
    """The rollout of ``prompts`` [N, P] with the recorded Gumbel uniforms of ``uniforms_case`` (if any)."""
    model = fx.model(model_name)
    ids = token_ids(case, model)
    config = sampler_config(case, ids, mode, **overrides)
    P = prompts.shape[1]
    uniforms = None
    if config.temperature > 0:
        if uniforms_case is None or "gumbel_uniforms" not in uniforms_case.tensors:
            raise FixtureError(f"{case.json_path}: temperature > 0 but no gumbel_uniforms to replay")
        uniforms = uniforms_case.tensor("gumbel_uniforms")[:, :, P:, :]
    prompt_mask = prompts != ids["pad"] if ids["pad"] is not None else None
    rollout = generate(model, prompts, config, prompt_mask=prompt_mask, uniforms=uniforms, record_greedy_fill=True)
    return rollout, model


def per_step(values: torch.Tensor, commit_step: torch.Tensor, T: int) -> torch.Tensor:
    """``[N, T, k]``: the entries of ``values`` [N, L, ...] committed at each step, in increasing position order
    (every row commits the same number k at a step; FixtureError when steps commit different numbers)."""
    N = values.shape[0]
    pieces = [values[commit_step == j].reshape(N, -1, *values.shape[2:]) for j in range(T)]
    if len({p.shape[1] for p in pieces}) != 1:
        raise FixtureError("steps commit different numbers of tokens; the per-step tensors need equal counts")
    return torch.stack(pieces, dim=1)


def check_sampler(fx: Fixture, case: Case) -> list[Comparison]:
    t, T, name = case.tensors, int(case.get("T")), case.name
    prompts = case.tensor("prompts")
    rollout, model = replay(fx, case, prompts, case, case.get("model"))
    P = prompts.shape[1]
    N = prompts.shape[0]
    states = torch.cat([prompts.unsqueeze(1).expand(N, T + 1, P), rollout.states()], dim=2)
    out = [compare(name, "final_tokens", rollout.completion, t["final_tokens"]),
           compare(name, "trajectory", states, t["trajectory"]),
           compare(name, "committed_mask",
                   rollout.commit_step.unsqueeze(1) == torch.arange(T).view(1, T, 1), t["committed_mask"]),
           compare(name, "step_logprob", rollout.step_logprobs, t["step_logprob"]),
           compare(name, "committed_logprob", per_step(rollout.token_logprobs, rollout.commit_step, T),
                   t["committed_logprob"]),
           compare(name, "step_entropy", rollout.step_entropy, t["step_entropy"]),
           compare(name, "greedy_fill", torch.cat([rollout.greedy_fill, rollout.completion.unsqueeze(1)], 1),
                   t["greedy_fill"])]
    last = last_content_step(rollout)
    out.append(compare(name, "last_non_eos_step", torch.where(last < 0, T - 1, last), t["last_non_eos_step"]))
    # second path: one forward per state S_j (not the sampler's), softmax at the committed positions
    batch = step_batch(rollout, torch.arange(T).expand(N, T))
    with torch.no_grad():
        _, logits = token_logprobs(model, batch, return_logits_at_targets=True, attend_to_pads=True)
    dist = torch.softmax(logits, -1).reshape(N, T, -1, logits.shape[-1])
    out.append(compare(name, "committed_distributions", dist, t["committed_distributions"]))
    if "counterfactual_final_tokens_if_pads_masked" in t:
        masked, _ = replay(fx, case, prompts, case, case.get("model"), attend_to_pads=False)
        out.append(compare(name, "pads_masked/final_tokens (principled)", masked.completion,
                           t["counterfactual_final_tokens_if_pads_masked"]))
        out.append(compare(name, "pads_masked/step_logprob (principled)", masked.step_logprobs,
                           t["counterfactual_step_logprob_if_pads_masked"]))
    return out


def check_selection_variants(fx: Fixture, case: Case) -> list[Comparison]:
    runs = case.get("runs")
    rows = int(case.meta.get("rows", 1))
    out = []
    for run, spec in runs.items():
        try:
            mode, T, K = spec["mode"], int(spec["T"]), int(spec["K"])
        except KeyError as exc:
            raise FixtureError(f"{case.json_path}: runs.{run} misses field {exc.args[0]!r}") from exc
        generator = None
        if mode == "random":
            if "torch_manual_seed" not in spec:
                raise FixtureError(f"{case.json_path}: runs.{run} is random but has no 'torch_manual_seed'")
            generator = torch.Generator().manual_seed(int(spec["torch_manual_seed"]))
        sel = select_steps(torch.zeros(rows, T), K, mode, generator=generator, variant="authors")
        out.append(compare(case.name, f"{run}/steps", sel.steps, case.tensor(run)))
        if f"{run}_draws" in case.tensors:
            out.append(compare(case.name, f"{run}/draws", sel.steps[0, : K - 1], case.tensor(f"{run}_draws")))
    return out
