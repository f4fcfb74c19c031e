"""wd1's weighted-likelihood loss: hand-computed weights, an independent per-row implementation on a tiny model, and
the gradient by finite differences."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import MASK, tiny_bert

from egspo.core.objective import d1_sequence_logprobs, eos_completion_mask
from egspo.core.wd1 import sequence_logp, wd1_loss, wd1_weights

EOS = 3


def test_weights_by_hand():
    A = torch.tensor([1.0, -1.0, 0.5, 0.5], dtype=torch.float64)
    w_pos, w_neg = wd1_weights(A, group_size=2)
    s = 1.0 / (1.0 + math.exp(-2.0))  # softmax([1, -1])[0]
    assert torch.allclose(w_pos, torch.tensor([s, 1 - s, 0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(w_neg, torch.tensor([1 - s, s, 0.5, 0.5], dtype=torch.float64))


def test_loss_by_hand_and_equal_advantages_give_zero():
    lp = torch.tensor([-2.0, -5.0, -1.0, -3.0], dtype=torch.float64)
    A = torch.tensor([1.0, -1.0, 0.3, 0.3], dtype=torch.float64)
    s = 1.0 / (1.0 + math.exp(-2.0))
    group1 = ((1 - s) - s) * -2.0 + (s - (1 - s)) * -5.0  # (w- - w+) . logp
    assert float(wd1_loss(lp, A, 2)) == pytest.approx((group1 + 0.0) / 2)
    assert float(wd1_loss(lp[2:], A[2:], 2)) == 0.0


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="group_size=4"):
        wd1_weights(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="differ in shape"):
        wd1_loss(torch.zeros(4), torch.zeros(2), 2)


def _batch():
    torch.manual_seed(0)
    prompts = torch.tensor([[5, 6], [5, 6], [7, 8], [7, 8]])
    completion = torch.tensor([[4, 9, EOS, 2], [10, 11, 12, 13], [6, EOS, 0, 0], [14, 5, 9, EOS]])
    A = torch.tensor([0.7, -0.7, -0.2, 0.2], dtype=torch.float64)
    return prompts, torch.ones_like(prompts, dtype=torch.bool), completion, A


def _library_loss(model, prompts, pmask, completion, A):
    token_lp = d1_sequence_logprobs(model, prompts, pmask, completion, MASK, 0.0)
    return wd1_loss(sequence_logp(token_lp, eos_completion_mask(completion, EOS)), A, 2)


def _independent_loss(model, prompts, completion, A):
    """Row by row: a plain forward on [prompt, all-mask completion], summed log-probs up to the first EOS, python
    softmax weights per group."""
    seq = []
    for n in range(len(completion)):
        ids = torch.cat([prompts[n], torch.full((completion.shape[1],), MASK)]).unsqueeze(0)
        logp = torch.log_softmax(model(input_ids=ids).logits[0, prompts.shape[1]:], -1)
        total = 0.0
        for i, tok in enumerate(completion[n].tolist()):
            total = total + logp[i, tok]
            if tok == EOS:
                break
        seq.append(total)
    loss = 0.0
    for g in range(0, len(seq), 2):
        a = [float(A[g]), float(A[g + 1])]
        zp = [math.exp(x) for x in a]
        zn = [math.exp(-x) for x in a]
        for k in range(2):
            loss = loss + (zn[k] / sum(zn) - zp[k] / sum(zp)) * seq[g + k]
    return loss / (len(seq) // 2)


def test_loss_matches_independent_implementation_on_tiny_model():
    model = tiny_bert(1)
    prompts, pmask, completion, A = _batch()
    ours = _library_loss(model, prompts, pmask, completion, A)
    ref = _independent_loss(model, prompts, completion, A)
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-12, abs=1e-12)


def test_gradient_matches_finite_differences():
    model = tiny_bert(2)
    prompts, pmask, completion, A = _batch()
    params = [p for p in model.parameters() if p.dim() == 2]
    direction = [torch.randn_like(p) for p in params]
    loss = _library_loss(model, prompts, pmask, completion, A)
    grads = torch.autograd.grad(loss, params)
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))
    h = 1e-4  # ModernBERT's rotary tables are float32, so a smaller step drowns in their round-off
    values = []
    with torch.no_grad():
        for sign in (1.0, -1.0):
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * h * d)
            values.append(float(_library_loss(model, prompts, pmask, completion, A)))
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * h * d)
    numeric = (values[0] - values[1]) / (2 * h)
    assert analytic == pytest.approx(numeric, rel=2e-5)
    assert abs(analytic) > 1e-6  # the check is not vacuous


def test_a_gradient_step_raises_the_better_completion_and_lowers_the_worse():
    model = tiny_bert(3)
    prompts, pmask, completion, A = _batch()
    cm = eos_completion_mask(completion, EOS)

    def seq():
        return sequence_logp(d1_sequence_logprobs(model, prompts, pmask, completion, MASK, 0.0), cm)

    before = seq().detach()
    loss = _library_loss(model, prompts, pmask, completion, A)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(1e-4 * p.grad)
    change = seq().detach() - before
    assert change[0] > 0 and change[1] < 0  # A = +0.7 / -0.7 in the first group


def test_pieces_add_up_to_the_loss():
    from egspo.core.wd1 import piece_loss, row_coefficients

    lp = torch.tensor([-2.0, -5.0, -1.0, -3.0, -0.5, -4.0], dtype=torch.float64)
    A = torch.tensor([1.0, -1.0, 0.3, -0.3, 0.0, 0.2], dtype=torch.float64)
    coef = row_coefficients(A, 2)
    total = sum(piece_loss(lp[s], coef[s], 3) for s in (slice(0, 1), slice(1, 4), slice(4, 6)))
    assert float(total) == pytest.approx(float(wd1_loss(lp, A, 2)), rel=1e-14)


# ---- `egspo rl --algorithm wd1` in the loop (fixtures of tests/test_trainer.py) ------------------------------------

from test_trainer import (  # noqa: E402,F401
    _register_tasks, grads_per_step, make_config, params_of, straight_and_resumed,
)


def test_rl_wd1_runs_the_tested_loss_and_accumulates_exactly(tiny_model, train_file, tmp_path, monkeypatch):
    import egspo.core.wd1 as wd1

    calls = []
    real = wd1.piece_loss
    monkeypatch.setattr(wd1, "piece_loss", lambda seq, *a: (calls.append(len(seq)), real(seq, *a) * 0.0)[1])
    from egspo.rl.trainer import RLTrainer

    trainer = RLTrainer(make_config(tiny_model, train_file, tmp_path / "zero", algorithm="wd1", beta=0.0,
                                    weight_decay=0.0, grad_accum=2))
    before = params_of(trainer)
    trainer.run_iteration([0, 1])
    assert calls == [4, 4, 4, 4]  # mu = 2 optimizer steps x 2 pieces of 4 rows
    assert all(torch.equal(v, before[k]) for k, v in params_of(trainer).items())
    monkeypatch.setattr(wd1, "piece_loss", real)
    plain = grads_per_step(monkeypatch, make_config(tiny_model, train_file, tmp_path / "a", algorithm="wd1",
                                                     beta=0.0))
    accum = grads_per_step(monkeypatch, make_config(tiny_model, train_file, tmp_path / "b", algorithm="wd1",
                                                     beta=0.0, grad_accum=4))
    assert len(plain) == len(accum) == 2
    for g_plain, g_accum in zip(plain, accum, strict=True):
        assert any(float(g.abs().max()) > 1e-6 for g in g_plain)
        for g1, g2 in zip(g_plain, g_accum, strict=True):
            torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)


def test_rl_wd1_resume_reproduces_an_uninterrupted_run(tiny_model, train_file, tmp_path):
    a, b, rows = straight_and_resumed(tiny_model, train_file, tmp_path, algorithm="wd1", beta=0.0, save_every=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in rows] == [1, 2] and all(r["clip_frac"] is None for r in rows)
