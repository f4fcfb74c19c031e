"""`egspo gradcheck`: every gradient estimator against the true policy gradient, exactly, on an enumerable policy.

For a policy small enough to list every trajectory (:mod:`egspo.verify.exact`), the true gradient ``grad J`` of
``J = E[r(S_T)]`` comes from autograd through the enumerated trajectory probabilities, and the exact expectation of
an estimator ``g(tau) = grad sum_{j in K(tau)} A_j log pi(S_{j+1} | S_j)`` (``A_j`` detached) is
``sum_tau P(tau) g(tau)``, with ``log pi`` from the library objective (``step_batch`` -> ``token_logprobs`` ->
``step_logprob``), steps from ``select_steps`` and returns from ``stepwise_returns``:
``R_j = (r + lam (r - b_j)) / (1 + lam) = r - lam/(1+lam) b_j``.

Baselines ``b_j``: ``none`` (0), ``greedy`` (``r(x_hat(S_j))``, EGSPO-SA's one-step reward) and ``value``
(``V(S_j) = E[r | S_j]``, exact). All three depend on ``S_j`` only, so with random remasking the all-steps estimator
is unbiased for every ``lam`` (``rel_error`` at float64 round-off); a random K-subset gives ``(K/T) grad J``.
Entropy top-K and uniform-K selections and the low-confidence surrogate (position-choice score omitted) are biased;
the table measures by how much. ``score=exact`` rows replace the surrogate by the exact low-confidence
transition score, which restores unbiasedness.

Columns: ``selection, k, lam, baseline, remasking, cosine, rel_error, variance`` (cosine and relative L2 error of
``E g`` against ``grad J``; ``variance = E|g|^2 - |E g|^2``), then ``score, n_trajectories, J, grad_norm`` and
``estimate_norm = |E g|`` (with ``grad_norm`` and ``cosine`` it gives the error after any rescaling of ``E g``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from egspo.settings import add_arguments, check_values, from_namespace
from egspo.utils.files import atomic_write_text
from egspo.verify.enumerable_policy import EnumerablePolicy, match_reward, table_reward
from egspo.verify.estimator_moments import all_subsets, estimator_stats, library_step_scores
from egspo.verify.exact import ExactProblem
from egspo.verify.gradcheck_config import GradcheckConfig

COLUMNS = ("selection", "k", "lam", "baseline", "remasking", "cosine", "rel_error", "variance",
           "score", "n_trajectories", "J", "grad_norm", "estimate_norm")
BASELINES = ("none", "greedy", "value")
REMASKINGS = ("random", "low_confidence")


@dataclass
class Setting:
    """The enumerable problem: ``vocab`` real tokens, prompt of ``prompt_length`` tokens, L, T, B, model size."""

    vocab: int = 3
    gen_length: int = 3
    steps: int | None = None         # default: gen_length (one token per step)
    block_length: int | None = None  # default: gen_length (one block)
    prompt_length: int = 1
    embed_dim: int = 3
    hidden: int = 8
    reward: str = "table"            # "table" (fixed random table) or "match" (positions equal to 0,1,2,...)
    seed: int = 0


def build_problem(setting: Setting) -> ExactProblem:
    """The policy, the sampler configuration (temperature 1) and the enumeration for ``setting``."""
    from egspo.core.sampler import SamplerConfig

    s = setting
    if s.reward not in ("table", "match"):
        raise ValueError(f"reward must be 'table' or 'match', got {s.reward!r}")
    if s.prompt_length < 1:
        raise ValueError(f"prompt_length must be >= 1, got {s.prompt_length}")
    steps = s.gen_length if s.steps is None else s.steps
    block = s.gen_length if s.block_length is None else s.block_length
    model = EnumerablePolicy(s.vocab, s.prompt_length + s.gen_length, embed_dim=s.embed_dim, hidden=s.hidden,
                             seed=s.seed)
    config = SamplerConfig(gen_length=s.gen_length, steps=steps, block_length=block, mask_token_id=model.mask_token_id,
                           temperature=1.0, remasking="random")
    reward = (table_reward(s.vocab, s.gen_length, s.seed) if s.reward == "table"
              else match_reward([i % s.vocab for i in range(s.gen_length)], s.vocab))
    prompt = [i % s.vocab for i in range(s.prompt_length)]
    return ExactProblem(model, prompt, config, reward)


def selection_indicators(step_entropy: torch.Tensor, method: str, k: int, steps: int) -> list[torch.Tensor]:
    """The equally likely ``[N, T]`` 0/1 step indicators of a selector: one from ``select_steps`` for ``all``,
    ``entropy`` and ``uniform``; every K-subset for ``random`` (its exact expectation)."""
    from egspo.core.selection import select_steps

    n = step_entropy.shape[0]
    if method == "random":
        return all_subsets(steps, k, n)
    sel = select_steps(step_entropy, k, method)
    ind = torch.zeros(n, steps, dtype=torch.float64)
    ind.scatter_(1, sel.steps, sel.valid.to(torch.float64))
    if not bool((ind.sum(1) == k).all()):
        raise ValueError(f"select_steps({method!r}, k={k}) did not select {k} distinct steps in every row")
    return [ind]


def gradcheck_rows(problem: ExactProblem, ks: list[int], lams: list[float]) -> list[dict]:
    """One row per (remasking, selection, k, baseline, lam, score) with the exact estimator statistics."""
    from egspo.core.advantages import stepwise_returns

    T, N, L = problem.T, problem.N, problem.L
    for k in ks:
        if not 1 <= k < T:
            raise ValueError(f"every k must lie in [1, T-1] = [1, {T - 1}], got {k}")
    rollout = problem.rollout()
    _, lib_scores = library_step_scores(problem.model, rollout, problem.params)
    greedy_b = problem.reward_fn(rollout.greedy_fill.reshape(-1, L)).view(N, T).to(torch.float64)
    selections = [("all", T)] + [(m, k) for k in ks for m in ("entropy", "uniform", "random")]
    indicators = {(m, k): selection_indicators(rollout.step_entropy, m, k, T) for m, k in selections}
    rows = []
    for remasking in REMASKINGS:
        J, grad_j, prob = problem.exact_gradient(remasking)
        baselines = {"none": torch.zeros(N, T, dtype=torch.float64), "greedy": greedy_b,
                     "value": problem.state_values(prob)}
        variants = [(sel, lib_scores, "library") for sel in selections]
        if remasking == "low_confidence":
            variants.append((("all", T), problem.exact_step_scores(remasking), "exact"))
        for (method, k), scores, score_name in variants:
            for baseline in BASELINES:
                for lam in lams:
                    ret = stepwise_returns(problem.rewards, baselines[baseline], float(lam)).to(torch.float64)
                    stats = estimator_stats(prob, scores, [ret * ind for ind in indicators[(method, k)]], grad_j)
                    rows.append({"selection": method, "k": k, "lam": float(lam), "baseline": baseline,
                                 "remasking": remasking, "cosine": stats.cosine, "rel_error": stats.rel_error,
                                 "variance": stats.variance, "score": score_name, "n_trajectories": N, "J": J,
                                 "grad_norm": float(grad_j.norm()), "estimate_norm": float(stats.mean.norm())})
    return rows


def write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """Write ``rows`` with :data:`COLUMNS` to ``path`` atomically (temp file in the same folder + os.replace)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: (repr(row[c]) if isinstance(row[c], float) else row[c]) for c in COLUMNS})
    atomic_write_text(path, buffer.getvalue())


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of the rows."""
    head = f"{'remasking':<15}{'score':<8}{'selection':<10}{'k':>2} {'baseline':<8}{'lam':>5}" \
           f"{'cosine':>12}{'rel_error':>12}{'variance':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['remasking']:<15}{r['score']:<8}{r['selection']:<10}{r['k']:>2} {r['baseline']:<8}"
                     f"{r['lam']:>5.2g}{r['cosine']:>12.8f}{r['rel_error']:>12.3e}{r['variance']:>12.5g}")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    """The flags of `GradcheckConfig` (one per field, ``-`` for ``_``)."""
    add_arguments(parser, GradcheckConfig)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: the tensors here are tiny, and on a shared machine extra threads only
    spin (measured: 0.7 s with one thread, 6-14 s with two on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(args: argparse.Namespace) -> int:
    check_values(from_namespace(GradcheckConfig, args))  # ValueError naming the flag
    with single_thread():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    setting = Setting(vocab=args.vocab, gen_length=args.length, steps=args.steps, block_length=args.block_length,
                      prompt_length=args.prompt_length, embed_dim=args.embed_dim, hidden=args.hidden,
                      reward=args.reward, seed=args.seed)
    problem = build_problem(setting)
    ks = list(range(1, problem.T)) if args.k is None else args.k
    rows = gradcheck_rows(problem, ks, args.lams)
    write_csv(rows, args.out)
    print(format_table(rows))
    worst = max(r["rel_error"] for r in rows if r["selection"] == "all" and r["remasking"] == "random")
    print(f"\n{problem.N} trajectories, T={problem.T}, L={problem.L}, V={problem.vocab}; "
          f"all-steps random-remasking max rel_error = {worst:.3e}; wrote {args.out} "
          f"in {time.perf_counter() - start:.2f} s", file=sys.stdout)
    return 0 if worst < 1e-6 else 1
