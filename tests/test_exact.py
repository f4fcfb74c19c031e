"""The exact enumeration (egspo.verify.exact): hand-computed cases, normalisation, Bellman consistency, finite differences,
and the real sampler's trajectory distribution against the enumerated one (random and low-confidence remasking)."""

import math

import pytest
import torch

from egspo.verify.enumerable_policy import EnumerablePolicy, match_reward, table_reward
from egspo.verify.exact import ExactProblem, chi2_sf, enumerate_trajectories
from egspo.verify.gradcheck import single_thread
from egspo.core.sampler import SamplerConfig, generate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids spinning threads on a shared machine."""
    with single_thread():
        yield


def make_problem(vocab=3, L=3, T=3, B=3, seed=0, reward="table", remasking="random", prompt=(0,)):
    model = EnumerablePolicy(vocab, len(prompt) + L, seed=seed)
    cfg = SamplerConfig(gen_length=L, steps=T, block_length=B, mask_token_id=vocab, temperature=1.0,
                        remasking=remasking)
    fn = table_reward(vocab, L, seed) if reward == "table" else match_reward([0] * L, vocab)
    return ExactProblem(model, list(prompt), cfg, fn)


def constant_policy(p0, p1):
    """L=2, V=2 policy whose completion distributions ignore the state: p(.|S) = p0 at position 0, p1 at 1."""
    model = EnumerablePolicy(2, 3, seed=0)
    with torch.no_grad():
        model.output.weight.zero_()
        bias = torch.zeros(3, 2, dtype=torch.float64)
        bias[1] = torch.log(torch.tensor(p0, dtype=torch.float64))
        bias[2] = torch.log(torch.tensor(p1, dtype=torch.float64))
        model.output.bias.copy_(bias.reshape(-1))
    cfg = SamplerConfig(gen_length=2, steps=2, block_length=2, mask_token_id=2, temperature=1.0)
    return ExactProblem(model, [0], cfg, match_reward([0, 0], 2))


def output_bias_grad(pb, grad):
    """The [seq_pos, vocab] block of a flattened gradient that belongs to ``output.bias``."""
    offset = 0
    for name, p in pb.model.named_parameters():
        if name == "output.bias":
            return grad[offset:offset + p.numel()].view(pb.model.seq_len, pb.vocab)
        offset += p.numel()
    raise AssertionError("no output.bias")


def test_hand_computed_objective_and_gradient_random_remasking():
    # r = #positions equal to 0, positions independent: J = p0(0) + p1(0) = 0.9 + 0.6
    pb = constant_policy([0.9, 0.1], [0.6, 0.4])
    J, grad, prob = pb.exact_gradient("random")
    assert J == pytest.approx(1.5, abs=1e-12)
    # every trajectory: 1/2 for the order times p0(x0) p1(x1)
    assert prob.shape == (8,)
    assert sorted(prob.tolist()) == pytest.approx(sorted([0.5 * a * b for a in (0.9, 0.1) for b in (0.6, 0.4)] * 2))
    # dJ/d bias_{i,v} = p_i(0) (1[v=0] - p_i(v)); output.bias is laid out [seq_pos, vocab], completion at seq 1, 2
    g_bias = output_bias_grad(pb, grad)
    assert g_bias[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-14)
    assert g_bias[1].tolist() == pytest.approx([0.09, -0.09], abs=1e-12)
    assert g_bias[2].tolist() == pytest.approx([0.24, -0.24], abs=1e-12)


def test_hand_computed_low_confidence():
    # Step 0 samples both positions; the larger of p0(x0), p1(x1) is committed.
    # x0 = 0 (conf 0.9) always wins; x0 = 1 (conf 0.1) always loses, then position 1 is committed with x1 ~ p1.
    pb = constant_policy([0.9, 0.1], [0.6, 0.4])
    step = pb.step_probs("low_confidence").detach()
    first = {}
    for n in range(pb.N):
        c, x = pb.commit_step[n].tolist(), pb.completion[n].tolist()
        pos = c.index(0)
        first[(pos, x[pos])] = step[n, 0].item()
        # the second step commits the remaining position, whatever its confidence
        expected_second = [0.6, 0.4][x[1]] if pos == 0 else [0.9, 0.1][x[0]]
        assert step[n, 1].item() == pytest.approx(expected_second, abs=1e-12)
    assert first[(0, 0)] == pytest.approx(0.9, abs=1e-12)
    assert first[(0, 1)] == 0.0
    assert first[(1, 0)] == pytest.approx(0.6 * 0.1, abs=1e-12)
    assert first[(1, 1)] == pytest.approx(0.4 * 0.1, abs=1e-12)
    # P(x0 = 0) = a + (1 - a) a with a = 0.9; P(x1 = 0) = 0.6  ->  J = 0.99 + 0.6
    J, grad, _ = pb.exact_gradient("low_confidence")
    assert J == pytest.approx(1.59, abs=1e-12)
    # dJ/d bias_{0,v} = (2 - 2a) * a (1[v=0] - p0(v)) = 0.2 * (0.09, -0.09); position 1 as with random remasking
    g_bias = output_bias_grad(pb, grad)
    assert g_bias[1].tolist() == pytest.approx([0.018, -0.018], abs=1e-12)
    assert g_bias[2].tolist() == pytest.approx([0.24, -0.24], abs=1e-12)


@pytest.mark.parametrize("L,T,B,orders", [(3, 3, 3, 6), (3, 2, 3, 3), (4, 4, 2, 4), (4, 2, 2, 1), (4, 2, 4, 6)])
def test_enumeration_counts_and_normalisation(L, T, B, orders):
    pb = make_problem(vocab=2 if L == 4 else 3, L=L, T=T, B=B)
    assert pb.N == orders * pb.vocab ** L
    assert len({(tuple(x), tuple(c)) for x, c in zip(pb.completion.tolist(), pb.commit_step.tolist())}) == pb.N
    counts = torch.stack([(pb.commit_step == j).sum(1) for j in range(T)], 1)
    assert (counts == torch.tensor(pb.schedule)).all()
    for remasking in ("random", "low_confidence"):
        _, prob = pb.objective(remasking)
        assert prob.sum().item() == pytest.approx(1.0, abs=1e-12)
        assert bool((prob >= 0).all())


def test_enumerate_rejects_bad_schedule():
    with pytest.raises(ValueError, match="schedule"):
        enumerate_trajectories([2, 2], 3, 3, 2)
    with pytest.raises(ValueError, match="block_length"):
        enumerate_trajectories([1, 1, 1], 3, 2, 2)


def test_value_function_is_consistent():
    """V(S_0) = J, E[V(S_j)] = J for every j, and the Bellman equation V(S_j) = E[V(S_{j+1}) | S_j]."""
    pb = make_problem(L=3, T=2, B=3)  # a k=2 step then a k=1 step
    for remasking in ("random", "low_confidence"):
        J, _, prob = pb.exact_gradient(remasking)
        value = pb.state_values(prob)
        assert value[:, 0].tolist() == pytest.approx([J] * pb.N, abs=1e-12)
        for j in range(pb.T):
            assert float(prob @ value[:, j]) == pytest.approx(J, abs=1e-12)
        nxt = torch.cat([value[:, 1:], pb.rewards.unsqueeze(1)], 1)  # V(S_{j+1}), V(S_T) = r
        step = pb.step_probs(remasking).detach()
        for j in range(pb.T):
            # group by S_j: sum over the distinct transitions S_j -> S_{j+1} of P(S_{j+1}|S_j) V(S_{j+1})
            seen = {}
            for n in range(pb.N):
                s, s1 = tuple(pb.states[n, j].tolist()), tuple(pb.states[n, j + 1].tolist())
                seen.setdefault(s, {})[s1] = (step[n, j].item(), nxt[n, j].item())
            for n in range(pb.N):
                s = tuple(pb.states[n, j].tolist())
                if float(prob[n]) > 0:
                    bellman = sum(p * v for p, v in seen[s].values())
                    assert value[n, j].item() == pytest.approx(bellman, abs=1e-12)


@pytest.mark.parametrize("remasking", ["random", "low_confidence"])
def test_gradient_matches_finite_differences(remasking):
    pb = make_problem(L=3, T=2, B=3, seed=3)
    _, grad, _ = pb.exact_gradient(remasking)
    params = pb.params
    gen = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(eps * d)
        plus = pb.objective(remasking)[0].item()
        for p, d in zip(params, direction):
            p.sub_(2 * eps * d)
        minus = pb.objective(remasking)[0].item()
        for p, d in zip(params, direction):
            p.add_(eps * d)
    fd = (plus - minus) / (2 * eps)
    analytic = float(grad @ torch.cat([d.reshape(-1) for d in direction]))
    assert fd == pytest.approx(analytic, rel=1e-6, abs=1e-9)


def pooled_chi2(counts, prob, n):
    """Pearson chi-square p-value with cells of expected count < 5 pooled; also returns the count on P=0 cells."""
    expected = n * prob
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big & (prob > 0)].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big & (prob > 0)].sum().view(1)])
    keep = exp > 0
    stat = float((((obs - exp) ** 2) / exp)[keep].sum())
    return chi2_sf(stat, int(keep.sum()) - 1), float(counts[prob == 0].sum())


@pytest.mark.parametrize("L,T,B", [(3, 3, 3), (3, 2, 3), (4, 4, 2)])
@pytest.mark.parametrize("remasking", ["random", "low_confidence"])
def test_real_sampler_matches_exact_distribution(remasking, L, T, B):
    """Monte Carlo of egspo.core.sampler.generate (tau = 1) against the enumerated P(tau): pooled chi-square, and no
    sample on a trajectory of exact probability 0. Also: the sampler's records equal the exact per-step terms."""
    pb = make_problem(vocab=2 if L == 4 else 3, L=L, T=T, B=B, seed=1)
    cfg = SamplerConfig(gen_length=L, steps=T, block_length=B, mask_token_id=pb.mask_id, temperature=1.0,
                        remasking=remasking)
    n = 6000
    rollout = generate(pb.model, torch.zeros(n, 1, dtype=torch.long), cfg, generator=torch.Generator().manual_seed(5))
    idx = pb.trajectory_index(rollout.completion, rollout.commit_step)
    counts = torch.bincount(idx, minlength=pb.N).to(torch.float64)
    _, prob = pb.objective(remasking)
    p_value, on_zero = pooled_chi2(counts, prob.detach(), n)
    assert on_zero == 0
    assert p_value > 1e-3, p_value
    terms = pb.terms()
    assert torch.allclose(rollout.token_logprobs.double(), terms.token_logprobs.detach()[idx], atol=1e-5)
    assert torch.allclose(rollout.step_logprobs.double(), terms.step_logprobs.detach()[idx], atol=1e-5)
    assert torch.allclose(rollout.step_entropy.double(), terms.step_entropy[idx], atol=1e-5)
    assert torch.equal(rollout.greedy_fill, terms.greedy_fill[idx])


