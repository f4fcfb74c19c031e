"""`egspo fidelity check DIR` on the shipped authors-reference fixtures and on fixture directories derived here:
other rows, K, lambda, beta, seeds, T, schedules and inner iterations, each expected value computed in this file by an
independent path (the README's formulas in plain torch, the authors' counter logic, the global generator)."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from egspo.cli import main
from egspo.fidelity.check import check_directory
from egspo.fidelity.fixtures import Fixture, FixtureError

_DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32", torch.int64: "int64", torch.int32: "int32",
                torch.bool: "bool"}


@pytest.fixture(scope="module")
def reference(shared_data):
    root = shared_data / "authors_reference"
    if not (root / "README.md").is_file():
        pytest.skip(f"authors-reference fixtures not found at {root}")
    return root


def _load(root, name):
    return json.loads((root / f"{name}.json").read_text()), load_file(str(root / f"{name}.safetensors"))


def _save(root, name, meta, tensors):
    meta = dict(meta, tensors={k: {"dtype": _DTYPE_NAMES[v.dtype], "shape": list(v.shape)} for k, v in tensors.items()})
    (root / f"{name}.json").write_text(json.dumps(meta))
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, str(root / f"{name}.safetensors"))


def _base_dir(reference, tmp_path, cases=()):
    """A new fixture directory with the models, the gradient layout and copies of ``cases``."""
    root = tmp_path / "fixture"
    root.mkdir()
    for model in ("model_policy", "model_reference", "model_rollout"):
        shutil.copytree(reference / model, root / model)
    shutil.copy(reference / "param_layout.json", root)
    for case in cases:
        for ext in ("json", "safetensors"):
            shutil.copy(reference / f"{case}.{ext}", root)
    return root


def test_shipped_fixtures_agree_within_1e6(reference, capsys):
    assert main(["fidelity", "check", str(reference)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines[:-1]]
    assert len(rows) == 77 and all(line.startswith("ok ") for line in rows)
    assert lines[-1] == "77 of 77 quantities within 1e-06 relative"
    cases = {line.split()[1] for line in rows}
    assert cases == {"sampler_greedy", "sampler_gumbel", "egspo_update", "schedule", "selection_variants", "d1_loss"}


def _resized_update(reference, root, K=2, lams=(0.25,), beta=0.1):
    """egspo_update with the first K entropy-ranked columns, other lambdas and beta; expected values from the
    README's formulas on the stored log-probs (no gradients: they need the reference backward pass)."""
    meta, t = _load(reference, "egspo_update")
    G, N, tps = meta["G"], meta["N"], meta["tokens_per_step"]
    keep = {k: t[k] for k in ("prompt_rows", "final_reward", "step_reward", "trajectory", "selection_entropy",
                               "completion_mask")}
    for k in ("selected_steps", "old_step_logprob", "old_step_logprob_float64", "ref_step_logprob",
              "policy_step_logprob", "ref_all_token_logprobs", "policy_all_token_logprobs"):
        keep[k] = t[k][:, :K]
    sel = keep["selected_steps"]
    rc = t["step_reward"].gather(1, sel)
    r = t["final_reward"].unsqueeze(1)
    keep["rewards_scored"] = torch.cat([rc, r], 1).float()
    pol, old = keep["policy_step_logprob"], keep["old_step_logprob"].double()
    lp, lq = keep["policy_all_token_logprobs"], keep["ref_all_token_logprobs"]
    variants = {}
    for lam in lams:
        R = (r + lam * (r - rc)) / (1 + lam)
        A = (R.view(N // G, G, K) - R.view(N // G, G, K).mean(1, keepdim=True)).view(N, K)
        rho = torch.exp(pol - old)
        surrogate = -torch.minimum(rho * A, rho.clamp(1 - meta["eps_low"], 1 + meta["eps_high"]) * A)
        d = keep["ref_step_logprob"] - pol
        for kl_name, kl in (("k3", torch.exp(d) - d - 1), ("exact", (lp.exp() * (lp - lq)).sum(-1).sum(-1))):
            v = f"lam{lam}_{kl_name}"
            rows = (surrogate + beta * kl) / tps
            keep.update({f"{v}/returns": R, f"{v}/advantages": A, f"{v}/row_loss": rows, f"{v}/loss": rows.mean(0)})
            variants[v] = {"lambda1": lam, "use_exact_kl": kl_name == "exact"}
    _save(root, "egspo_update_K2", dict(meta, K=K, beta=beta, variants=variants), keep)


def _other_selections(root):
    """The authors' uniform / random rows for other T, K and seeds: numpy linspace in float32 and the global
    torch generator after manual_seed, as their trainer draws them."""
    runs, tensors = {}, {}
    for mode, T, K, seed in (("uniform", 64, 5, None), ("uniform", 10, 4, None), ("random", 32, 6, 7),
                             ("random", 10, 9, 3)):
        name = f"{mode}_T{T}_K{K}" + (f"_seed{seed}" if seed is not None else "")
        if mode == "uniform":
            head = torch.tensor(np.linspace(0, T - 2, K - 1, dtype=np.float32).astype(np.int64))
        else:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                head = torch.randint(0, T - 1, (K - 1,))
            tensors[f"{name}_draws"] = head
        tensors[name] = torch.cat([head, torch.tensor([T - 1])]).repeat(3, 1)
        runs[name] = {"mode": mode, "T": T, "K": K, **({"torch_manual_seed": seed} if seed is not None else {})}
    _save(root, "selection_other", {"case": "selection_variants", "runs": runs, "rows": 3}, tensors)


def _other_schedule(root, K=4, accum=4, repeats=2, micro=20):
    """The HF Trainer driving the authors' counter: rollout when counter % (K * repeats) == 0, then counter += 1,
    the loss reads column counter % K; an optimizer step after every ``accum`` micro-steps."""
    counter, rollout, rows = 0, -1, {"new": [], "rollout": [], "column": [], "opt": []}
    for m in range(micro):
        new = counter % (K * repeats) == 0
        rollout += new
        counter += 1
        for key, value in (("new", new), ("rollout", rollout), ("column", counter % K), ("opt", (m + 1) % accum == 0)):
            rows[key].append(value)
    tensors = {"new_rollout_made": torch.tensor(rows["new"]), "rollout_used": torch.tensor(rows["rollout"]),
               "column_used": torch.tensor(rows["column"]), "optimizer_step_after": torch.tensor(rows["opt"])}
    meta = {"case": "schedule", "K": K, "gradient_accumulation_steps": accum, "num_gradient_steps": repeats,
            "micro_steps": micro}
    _save(root, "schedule_other", meta, tensors)
    return rows


def _fewer_rows_and_iterations(reference, root):
    """sampler_greedy restricted to rows 1 and 3 (padded prompts) and d1_loss with its first 2 inner iterations."""
    meta, t = _load(reference, "sampler_greedy")
    _save(root, "sampler_greedy_rows13", dict(meta, N=2), {k: v[[1, 3]] for k, v in t.items()})
    meta, t = _load(reference, "d1_loss")
    per_iter = ("mask_seeds", "noisy_input_ids", "masked_prompt_positions", "old_token_logprob",
                "policy_token_logprob", "ref_token_logprob", "prompt_mask_uniforms", "loss", "grad")
    _save(root, "d1_loss_mu2", dict(meta, num_iterations=2),
          {k: (v[:2] if k in per_iter else v) for k, v in t.items()})


def test_other_fixture_directory_of_the_format(reference, tmp_path, capsys):
    root = _base_dir(reference, tmp_path, cases=("sampler_gumbel",))
    _resized_update(reference, root)
    _other_selections(root)
    schedule = _other_schedule(root)
    _fewer_rows_and_iterations(reference, root)
    assert schedule["column"][:8] == [1, 2, 3, 0, 1, 2, 3, 0] and schedule["new"][8] is True
    assert main(["fidelity", "check", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    by_case = {}
    for line in out[:-1]:
        assert line.startswith("ok "), line
        by_case.setdefault(line.split()[1], []).append(line.split()[2])
    assert set(by_case) == {"sampler_gumbel", "egspo_update_K2", "selection_other", "schedule_other",
                            "sampler_greedy_rows13", "d1_loss_mu2"}
    assert "lam0.25_exact/loss" in by_case["egspo_update_K2"] and "grad" in by_case["d1_loss_mu2"]
    assert len(by_case["selection_other"]) == 6 and len(by_case["schedule_other"]) == 4


def test_a_perturbed_number_fails_only_its_line(reference, tmp_path):
    root = _base_dir(reference, tmp_path, cases=("sampler_gumbel",))
    meta, t = _load(reference, "egspo_update")
    t["lam0_k3/loss"][1] *= 1 + 1e-5
    _save(root, "egspo_update", meta, t)
    results = check_directory(root, cases=["egspo_update"])
    failed = [r.quantity for r in results if not r.ok]
    assert failed == ["lam0_k3/loss"]
    assert [r.max_rel for r in results if not r.ok][0] == pytest.approx(1e-5, rel=0.01)  # loss[1] is the largest


def test_bad_fixture_files_are_named(reference, tmp_path, capsys):
    root = _base_dir(reference, tmp_path, cases=("selection_variants",))
    meta, t = _load(reference, "selection_variants")
    (root / "selection_variants.safetensors").write_bytes(b"\x00\x01 not safetensors")
    assert main(["fidelity", "check", str(root)]) == 2
    assert "selection_variants.safetensors" in capsys.readouterr().err
    _save(root, "selection_variants", meta, t)
    declared = json.loads((root / "selection_variants.json").read_text())
    declared["tensors"]["uniform_T16_K4"]["shape"] = [2, 5]
    (root / "selection_variants.json").write_text(json.dumps(declared))
    bad_shape = r"selection_variants\.safetensors: tensor 'uniform_T16_K4' is int64 \[2, 4\]"
    with pytest.raises(FixtureError, match=bad_shape):
        check_directory(root)
    (root / "selection_variants.json").write_text("{not json")
    with pytest.raises(FixtureError, match=r"selection_variants\.json: not readable JSON"):
        check_directory(root)
    del meta["runs"]["uniform_T16_K4"]["K"]
    _save(root, "selection_variants", meta, t)
    with pytest.raises(FixtureError, match=r"selection_variants\.json: runs\.uniform_T16_K4 misses field 'K'"):
        check_directory(root)
    _save(root, "selection_variants", dict(meta, case="sampler_v9"), t)
    with pytest.raises(FixtureError, match=r"unknown case kind 'sampler_v9'"):
        check_directory(root)
    with pytest.raises(FixtureError, match="not a directory"):
        Fixture(tmp_path / "missing")
    (root / "param_layout.json").write_text(json.dumps({"params": [{"name": "nope", "shape": [1]}]}))
    fx = Fixture(root)
    model = fx.model("model_policy")
    loss = sum(p.sum() for p in model.parameters())
    with pytest.raises(FixtureError, match=r"param_layout\.json: parameter 'nope'"):
        fx.flat_grad(model, loss)
