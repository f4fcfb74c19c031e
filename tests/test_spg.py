"""SPG: the mask samplers against their exact distributions, the ELBO / EUBO terms against loops written out, the
bounds against the exact likelihood of an enumerable masked-diffusion model, and the loss gradient by finite
differences."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch
from conftest import MASK, tiny_bert

from egspo.core.spg import (
    block_random_masks,
    elbo_term,
    eubo_term,
    masked_logprobs,
    noisy_inputs,
    random_masks,
    sequence_logp,
    spg_loss,
)

# ---- the terms against loops written out ----------------------------------------------------------------------------


def _loop_terms(logp, scored, cmask, beta):
    """Straight from the definitions, one row / sample / token at a time (no library code)."""
    N, S, L = logp.shape
    elbo, eubo = [], []
    for n in range(N):
        ell = int(cmask[n].sum())
        means, avg = [], [0.0] * L
        for s in range(S):
            idx = [i for i in range(L) if scored[n, s, i] and cmask[n, i]]
            means.append(sum(float(logp[n, s, i]) for i in idx) / len(idx))
            t = len(idx) / ell
            for i in idx:
                avg[i] += math.exp(beta * float(logp[n, s, i])) / t / S
        elbo.append(sum(means) / S)
        covered = [i for i in range(L) if avg[i] > 0]
        eubo.append(sum(math.log(avg[i]) for i in covered) / len(covered) / beta)
    return elbo, eubo


def test_terms_match_loops():
    gen = torch.Generator().manual_seed(0)
    N, S, L = 3, 2, 6
    logp = -torch.rand((N, S, L), generator=gen, dtype=torch.float64) * 3
    cmask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    scored, _ = block_random_masks(cmask, 2, S, gen)
    elbo = elbo_term(logp, scored, cmask)
    for beta in (1.0, 1.5):
        ref_elbo, ref_eubo = _loop_terms(logp, scored, cmask, beta)
        assert elbo.tolist() == pytest.approx(ref_elbo, rel=1e-12)
        assert eubo_term(logp, scored, cmask, beta).tolist() == pytest.approx(ref_eubo, rel=1e-12)


def test_variants_and_loss_by_hand():
    elbo = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64)
    eubo = torch.tensor([-0.5, -1.0, -1.5], dtype=torch.float64)
    A = torch.tensor([0.5, -0.25, 0.0], dtype=torch.float64)
    pos = A > 0
    assert sequence_logp(elbo, eubo, pos, "elbo").tolist() == [-1.0, -2.0, -3.0]
    assert sequence_logp(elbo, eubo, pos, "eubo").tolist() == [-1.0, -1.0, -1.5]
    assert sequence_logp(elbo, eubo, pos, "mix", 0.25).tolist() == [-1.0, -1.75, -2.625]
    s = sequence_logp(elbo, eubo, pos, "mix", 0.5)
    lengths = torch.tensor([4, 2, 6])
    # (-(0.5)(-1)(4) - (-0.25)(-1.5)(2) - 0) / 12
    assert float(spg_loss(s, A, lengths)) == pytest.approx((2.0 - 0.75) / 12)
    with pytest.raises(ValueError, match="variant"):
        sequence_logp(elbo, eubo, pos, "upper")
    with pytest.raises(ValueError, match="mix_weight"):
        sequence_logp(elbo, eubo, pos, "mix", 1.5)


# ---- mask samplers against their exact distributions -----------------------------------------------------------------


def _frequencies(masks):
    count = Counter(tuple(m.tolist()) for m in masks)
    total = sum(count.values())
    return {k: v / total for k, v in count.items()}


def test_random_masks_distribution():
    ell, L, draws = 3, 4, 30000
    cmask = torch.tensor([[True] * ell + [False] * (L - ell)]).expand(draws, L)
    masked, noise_ok = random_masks(cmask, 1, torch.Generator().manual_seed(1))
    assert not noise_ok.any() and masked[:, 0, ell:].all()
    freq = _frequencies(masked[:, 0, :ell])
    exact = {}
    for n in range(1, ell + 1):
        for chosen in itertools.combinations(range(ell), n):
            exact[tuple(i in chosen for i in range(ell))] = 1.0 / (ell * math.comb(ell, n))
    assert set(freq) == set(exact)
    for key, p in exact.items():
        assert freq[key] == pytest.approx(p, abs=0.012)


def _block_random_exact(ell, L, B):
    """Their procedure written as a probability table: block = (uniform block of L/B) mod completion blocks; n
    uniform in 1..m of the block's completion positions; later blocks masked; past the completion masked."""
    n_blocks, comp_blocks = L // B, (ell - 1) // B + 1
    table = Counter()
    for first in range(n_blocks):
        b = first % comp_blocks
        inside = [i for i in range(b * B, (b + 1) * B) if i < ell]
        for n in range(1, len(inside) + 1):
            for chosen in itertools.combinations(inside, n):
                mask = tuple((i // B > b) or (i in chosen) or (i >= ell) for i in range(L))
                table[mask] += 1.0 / n_blocks / len(inside) / math.comb(len(inside), n)
    return table


def test_block_random_masks_distribution():
    ell, L, B, draws = 5, 8, 2, 40000
    cmask = torch.tensor([[True] * ell + [False] * (L - ell)]).expand(draws, L)
    masked, noise_ok = block_random_masks(cmask, B, 1, torch.Generator().manual_seed(2))
    freq = _frequencies(masked[:, 0])
    exact = _block_random_exact(ell, L, B)
    assert set(freq) == set(exact)
    for key, p in exact.items():
        assert freq[key] == pytest.approx(p, abs=0.01)
    # clean earlier blocks are the positions prompt-style noise may hide
    block = (masked[:, 0, :ell].int().argmax(1)) // B
    pos_block = torch.arange(L) // B
    assert torch.equal(noise_ok[:, 0], (pos_block.unsqueeze(0) < block.unsqueeze(1)) & cmask)


def test_block_random_two_samples_use_distinct_permutation_entries():
    cmask = torch.ones((2000, 8), dtype=torch.bool)
    masked, _ = block_random_masks(cmask, 2, 2, torch.Generator().manual_seed(3))
    first_block = masked[:, :, :].int().argmax(2) // 2  # first masked position's block = the chosen block
    assert bool((first_block[:, 0] != first_block[:, 1]).all())  # a full completion: no modulo collisions


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="prefix mask"):
        random_masks(torch.tensor([[True, False, True]]), 1)
    with pytest.raises(ValueError, match="num_t"):
        block_random_masks(torch.ones((1, 4), dtype=torch.bool), 2, 3)
    with pytest.raises(ValueError, match="block_length"):
        block_random_masks(torch.ones((1, 5), dtype=torch.bool), 2, 1)


def test_prompt_noise_hides_only_real_prompt_tokens_and_clean_earlier_blocks():
    gen = torch.Generator().manual_seed(4)
    prompts = torch.tensor([[0, 5, 6]] * 400)
    pmask = torch.tensor([[False, True, True]] * 400)
    completion = torch.full((400, 4), 7)
    cmask = torch.ones((400, 4), dtype=torch.bool)
    masked, noise_ok = block_random_masks(cmask, 2, 1, gen)
    ids, attention, scored = noisy_inputs(prompts, pmask, completion, masked, noise_ok, MASK, 0.5, gen)
    ids = ids.reshape(400, 1, 7)
    assert (ids[:, 0, 0] == 0).all() and not attention.reshape(400, 1, 7)[:, 0, 0].any()
    assert 0.4 < float((ids[:, 0, 1:3] == MASK).double().mean()) < 0.6
    extra = scored & ~masked
    assert not (extra & ~noise_ok).any() and extra.any()
    assert torch.equal(ids[:, :, 3:] == MASK, scored)


# ---- bounds against the exact likelihood -----------------------------------------------------------------------------

PROMPT = [5, 6]
X = [9, 4, 12]


def _exact_log_likelihood(model, prompt, x):
    """log p(x | c) of the masked-diffusion model: the mean over all ell! unmasking orders of the product of the
    one-token conditionals (every subset state scored by one forward)."""
    ell = len(x)
    subsets = list(itertools.product([False, True], repeat=ell))  # revealed positions
    ids = torch.tensor([prompt + [x[i] if rev[i] else MASK for i in range(ell)] for rev in subsets])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[:, len(prompt):], -1)
    index = {rev: k for k, rev in enumerate(subsets)}
    total = 0.0
    for order in itertools.permutations(range(ell)):
        revealed, log_prod = [False] * ell, 0.0
        for i in order:
            log_prod += float(logp[index[tuple(revealed)], i, x[i]])
            revealed[i] = True
        total += math.exp(log_prod)
    return math.log(total / math.factorial(ell))


