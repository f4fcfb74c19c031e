"""Step selectors on hand-made entropies."""

from __future__ import annotations

import math

import pytest
import torch

from egspo.core.selection import last_content_step, select_steps

H = torch.tensor(
    [
        [0.1, 0.5, 0.3, 0.9, 0.2, 0.4, 0.8, 0.0],
        [1.0, 1.0, 0.2, 1.0, 0.3, 0.0, 0.0, 0.5],  # ties: earlier steps win
    ]
)


def test_entropy_top_k():
    sel = select_steps(H, 3, "entropy")
    assert sel.steps.tolist() == [[1, 3, 6], [0, 1, 3]]
    assert sel.valid.all()


def test_uniform_midpoints():
    sel = select_steps(H, 4, "uniform")
    # floor((2i+1) * 8 / 8) = 1, 3, 5, 7
    assert sel.steps.tolist() == [[1, 3, 5, 7]] * 2
    sel = select_steps(torch.zeros(1, 64), 8, "uniform")
    assert sel.steps.tolist() == [[4, 12, 20, 28, 36, 44, 52, 60]]
    sel = select_steps(torch.zeros(1, 10), 3, "uniform")
    assert sel.steps.tolist() == [[1, 5, 8]]  # floor(10/6)=1, floor(30/6)=5, floor(50/6)=8
    assert select_steps(torch.zeros(1, 5), 5, "uniform").steps.tolist() == [[0, 1, 2, 3, 4]]


def test_all():
    sel = select_steps(H, 8, "all")
    assert sel.steps.tolist() == [list(range(8))] * 2
    assert sel.valid.all()
    with pytest.raises(ValueError, match="k == T"):
        select_steps(H, 4, "all")


def test_random_distinct_and_uniform():
    n, T, k = 3000, 6, 2
    sel = select_steps(torch.zeros(n, T), k, "random", generator=torch.Generator().manual_seed(0))
    assert (sel.steps[:, 1] > sel.steps[:, 0]).all()  # ascending, distinct
    freq = torch.bincount(sel.steps.reshape(-1), minlength=T).double() / n
    assert (freq - k / T).abs().max() < 4 * math.sqrt((k / T) * (1 - k / T) / n)
    again = select_steps(torch.zeros(n, T), k, "random", generator=torch.Generator().manual_seed(0))
    assert torch.equal(sel.steps, again.steps)


def test_last_step_restriction_and_padding():
    last = torch.tensor([4, 1])
    sel = select_steps(H, 3, "entropy", last_step=last)
    # row 0: eligible steps 0..4 -> top-3 of [0.1, 0.5, 0.3, 0.9, 0.2] = 1, 2, 3
    # row 1: only 2 eligible steps -> 0, 1 valid, then step 2 as invalid padding
    assert sel.steps.tolist() == [[1, 2, 3], [0, 1, 2]]
    assert sel.valid.tolist() == [[True, True, True], [True, True, False]]
    uni = select_steps(H, 2, "uniform", last_step=last)
    assert uni.steps.tolist() == [[1, 3], [0, 1]]  # E=5: floor(5/4)=1, floor(15/4)=3; E=2: 0, 1
    assert uni.valid.all()
    rnd = select_steps(H, 3, "random", last_step=torch.tensor([2, 7]), generator=torch.Generator().manual_seed(1))
    assert rnd.steps[0].tolist() == [0, 1, 2]
    al = select_steps(H, 8, "all", last_step=torch.tensor([-1, 5]))
    assert al.valid.tolist() == [[False] * 8, [True] * 6 + [False] * 2]
    none = select_steps(H, 2, "random", last_step=torch.tensor([-1, 7]), generator=torch.Generator().manual_seed(2))
    assert none.valid[0].tolist() == [False, False]
    assert none.steps[0].tolist() == [0, 1]


def test_random_respects_last_step():
    sel = select_steps(torch.zeros(500, 8), 3, "random", last_step=torch.full((500,), 4),
                       generator=torch.Generator().manual_seed(3))
    assert int(sel.steps.max()) <= 4 and sel.valid.all()


@pytest.mark.parametrize(
    "k,method,match",
    [(9, "entropy", "k=9"), (0, "entropy", "k"), (2, "best", "method"), (9, "uniform", "T=8")],
)
def test_bad_arguments(k, method, match):
    with pytest.raises(ValueError, match=match):
        select_steps(H, k, method)


def test_bad_last_step():
    with pytest.raises(ValueError, match="last_step"):
        select_steps(H, 2, last_step=torch.tensor([8, 0]))
    with pytest.raises(ValueError, match="last_step"):
        select_steps(H, 2, last_step=torch.tensor([1]))


def test_last_content_step():
    eos = 3
    completion = torch.tensor([[5, 6, 3, 3], [3, 3, 3, 3], [7, 3, 8, 3]])
    commit = torch.tensor([[2, 0, 3, 1], [0, 1, 2, 3], [0, 3, 1, 2]])
    assert last_content_step(completion, commit, eos).tolist() == [2, -1, 1]
    assert last_content_step(completion, commit, None).tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match="commit_step"):
        last_content_step(completion)


def test_entropy_rank_column_order_keeps_highest_entropy_first():
    sel = select_steps(H, 3, "entropy", column_order="entropy_rank")
    assert sel.steps.tolist() == [[3, 6, 1], [0, 1, 3]]  # row 0: H 0.9, 0.8, 0.5; row 1: ties keep time order
    assert select_steps(H, 3, "uniform", column_order="entropy_rank").steps.tolist() == [[1, 4, 6]] * 2
    with pytest.raises(ValueError, match="column_order"):
        select_steps(H, 3, "entropy", column_order="reverse")


def test_authors_uniform_and_random_rows():
    """The authors' rows: floor(linspace(0, T-2, K-1)) then T-1; K-1 draws from {0..T-2} with replacement then T-1,
    one row for every trajectory (egspo_trainer.py at a7d618b, lines 744-750)."""
    H3 = torch.zeros(3, 16)
    assert select_steps(H3, 4, "uniform", variant="authors").steps.tolist() == [[0, 7, 14, 15]] * 3
    assert select_steps(torch.zeros(1, 128), 8, "uniform", variant="authors").steps.tolist() == [
        [0, 21, 42, 63, 84, 105, 126, 127]]
    assert select_steps(H3, 1, "uniform", variant="authors").steps.tolist() == [[15]] * 3
    draws = torch.randint(0, 15, (3,), generator=torch.Generator().manual_seed(21))
    sel = select_steps(H3, 4, "random", variant="authors", generator=torch.Generator().manual_seed(21))
    assert sel.steps.tolist() == [draws.tolist() + [15]] * 3 and sel.valid.all()
    assert draws.tolist() == [3, 3, 6]  # a repeated step: drawn with replacement
    with pytest.raises(ValueError, match="last_step"):
        select_steps(H3, 4, "random", variant="authors", last_step=torch.tensor([3, 3, 3]))
    with pytest.raises(ValueError, match="variant"):
        select_steps(H3, 4, "random", variant="d1")
