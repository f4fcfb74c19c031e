"""Which denoising steps of a trajectory are re-scored in the update.

Steps are indexed forward (``j = 0 .. T-1``, step j maps ``S_j`` to ``S_{j+1}``). Per trajectory K of the T steps are
chosen:

* ``entropy``: the K largest step entropies ``H_j`` (ties go to the earlier step),
* ``uniform``: the midpoints of K equal segments of the E eligible steps, ``j_i = floor((2i + 1) E / (2K))`` for
  ``i = 0 .. K-1`` (deterministic, distinct when ``K <= E``; with E = T = 64, K = 8: 4, 12, ..., 60),
* ``random``: K distinct eligible steps uniformly at random,
* ``all``: every step (K must equal T).

Eligibility: all T steps, or with ``last_step`` only ``j <= last_step[n]`` (see `last_content_step`). A row with
fewer eligible steps than K (``E < K``) returns ``steps = 0, 1, ..., K-1`` (its E eligible steps followed by the
first ineligible ones) with ``valid = j < E``; padded entries are real step indices so they can be scored, and
callers weight them by ``valid``. With ``all`` the row is ``0 .. T-1`` and ``valid = j <= last_step[n]``.

Column order (``column_order``): ``"time"`` sorts each row ascending; ``"entropy_rank"`` keeps the authors' order for
``entropy`` (column 0 = the row's highest-entropy step). Group advantages are taken per column, so with ``lambda > 0``
the order changes them (docs/fidelity.md).

Authors' variants (``variant="authors"``; egspo_trainer.py at a7d618b, lines 744-750), the same row for every
trajectory and no eligibility restriction: ``uniform`` = ``floor(linspace(0, T-2, K-1))`` (float32) followed by
``T-1``; ``random`` = ``K-1`` draws from ``{0 .. T-2}`` **with replacement** (one ``randint`` from ``generator``, in
draw order) followed by ``T-1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from egspo.core.constraints import SELECTION_METHODS
COLUMN_ORDERS = ("time", "entropy_rank")
SELECTION_VARIANTS = ("principled", "authors")


@dataclass
class StepSelection:
    steps: torch.Tensor  # [N, K] long, ascending per row (column_order="time"); see the module docstring
    valid: torch.Tensor  # [N, K] bool

    def to(self, device) -> StepSelection:
        return StepSelection(self.steps.to(device), self.valid.to(device))


def select_steps(
    step_entropy: torch.Tensor,
    k: int,
    method: str = "entropy",
    *,
    generator: torch.Generator | None = None,
    last_step: torch.Tensor | None = None,
    column_order: str = "time",
    variant: str = "principled",
) -> StepSelection:
    """Choose K of the T steps of each of N trajectories (``step_entropy`` is ``[N, T]``)."""
    if method not in SELECTION_METHODS:
        raise ValueError(f"method must be one of {SELECTION_METHODS}, got {method!r}")
    if column_order not in COLUMN_ORDERS:
        raise ValueError(f"column_order must be one of {COLUMN_ORDERS}, got {column_order!r}")
    if variant not in SELECTION_VARIANTS:
        raise ValueError(f"variant must be one of {SELECTION_VARIANTS}, got {variant!r}")
    if step_entropy.dim() != 2 or step_entropy.shape[0] == 0:
        raise ValueError(f"step_entropy must be a non-empty [N, T] tensor, got shape {tuple(step_entropy.shape)}")
    N, T = step_entropy.shape
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if k > T:
        raise ValueError(f"k={k} exceeds the number of denoising steps T={T}")
    if method == "all" and k != T:
        raise ValueError(f"method='all' needs k == T, got k={k}, T={T}")
    device = step_entropy.device
    if variant == "authors" and method in ("uniform", "random"):
        if last_step is not None:
            raise ValueError("the authors' uniform / random selection takes no last_step (they select over all steps)")
        return StepSelection(*_authors_fixed_row(N, T, k, method, generator, device))
    j = torch.arange(T, device=device)
    if last_step is None:
        eligible_count = torch.full((N,), T, dtype=torch.long, device=device)
    else:
        last_step = torch.as_tensor(last_step, dtype=torch.long, device=device).reshape(-1)
        if last_step.shape[0] != N:
            raise ValueError(f"last_step must have N={N} entries, got {last_step.shape[0]}")
        if int(last_step.min()) < -1 or int(last_step.max()) > T - 1:
            raise ValueError(f"last_step must lie in [-1, {T - 1}], got range [{int(last_step.min())}, "
                             f"{int(last_step.max())}]")
        eligible_count = last_step + 1
    eligible = j.unsqueeze(0) < eligible_count.unsqueeze(1)  # [N, T], a prefix of the steps

    if method == "all":
        return StepSelection(j.unsqueeze(0).expand(N, T).clone(), eligible.clone())

    if method == "entropy":
        if not bool(torch.isfinite(step_entropy).all()):
            raise ValueError("step_entropy has non-finite values")
        score = torch.where(eligible, step_entropy.double(), float("-inf"))
        order = torch.sort(score, dim=1, descending=True, stable=True).indices
        chosen = order[:, :k]
    elif method == "random":
        draw = torch.rand((N, T), generator=generator, device=device if generator is None else generator.device)
        score = torch.where(eligible, draw.to(device), -1.0)
        chosen = score.topk(k, dim=1).indices
    else:  # uniform
        i = torch.arange(k, device=device)
        chosen = torch.div((2 * i + 1).unsqueeze(0) * eligible_count.unsqueeze(1), 2 * k, rounding_mode="floor")
    if column_order == "time" or method != "entropy":
        chosen = chosen.sort(dim=1).values

    short = eligible_count < k  # rows that cannot fill K eligible steps
    padded = torch.arange(k, device=device).unsqueeze(0).expand(N, k)
    steps = torch.where(short.unsqueeze(1), padded, chosen)
    valid = torch.where(short.unsqueeze(1), padded < eligible_count.unsqueeze(1), torch.ones_like(short).unsqueeze(1))
    return StepSelection(steps.contiguous(), valid.expand(N, k).contiguous())


def _authors_fixed_row(N: int, T: int, k: int, method: str, generator, device):
    """The authors' ``uniform`` / ``random`` row (module docstring), repeated for the N trajectories."""
    if T < 2:
        raise ValueError(f"the authors' {method} selection needs T >= 2 steps, got T={T}")
    if method == "uniform":
        head = torch.linspace(0, T - 2, k - 1, dtype=torch.float32).long()
    else:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        head = torch.randint(0, T - 1, (k - 1,), generator=generator, device=gen_device)
    row = torch.cat([head.to(device), torch.full((1,), T - 1, dtype=torch.long, device=device)])
    steps = row.unsqueeze(0).expand(N, k).contiguous()
    return steps, torch.ones((N, k), dtype=torch.bool, device=device)


def last_content_step(rollout_or_completion, commit_step: torch.Tensor | None = None,
                      eos_token_id: int | None = None) -> torch.Tensor:
    """``[N]``: the last step that committed a token other than EOS (-1 when every committed token is EOS).

    Accepts a `Rollout` (``commit_step`` and ``eos_token_id`` default to the rollout's) or a completion ``[N, L]``
    with its ``commit_step``. Without an EOS id every token is content and this is the last step, T-1.
    """
    if hasattr(rollout_or_completion, "commit_step"):
        rollout = rollout_or_completion
        completion = rollout.completion
        commit_step = rollout.commit_step if commit_step is None else commit_step
        eos_token_id = rollout.config.eos_token_id if eos_token_id is None else eos_token_id
    else:
        completion = rollout_or_completion
        if commit_step is None:
            raise ValueError("commit_step is required when a completion tensor is given")
    if completion.shape != commit_step.shape:
        raise ValueError(f"completion {tuple(completion.shape)} and commit_step {tuple(commit_step.shape)} differ")
    content = torch.ones_like(completion, dtype=torch.bool) if eos_token_id is None else completion != eos_token_id
    return torch.where(content, commit_step, -1).max(dim=1).values
