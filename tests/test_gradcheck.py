"""Exactness of the gradient estimators (egspo.verify.gradcheck): the library's step scores, selectors and stepwise returns
against the enumerated true gradient, a Monte-Carlo run of the real sampler, and checks that a broken estimator fails.
"""

import csv

import pytest
import torch

from egspo.core.advantages import stepwise_returns
from egspo.cli import run_command as main  # errors propagate (egspo.cli.main reports them)
from egspo.verify.estimator_moments import estimator_stats, library_step_scores
from egspo.verify.exact import row_jacobian
from egspo.verify.gradcheck import COLUMNS, Setting, build_problem, gradcheck_rows, single_thread
from egspo.core.objective import step_batch, step_logprob, token_logprobs
from egspo.core.sampler import SamplerConfig, generate
from egspo.core.selection import select_steps

LAMS = [0.0, 0.5, 1.0, 2.0]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids spinning threads on a shared machine."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def problem():
    return build_problem(Setting())


@pytest.fixture(scope="module")
def rows(problem):
    return gradcheck_rows(problem, [1, 2], LAMS)


def pick(rows, **kw):
    out = [r for r in rows if all(r[k] == v for k, v in kw.items())]
    assert out, kw
    return out


def test_library_scores_equal_exact_scores(problem):
    """With random remasking the library's log pi(S_{j+1}|S_j) is the exact transition log-probability up to the
    constant position-choice term, so their gradients agree per trajectory and step."""
    logpi, scores = library_step_scores(problem.model, problem.rollout(), problem.params)
    assert torch.allclose(logpi, problem.terms().step_logprobs.detach(), atol=1e-13, rtol=0)
    exact = problem.exact_step_scores("random")
    assert (scores - exact).abs().max().item() < 1e-12
    assert scores.abs().max().item() > 0.1


def test_chunked_jacobians_agree(problem):
    """Scores computed over small chunks of trajectories equal those of one big chunk."""
    rollout = problem.rollout()
    lp_a, sc_a = library_step_scores(problem.model, rollout, problem.params, chunk_rows=7)
    lp_b, sc_b = library_step_scores(problem.model, rollout, problem.params, chunk_rows=10_000)
    assert torch.allclose(lp_a, lp_b, atol=1e-14, rtol=0) and torch.allclose(sc_a, sc_b, atol=1e-13, rtol=0)
    ex_a = problem.exact_step_scores("low_confidence", chunk_rows=7)
    ex_b = problem.exact_step_scores("low_confidence", chunk_rows=10_000)
    assert torch.allclose(ex_a, ex_b, atol=1e-12, rtol=0)


def test_all_steps_are_unbiased_with_random_remasking(rows):
    """The issue's done-criterion: all steps, random remasking, every state-dependent baseline and lambda."""
    chosen = pick(rows, selection="all", remasking="random", score="library")
    grid = {(b, lam) for b in ("none", "greedy", "value") for lam in LAMS}
    assert {(r["baseline"], r["lam"]) for r in chosen} == grid
    for r in chosen:
        assert r["rel_error"] < 1e-6, r
        assert r["cosine"] > 1 - 1e-9, r
        assert r["variance"] > 0


def test_random_k_gives_k_over_t_of_the_gradient(rows):
    """A uniformly random K-subset of the T steps estimates (K/T) grad J: cosine 1, relative error 1 - K/T."""
    for r in pick(rows, selection="random", remasking="random"):
        assert r["cosine"] == pytest.approx(1.0, abs=1e-9)
        assert r["rel_error"] == pytest.approx(1 - r["k"] / 3, abs=1e-9)


