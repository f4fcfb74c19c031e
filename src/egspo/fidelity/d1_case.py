"""Recompute the ``d1_loss`` case (diffu-GRPO) with the library in d1's exact form.

Per inner iteration ``i``: `egspo.core.objective.d1_mask_prompt` with the stored uniforms and ``mask_pads=True``
(d1 masks left pads too), one forward per model without an attention mask (`d1_completion_logprobs`), the log-probs
cast to float32 as d1 casts them, and the pooled `d1_grpo_loss` with symmetric clip ``epsilon``; its gradient in the
policy parameters. Mask seeds are redrawn from a generator seeded as d1's global one.
"""

from __future__ import annotations

import torch

from egspo.core.advantages import group_centered
from egspo.core.objective import d1_completion_logprobs, d1_grpo_loss, d1_mask_prompt, eos_completion_mask
from egspo.fidelity.compare import Comparison, compare
from egspo.fidelity.fixtures import Case, Fixture
from egspo.fidelity.sampler_cases import token_ids


def check_d1_loss(fx: Fixture, case: Case) -> list[Comparison]:
    t, name = case.tensors, case.name
    G, P, mu = int(case.get("G")), int(case.get("P")), int(case.get("num_iterations"))
    beta, eps, p_mask = float(case.get("beta")), float(case.get("epsilon")), float(case.get("p_mask_prompt"))
    policy = fx.model(case.get("model_policy"))
    ids = token_ids(case, policy)
    pc = case.tensor("prompt_completion_ids")
    prompts, completion = pc[:, :P], pc[:, P:]
    prompt_mask = prompts != ids["pad"]
    cmask = eos_completion_mask(completion, ids["eos"])
    adv = group_centered(case.tensor("rewards").float(), G)
    out = [compare(name, "completion_mask", cmask.int(), t["completion_mask"]),
           compare(name, "advantages", adv, t["advantages"])]
    seeds = torch.randint(0, 4096, (mu,), generator=torch.Generator().manual_seed(int(case.get("torch_manual_seed"))))
    out.append(compare(name, "mask_seeds", seeds, t["mask_seeds"]))
    models = {"old": fx.model(case.get("model_old")), "ref": fx.model(case.get("model_ref")), "policy": policy}
    losses, grads, logps = [], [], {"old": [], "ref": [], "policy": []}
    for i in range(mu):
        uniforms = case.tensor("prompt_mask_uniforms")[i][:, :P]
        noisy = d1_mask_prompt(prompts, prompt_mask, ids["mask"], p_mask, mask_pads=True, uniforms=uniforms)
        full = torch.cat([noisy, torch.full_like(completion, ids["mask"])], dim=1)
        out.append(compare(name, f"iter{i}/noisy_input_ids", full, t["noisy_input_ids"][i]))
        out.append(compare(name, f"iter{i}/masked_prompt_positions", noisy != prompts, t["masked_prompt_positions"][i]))
        for role, model in models.items():
            with torch.set_grad_enabled(role == "policy"):
                lp = d1_completion_logprobs(model, noisy, prompt_mask, completion, ids["mask"], attend_to_pads=True)
            logps[role].append(lp.float())
        loss = d1_grpo_loss(logps["policy"][i], logps["old"][i], adv, cmask, logps["ref"][i], beta=beta,
                            eps_low=eps, eps_high=eps)
        losses.append(loss)
        grads.append(fx.flat_grad(policy, loss))
    for role in logps:
        out.append(compare(name, f"{role}_token_logprob", torch.stack(logps[role]).detach(),
                           t[f"{role}_token_logprob"]))
    out.append(compare(name, "loss", torch.stack(losses).detach(), t["loss"]))
    out.append(compare(name, "grad", torch.stack(grads), t["grad"]))
    return out