def _population_terms(model, beta):
    """ell * ELBO term and ell * EUBO term with every mask of the ``random`` scheme at its exact probability."""
    ell = len(X)
    masks, weights = [], []
    for n in range(1, ell + 1):
        for chosen in itertools.combinations(range(ell), n):
            masks.append([i in chosen for i in range(ell)])
            weights.append(1.0 / (ell * math.comb(ell, n)))
    S = len(masks)
    masked = torch.tensor([masks])
    prompt, completion = torch.tensor([PROMPT]), torch.tensor([X])
    ids, att, scored = noisy_inputs(prompt, torch.ones_like(prompt, dtype=torch.bool), completion, masked,
                                    torch.zeros_like(masked), MASK, 0.0)
    with torch.no_grad():
        logp = masked_logprobs(model, ids, att, completion)
    cmask = torch.ones((1, ell), dtype=torch.bool)
    w = torch.tensor(weights, dtype=torch.float64)
    assert S == 7 and float(w.sum()) == pytest.approx(1.0)
    return ell * float(elbo_term(logp, scored, cmask, w)), ell * float(eubo_term(logp, scored, cmask, beta, w))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_elbo_below_and_eubo_above_the_exact_log_likelihood(seed):
    model = tiny_bert(seed)
    exact = _exact_log_likelihood(model, PROMPT, X)
    for beta in (3.0, 4.5):  # beta >= ell: the range where the upper bound is proven
        elbo, eubo = _population_terms(model, beta)
        assert elbo < exact < eubo, (seed, beta, elbo, exact, eubo)