def test_biased_variants_are_reported(rows):
    """Entropy / uniform K-step selection and the low-confidence surrogate: bias finite and clearly non-zero;
    the exact low-confidence score removes it."""
    for r in rows:
        for c in ("cosine", "rel_error", "variance"):
            assert torch.isfinite(torch.tensor(r[c])), r
        assert r["variance"] >= -1e-12
    for sel in ("entropy", "uniform"):
        assert all(r["rel_error"] > 1e-3 for r in pick(rows, selection=sel, remasking="random"))
    assert all(r["rel_error"] > 1e-3 for r in pick(rows, remasking="low_confidence", score="library"))
    for r in pick(rows, remasking="low_confidence", score="exact"):
        assert r["rel_error"] < 1e-6, r


def test_lambda_zero_ignores_the_baseline(rows):
    """R = (r + lam (r - b)) / (1 + lam) is r at lam = 0 for every baseline: identical rows."""
    for sel in ("all", "entropy", "uniform", "random"):
        for remasking in ("random", "low_confidence"):
            by_b = {r["baseline"]: r for r in pick(rows, selection=sel, remasking=remasking, lam=0.0, score="library")
                    if r["k"] in (1, 3)}
            assert by_b["none"]["variance"] == pytest.approx(by_b["greedy"]["variance"], rel=1e-12)
            assert by_b["none"]["rel_error"] == pytest.approx(by_b["value"]["rel_error"], rel=1e-12)


def test_the_check_detects_broken_estimators(problem):
    """Dropping a step, flipping the sign of one step's advantage, or scoring steps with the mean instead of the sum
    over U_j (when |U_j| = 2) all give rel_error >> 1e-6, while the correct estimator passes."""
    J, grad_j, prob = problem.exact_gradient("random")
    _, scores = library_step_scores(problem.model, problem.rollout(), problem.params)
    ret = problem.rewards.view(-1, 1).expand(-1, problem.T).clone()
    assert estimator_stats(prob, scores, [ret], grad_j).rel_error < 1e-12
    dropped = ret.clone()
    dropped[:, 0] = 0
    assert estimator_stats(prob, scores, [dropped], grad_j).rel_error > 1e-2
    flipped = ret.clone()
    flipped[:, 1] *= -1
    assert estimator_stats(prob, scores, [flipped], grad_j).rel_error > 1e-2

    two = build_problem(Setting(steps=2))  # schedule [2, 1]: two tokens in the first step
    assert two.schedule == [2, 1]
    J2, grad2, prob2 = two.exact_gradient("random")
    batch = step_batch(two.rollout(), torch.arange(2).expand(two.N, 2).contiguous())
    ret2 = two.rewards.view(-1, 1).expand(-1, 2)
    for reduction, ok in (("sum", True), ("mean", False)):
        ell = step_logprob(token_logprobs(two.model, batch), batch.target_mask, reduction=reduction)
        sc = row_jacobian(ell, two.params).view(two.N, 2, -1)
        err = estimator_stats(prob2, sc, [ret2], grad2).rel_error
        assert (err < 1e-10) if ok else (err > 1e-2), (reduction, err)