def test_distribution_check_can_fail():
    """Samples of low-confidence remasking are rejected against the random-remasking distribution and vice versa."""
    pb = make_problem(seed=1)
    n = 6000
    for sampled, other in (("low_confidence", "random"), ("random", "low_confidence")):
        cfg = SamplerConfig(gen_length=3, steps=3, block_length=3, mask_token_id=pb.mask_id, temperature=1.0,
                            remasking=sampled)
        rollout = generate(pb.model, torch.zeros(n, 1, dtype=torch.long), cfg,
                           generator=torch.Generator().manual_seed(5))
        counts = torch.bincount(pb.trajectory_index(rollout.completion, rollout.commit_step), minlength=pb.N)
        p_value, on_zero = pooled_chi2(counts.double(), pb.objective(other)[1].detach(), n)
        assert p_value < 1e-6 or on_zero > 0


def test_low_confidence_ties_are_refused():
    pb = constant_policy([0.5, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="tie"):
        pb.step_probs("low_confidence")


def test_policy_validates_input():
    model = EnumerablePolicy(3, 4)
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.full((2, 4), 4, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.tensor([[0, 1, 1, 1]]))
    out = model(torch.full((2, 4), 3, dtype=torch.long)).logits
    assert out.shape == (2, 4, 4) and out.dtype == torch.float64
    assert torch.softmax(out, -1)[..., 3].max().item() == 0.0  # the mask is never proposed


def test_problem_validates_configuration():
    model = EnumerablePolicy(3, 4)
    cfg = SamplerConfig(gen_length=3, steps=3, block_length=3, mask_token_id=3, temperature=1.0)
    with pytest.raises(ValueError, match="seq_len"):
        ExactProblem(model, [0, 1], cfg, match_reward([0, 0, 0], 3))
    with pytest.raises(ValueError, match="mask_token_id"):
        ExactProblem(model, [0], SamplerConfig(gen_length=3, steps=3, block_length=3, mask_token_id=5),
                     match_reward([0, 0, 0], 3))
    with pytest.raises(ValueError, match="remasking"):
        ExactProblem(model, [0], cfg, match_reward([0, 0, 0], 3)).step_probs("topk")
    with pytest.raises(ValueError, match="reward"):
        match_reward([0, 0], 3)(torch.zeros(1, 3, dtype=torch.long))


def test_table_reward_is_deterministic_and_varied():
    r1, r2 = table_reward(3, 3, 0), table_reward(3, 3, 0)
    x = torch.tensor(list(__import__("itertools").product(range(3), repeat=3)))
    assert torch.equal(r1(x), r2(x))
    assert len(set(r1(x).tolist())) > 3
    assert math.isclose(float(match_reward([0, 1, 2], 3)(torch.tensor([[0, 1, 1]]))[0]), 2.0)