def test_eubo_with_beta_below_length_is_not_a_bound():
    """The docstring's two-token counterexample: q_1 = q_2 = (0.99, 0.01) over the two orders."""
    a, e = 0.99, 0.01
    exact = math.log((a * a + e * e) / 2)
    # masks {0}, {1}, {0, 1} with weights 1/4, 1/4, 1/2; token 0 masked alone sees x_1 (p = e), etc.
    logp = torch.log(torch.tensor([[[e, 1.0], [1.0, e], [a, a]]], dtype=torch.float64))
    scored = torch.tensor([[[True, False], [False, True], [True, True]]])
    cmask = torch.ones((1, 2), dtype=torch.bool)
    w = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    assert 2 * float(eubo_term(logp, scored, cmask, 1.0, w)) < exact  # beta = 1 < ell: below log p
    assert 2 * float(eubo_term(logp, scored, cmask, 2.0, w)) > exact  # beta = ell: above
    assert 2 * float(elbo_term(logp, scored, cmask, w)) < exact


# ---- the loss on a tiny model ----------------------------------------------------------------------------------------


def _spg_inputs():
    gen = torch.Generator().manual_seed(5)
    prompts = torch.tensor([[5, 6], [5, 6], [7, 8], [7, 8]])
    pmask = torch.ones_like(prompts, dtype=torch.bool)
    completion = torch.tensor([[4, 9, 3, 0], [10, 11, 12, 13], [6, 3, 0, 0], [14, 5, 9, 3]])
    cmask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    masked, noise_ok = block_random_masks(cmask, 2, 2, gen)
    ids, att, scored = noisy_inputs(prompts, pmask, completion, masked, noise_ok, MASK, 0.15, gen)
    A = torch.tensor([0.5, -0.5, -0.1, 0.1], dtype=torch.float64)
    return ids, att, scored, completion, cmask, A