@pytest.mark.parametrize("remasking", ["random", "low_confidence"])
def test_monte_carlo_of_the_real_sampler(problem, remasking):
    """EGSPO-SA's estimator (all steps, greedy one-step baseline, lam = 0.5) on trajectories drawn by
    egspo.core.sampler.generate (tau = 1): the mean gradient over n samples equals the enumerated per-trajectory gradients
    averaged over the same samples, and lies within 4 standard errors, in every coordinate, of the exact expectation
    sum_tau P(tau) g(tau). With random remasking that expectation is grad J, and an estimator with a dropped step is
    rejected by the same test; with low-confidence remasking the sampled surrogate is visibly off grad J."""
    T, n = problem.T, 4000
    cfg = SamplerConfig(gen_length=problem.L, steps=T, block_length=problem.B, mask_token_id=problem.mask_id,
                        temperature=1.0, remasking=remasking)
    rollout = generate(problem.model, problem.prompt.expand(n, -1), cfg, generator=torch.Generator().manual_seed(11))
    reward = problem.reward_fn(rollout.completion)
    greedy = problem.reward_fn(rollout.greedy_fill.reshape(-1, problem.L)).view(n, T)
    ret = stepwise_returns(reward, greedy, 0.5).to(torch.float64)
    sel = select_steps(rollout.step_entropy, T, "all")
    batch = step_batch(rollout, sel.steps)
    ell = step_logprob(token_logprobs(problem.model, batch), batch.target_mask)
    adv = ret.gather(1, sel.steps).reshape(-1)
    mc = torch.cat([g.reshape(-1) for g in torch.autograd.grad((adv * ell).sum() / n, problem.params)])

    J, grad_j, prob = problem.exact_gradient(remasking)
    _, scores = library_step_scores(problem.model, problem.rollout(), problem.params)
    all_greedy = problem.reward_fn(problem.terms().greedy_fill.reshape(-1, problem.L)).view(problem.N, T)
    all_ret = stepwise_returns(problem.rewards, all_greedy, 0.5).double()
    per_traj = torch.einsum("nt,ntd->nd", all_ret, scores)
    idx = problem.trajectory_index(rollout.completion, rollout.commit_step)
    assert torch.allclose(mc, per_traj[idx].mean(0), atol=1e-12, rtol=0)

    mean = prob @ per_traj
    se = ((prob @ per_traj ** 2 - mean ** 2).clamp_min(0) / n).sqrt()
    live = se > 0  # the logits at the prompt position are never scored: their coordinates are exactly 0
    assert int(live.sum()) > 200
    assert (mc[~live].abs().max().item() == 0.0) and (mean[~live].abs().max().item() == 0.0)
    mc, mean, se, grad_j, per_traj = mc[live], mean[live], se[live], grad_j[live], per_traj[:, live]
    scores = scores[..., live]
    z = (mc - mean).abs() / se
    assert z.max().item() < 4.0, z.max()

    z_true = ((mc - grad_j).abs() / se).max().item()
    if remasking == "random":
        assert (mean - grad_j).norm() / grad_j.norm() < 1e-12
        broken = per_traj - torch.einsum("n,nd->nd", all_ret[:, 0], scores[:, 0])
        z_broken = (mc - prob @ broken).abs() / se
        assert z_broken.max().item() > 6.0
    else:
        assert z_true > 8.0, z_true


@pytest.mark.timeout(300)  # a hang guard (fails only if this never finishes), not a speed test
def test_command_writes_the_table(tmp_path, capsys):
    out = tmp_path / "sub" / "gradcheck.csv"
    assert main(["gradcheck", "--out", str(out)]) == 0
    with open(out, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        body = list(reader)
    assert header[:8] == ["selection", "k", "lam", "baseline", "remasking", "cosine", "rel_error", "variance"]
    assert header == list(COLUMNS)
    # 2 remaskings x (all + 3 selectors x K in {1, 2}) x 3 baselines x 4 lambdas + 12 exact low-confidence rows
    assert len(body) == 2 * 7 * 3 * 4 + 12
    done = [r for r in body if r[0] == "all" and r[4] == "random"]
    assert len(done) == 12 and all(float(r[6]) < 1e-6 for r in done)
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind
    printed = capsys.readouterr().out
    assert "rel_error" in printed and "low_confidence" in printed


def test_command_other_shapes_and_errors(tmp_path):
    out = tmp_path / "g.csv"
    assert main(["gradcheck", "--out", str(out), "--steps", "2", "--k", "1", "--lams", "0,1", "--reward", "match",
                 "--vocab", "2", "--length", "4", "--block-length", "2"]) == 0
    with open(out, newline="") as fh:
        body = list(csv.DictReader(fh))
    assert {r["k"] for r in body} == {"1", "2"}
    assert all(float(r["rel_error"]) < 1e-6 for r in body if r["selection"] == "all" and r["remasking"] == "random")
    with pytest.raises(ValueError, match="k must lie"):
        main(["gradcheck", "--out", str(out), "--k", "3"])
    with pytest.raises(ValueError, match="lams item is out of range"):
        main(["gradcheck", "--out", str(out), "--lams", "-1"])