def _spg_value(model, ids, att, scored, completion, cmask, A, variant="mix"):
    logp = masked_logprobs(model, ids, att, completion, micro_batch=3)
    s = sequence_logp(elbo_term(logp, scored, cmask), eubo_term(logp, scored, cmask, 1.5), A > 0, variant, 0.5)
    return spg_loss(s, A, cmask.sum(1))


def test_masked_logprobs_match_per_row_forwards():
    model = tiny_bert(6)
    ids, att, _, completion, _, _ = _spg_inputs()
    with torch.no_grad():
        ours = masked_logprobs(model, ids, att, completion, micro_batch=3)
        for r in range(ids.shape[0]):
            n, s = divmod(r, 2)
            logits = model(input_ids=ids[r:r + 1]).logits[0, -4:]
            ref = torch.log_softmax(logits, -1).gather(-1, completion[n].unsqueeze(-1)).squeeze(-1)
            assert torch.allclose(ours[n, s], ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("row, term", [(0, "elbo"), (1, "eubo")])
def test_a_gradient_step_raises_the_positive_bound_or_lowers_the_negative_one(row, term):
    """One small step on one completion's loss: A > 0 raises its ELBO term, A < 0 lowers its EUBO term."""
    model = tiny_bert(8)
    ids, att, scored, completion, cmask, A = _spg_inputs()
    S = scored.shape[1]
    sl = slice(row * S, (row + 1) * S)
    inputs = (ids[sl], att[sl], scored[row:row + 1], completion[row:row + 1], cmask[row:row + 1], A[row:row + 1])

    def value():
        logp = masked_logprobs(model, *inputs[:2], inputs[3])
        fn = elbo_term if term == "elbo" else (lambda *a: eubo_term(*a, 1.5))
        return float(fn(logp, inputs[2], inputs[4]).detach())

    before = value()
    _spg_value(model, *inputs, variant="eubo").backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(1e-4 * p.grad)
    after = value()
    assert (after > before) if float(A[row]) > 0 else (after < before)


@pytest.mark.parametrize("variant", ["elbo", "eubo", "mix"])
def test_loss_gradient_matches_finite_differences(variant):
    model = tiny_bert(7)
    inputs = _spg_inputs()
    params = [p for p in model.parameters() if p.dim() == 2]
    direction = [torch.randn_like(p, generator=None) for p in params]
    loss = _spg_value(model, *inputs, variant=variant)
    grads = torch.autograd.grad(loss, params)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))
    h = 1e-4  # ModernBERT's rotary tables are float32, so a smaller step drowns in their round-off
    values = []
    with torch.no_grad():
        for sign in (1.0, -1.0):
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * h * d)
            values.append(float(_spg_value(model, *inputs, variant=variant)))
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * h * d)
    numeric = (values[0] - values[1]) / (2 * h)
    assert abs(analytic) > 1e-6
    assert analytic == pytest.approx(numeric, rel=2e-5)


# ---- `egspo rl --algorithm spg` in the loop (fixtures of tests/test_trainer.py) ------------------------------------

from test_trainer import (  # noqa: E402,F401
    _register_tasks, grads_per_step, make_config, params_of, straight_and_resumed,
)


@pytest.mark.parametrize("variant, masking", [("mix", "block_random"), ("eubo", "random"), ("elbo", "block_random")])
def test_rl_spg_runs_the_tested_loss_and_accumulates_exactly(tiny_model, train_file, tmp_path, monkeypatch,
                                                             variant, masking):
    import egspo.core.spg as spg
    from egspo.rl.trainer import RLTrainer

    settings = dict(algorithm="spg", beta=0.0, spg_variant=variant, spg_masking=masking, spg_beta=1.0)
    calls = []
    real = spg.spg_loss
    monkeypatch.setattr(spg, "spg_loss", lambda seq, *a: (calls.append(len(seq)), real(seq, *a) * 0.0)[1])
    trainer = RLTrainer(make_config(tiny_model, train_file, tmp_path / "zero", weight_decay=0.0, grad_accum=2,
                                    **settings))
    before = params_of(trainer)
    trainer.run_iteration([0, 1])
    assert calls == [4, 4, 4, 4]  # mu = 2 optimizer steps x 2 pieces of 4 rows
    assert all(torch.equal(v, before[k]) for k, v in params_of(trainer).items())
    monkeypatch.setattr(spg, "spg_loss", real)
    plain = grads_per_step(monkeypatch, make_config(tiny_model, train_file, tmp_path / "a", **settings))
    accum = grads_per_step(monkeypatch, make_config(tiny_model, train_file, tmp_path / "b", grad_accum=4,
                                                     **settings))
    assert len(plain) == len(accum) == 2
    for g_plain, g_accum in zip(plain, accum, strict=True):
        assert any(float(g.abs().max()) > 1e-6 for g in g_plain)
        for g1, g2 in zip(g_plain, g_accum, strict=True):
            torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)


def test_rl_spg_resume_reproduces_an_uninterrupted_run(tiny_model, train_file, tmp_path):
    a, b, rows = straight_and_resumed(tiny_model, train_file, tmp_path, algorithm="spg", beta=0.0, save_every=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in rows] == [1, 2] and all(r["spg_elbo_per_token"] < 0 for r in rows)


def test_rl_spg_settings_are_checked(tiny_model, train_file, tmp_path):
    for overrides, message in ((dict(spg_variant="upper"), "spg_variant"), (dict(spg_beta=0.0), "spg_beta"),
                               (dict(spg_mix_weight=1.5), "spg_mix_weight"), (dict(spg_num_t=3), "spg_num_t")):
        with pytest.raises(ValueError, match=message):
            make_config(tiny_model, train_file, tmp_path / "x", algorithm="spg", **overrides).validate()
    # SPG's settings bind only SPG: another algorithm with one block (fewer blocks than spg_num_t) is valid
    make_config(tiny_model, train_file, tmp_path / "x", algorithm="egspo", spg_num_t=3).validate()


# ---- config.yaml: wd1 and SPG in both presets' main comparison --------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_config_runs_wd1_and_spg_in_the_main_comparison(preset, tmp_path):
    from pathlib import Path

    import yaml

    from egspo.report.tables import method_label
    from egspo.rl.config import RLConfig
    from egspo.workflow.plan import Plan

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    plan = Plan.from_raw({**raw, "preset": preset})
    assert {"wd1", "spg"} <= set(plan.C["compare"])
    assert method_label("spg") != "spg" and method_label("wd1") == "wd1"
    train = tmp_path / "train.jsonl"
    train.write_text("{}\n")
    for task in dict.fromkeys(plan.train_task(t) for t in plan.C["tasks"]):
        for method in ("wd1", "spg"):
            cfg = RLConfig(model="m", task=task, train=str(train), out=str(tmp_path / "out"),
                           **plan.method_settings(method, task))
            cfg.validate()
            assert cfg.algorithm == method and cfg.beta == 0.0
        spg = RLConfig(model="m", task=task, train=str(train), out="o", **plan.method_settings("spg", task))
        assert (spg.spg_variant, spg.spg_mix_weight, spg.spg_num_t) == ("mix", 0.5, 2)
        assert spg.spg_beta == (1.0 if task == "sudoku" else 1.5)  # their scripts' per-task beta
        egspo = plan.method_settings("egspo_sa", task)
        assert all(egspo[k] == plan.method_settings("wd1", task)[k] for k in ("max_steps", "temperature", "gen_length"))
