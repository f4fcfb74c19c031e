"""Objective: step batches, batched re-scoring, gradients, clipping, KL estimators, the d1 estimator."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_bert as shared_tiny_bert
from transformers import ModernBertForMaskedLM

from egspo.core.objective import (
    clipped_surrogate,
    d1_grpo_loss,
    d1_sequence_logprobs,
    egspo_loss,
    eos_completion_mask,
    kl_exact,
    kl_k3,
    step_batch,
    step_logprob,
    token_logprobs,
)
from egspo.core.sampler import SamplerConfig, generate

MASK = 1


def tiny_bert(seed: int, scale: float = 6.0) -> ModernBertForMaskedLM:
    return shared_tiny_bert(seed, hidden=16, layers=1, intermediate=24, scale=scale)


@pytest.fixture(scope="module")
def rollout_and_model():
    model = tiny_bert(0)
    cfg = SamplerConfig(gen_length=6, steps=4, block_length=3, mask_token_id=MASK, temperature=1.0)
    out = generate(model, [[5, 6, 7], [8], [9, 10]], cfg, generator=torch.Generator().manual_seed(0))
    return model, out


def test_step_batch_contents(rollout_and_model):
    _, out = rollout_and_model
    steps = torch.tensor([[0, 3], [1, 2], [2, 3]])
    sb = step_batch(out, steps)
    assert len(sb) == 6 and sb.input_ids.shape == (6, out.prompt_ids.shape[1] + 6)
    for n in range(3):
        for k in range(2):
            r, j = n * 2 + k, int(steps[n, k])
            assert sb.row_index[r] == n and sb.step_index[r] == j
            assert torch.equal(sb.input_ids[r], torch.cat([out.prompt_ids[n], out.state(j)[n]]))
            assert torch.equal(sb.target_mask[r], out.unmasked(j)[n])
            assert torch.equal(sb.old_logprobs[r], torch.where(out.unmasked(j)[n], out.token_logprobs[n], 0.0))
            assert torch.equal(sb.attention_mask[r, : out.prompt_ids.shape[1]], out.prompt_mask[n])
    assert len(step_batch(out, torch.tensor([0, 1, 2]))) == 3
    with pytest.raises(ValueError, match="steps"):
        step_batch(out, torch.tensor([[0, 4], [0, 0], [0, 0]]))
    with pytest.raises(ValueError, match="steps"):
        step_batch(out, torch.tensor([[0], [1]]))


def test_token_logprobs_match_rollout_and_chunking(rollout_and_model):
    model, out = rollout_and_model
    sb = step_batch(out, torch.tensor([[0, 1, 2, 3]] * 3))
    calls = []
    handle = model.register_forward_hook(lambda m, a, o: calls.append(1))
    with torch.no_grad():
        full = token_logprobs(model, sb)
        chunked = token_logprobs(model, sb, micro_batch=5)
    handle.remove()
    assert calls == [1] + [1] * math.ceil(12 / 5)
    torch.testing.assert_close(full, chunked)
    torch.testing.assert_close(full, sb.old_logprobs.to(full.dtype), atol=1e-5, rtol=0)
    assert (full[~sb.target_mask] == 0).all()
    # per-step sums reproduce the rollout's step log-probs
    torch.testing.assert_close(step_logprob(full, sb.target_mask).view(3, 4), out.step_logprobs.to(full.dtype),
                               atol=1e-5, rtol=0)
    lp, packed = token_logprobs(model, sb, return_logits_at_targets=True)
    assert packed.shape == (int(sb.target_mask.sum()), 16)
    with torch.no_grad():  # packed order = target_mask.nonzero() order
        direct = model(input_ids=sb.input_ids, attention_mask=sb.attention_mask.long()).logits[:, -6:][sb.target_mask]
    torch.testing.assert_close(packed, direct)
    # without the host-side hints (a hand-made StepBatch) the result is the same
    bare = dataclasses.replace(sb, max_targets=0, has_padding=None)
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(model, bare, micro_batch=7), full)
    with pytest.raises(ValueError, match="micro_batch"):
        token_logprobs(model, sb, micro_batch=0)


def test_step_logprob_reductions():
    lp = torch.tensor([[-1.0, -2.0, -4.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[True, False, True], [True, False, False]])
    assert step_logprob(lp, mask).tolist() == [-5.0, -0.5]
    assert step_logprob(lp, mask, "mean").tolist() == [-2.5, -0.5]
    with pytest.raises(ValueError, match="reduction"):
        step_logprob(lp, mask, "max")
    empty = torch.tensor([[False, False, False], [True, False, False]])
    assert step_logprob(lp, empty, "mean").tolist() == [0.0, -0.5]  # a row without targets gives 0
    assert kl_k3(lp, lp - 1.0, empty)[0].item() == 0.0


@pytest.mark.parametrize("adv,threshold,side", [(1.0, 1.5, "above"), (-1.0, 0.8, "below")])
def test_clipping_switches_at_the_bound(adv, threshold, side):
    eps_low, eps_high, delta = 0.2, 0.5, 1e-6
    A = torch.tensor([adv], dtype=torch.float64)
    old = torch.zeros(1, dtype=torch.float64)

    def grad_at(rho):
        logp = torch.tensor([math.log(rho)], dtype=torch.float64, requires_grad=True)
        loss = clipped_surrogate(logp, old, A, eps_low, eps_high).sum()
        loss.backward()
        return loss.item(), logp.grad.item()

    inside = threshold - delta if side == "above" else threshold + delta
    outside = threshold + delta if side == "above" else threshold - delta
    loss_in, g_in = grad_at(inside)
    loss_out, g_out = grad_at(outside)
    assert g_in == pytest.approx(-adv * inside)  # d/dlogp of -rho*A
    assert g_out == 0.0
    assert loss_out == pytest.approx(-threshold * adv)
    # the other side of the ratio range is never clipped (pessimistic bound)
    far = 0.5 if side == "above" else 2.0
    _, g_far = grad_at(far)
    assert g_far == pytest.approx(-adv * far)


def test_clipped_surrogate_bad_eps():
    with pytest.raises(ValueError, match="eps_low"):
        clipped_surrogate(torch.zeros(1), torch.zeros(1), torch.ones(1), eps_low=1.0)


def test_kl_zero_at_equality_and_positive_otherwise():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7, dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    lp = torch.log_softmax(logits, -1)[..., 0]
    assert torch.equal(kl_exact(logits, logits, mask), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(kl_k3(lp, lp, mask), torch.zeros(2, dtype=torch.float64))
    other = logits + torch.randn_like(logits)
    assert (kl_exact(logits, other, mask) > 0).all()
    assert (kl_k3(lp, torch.log_softmax(other, -1)[..., 0], mask) > 0).all()
    packed = kl_exact(logits[mask], other[mask], mask)
    torch.testing.assert_close(packed, kl_exact(logits, other, mask))
    with pytest.raises(ValueError, match="packed"):
        kl_exact(logits[mask][:2], other[mask][:2], mask)


def test_k3_expectation_equals_exact_kl():
    """E_{x ~ p_theta}[k3(x)] = KL(p_theta || p_ref), by enumerating the vocabulary at one position."""
    torch.manual_seed(1)
    V = 6
    theta = torch.randn(V, dtype=torch.float64)
    ref = torch.randn(V, dtype=torch.float64)
    logp, logq = torch.log_softmax(theta, -1), torch.log_softmax(ref, -1)
    per_token = kl_k3(logp.view(V, 1), logq.view(V, 1), torch.ones(V, 1, dtype=torch.bool))
    expectation = (logp.exp() * per_token).sum()
    exact = kl_exact(theta.view(1, 1, V), ref.view(1, 1, V), torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(expectation, exact[0])
    torch.testing.assert_close(exact[0], (logp.exp() * (logp - logq)).sum())


class SmallMLM(torch.nn.Module):
    """A float64 bidirectional masked LM (token + position embedding, masked mean context, one tanh layer).
    ModernBERT computes softmax and rotary in float32, too coarse for finite differences."""

    def __init__(self, seed: int, vocab: int = 16, seq: int = 16, hidden: int = 12) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(vocab, hidden, generator=g, dtype=torch.float64))
        self.pos = torch.nn.Parameter(torch.randn(seq, hidden, generator=g, dtype=torch.float64))
        self.w_ctx = torch.nn.Parameter(torch.randn(hidden, hidden, generator=g, dtype=torch.float64) / 3)
        self.out = torch.nn.Parameter(torch.randn(hidden, vocab, generator=g, dtype=torch.float64))

    def forward(self, input_ids, attention_mask=None):
        h = self.emb[input_ids] + self.pos[: input_ids.shape[1]]
        w = torch.ones(input_ids.shape, dtype=h.dtype) if attention_mask is None else attention_mask.to(h.dtype)
        ctx = (h * w.unsqueeze(-1)).sum(1, keepdim=True) / w.sum(1, keepdim=True).unsqueeze(-1)
        return SimpleNamespace(logits=torch.tanh(h + ctx @ self.w_ctx) @ self.out)


def test_objective_gradient_matches_finite_differences():
    behaviour = SmallMLM(0)
    cfg = SamplerConfig(gen_length=6, steps=4, block_length=3, mask_token_id=MASK, temperature=1.0)
    out = generate(behaviour, [[5, 6, 7], [8], [9, 10]], cfg, generator=torch.Generator().manual_seed(0))
    model, ref_model = SmallMLM(0), SmallMLM(0)
    with torch.no_grad():  # move the policy away from the behaviour policy so ratios differ from 1
        gen = torch.Generator().manual_seed(3)
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    sb = step_batch(out, torch.tensor([[0, 2], [1, 3], [0, 3]]))
    with torch.no_grad():
        old_lp = token_logprobs(behaviour, sb)  # float64 behaviour scores (the rollout stores float32)
        ref_lp, ref_logits = token_logprobs(ref_model, sb, return_logits_at_targets=True)
    old = step_logprob(old_lp, sb.target_mask)
    adv = torch.tensor([0.7, -1.2, 0.4, 2.0, -0.3, 1.1], dtype=torch.float64)

    def loss_fn():
        lp, logits = token_logprobs(model, sb, micro_batch=4, return_logits_at_targets=True)
        logp = step_logprob(lp, sb.target_mask)
        kl = kl_k3(lp, ref_lp, sb.target_mask) + kl_exact(logits, ref_logits, sb.target_mask)
        return egspo_loss(logp, old, adv, kl, beta=0.3, eps_low=0.2, eps_high=0.5)

    with torch.no_grad():
        rho = torch.exp(step_logprob(token_logprobs(model, sb), sb.target_mask) - old)
    assert ((rho - 1).abs() > 0.05).any()
    model.zero_grad()
    loss_fn().backward()
    h = 1e-6
    checked = 0
    for name, param in model.named_parameters():
        flat = param.view(-1)
        for idx in torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(4))[:4].tolist():
            with torch.no_grad():
                orig = flat[idx].item()
                flat[idx] = orig + h
                up = loss_fn().item()
                flat[idx] = orig - h
                down = loss_fn().item()
                flat[idx] = orig
            fd = (up - down) / (2 * h)
            assert param.grad.view(-1)[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), name
            checked += 1
        assert param.grad.abs().sum() > 0, name
    assert checked == 16


def test_egspo_loss_valid_weighting():
    logp = torch.zeros(3, dtype=torch.float64)
    adv = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    kl = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
    loss = egspo_loss(logp, logp, adv, kl, beta=0.1, valid=torch.tensor([True, True, False]))
    assert loss.item() == pytest.approx((-1.0 - 2.0) / 2 + 0.05)
    with pytest.raises(ValueError, match="valid"):
        egspo_loss(logp, logp, adv, valid=torch.zeros(3, dtype=torch.bool))


class RecordingModel(torch.nn.Module):
    """Fixed position-dependent logits; remembers the inputs it was called with."""

    def __init__(self, seq: int, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.table = torch.nn.Parameter(torch.randn(seq, vocab, dtype=torch.float64))
        self.inputs = []

    def forward(self, input_ids, attention_mask=None):
        self.inputs.append((input_ids.clone(), None if attention_mask is None else attention_mask.clone()))
        return SimpleNamespace(logits=self.table[: input_ids.shape[1]].expand(input_ids.shape[0], -1, -1))


def test_d1_masks_prompt_at_rate_and_fresh_per_call():
    N, P, L, V, p = 60, 40, 5, 12, 0.3
    model = RecordingModel(P + L, V)
    lengths = torch.randint(10, P + 1, (N,), generator=torch.Generator().manual_seed(0))
    prompt_mask = torch.arange(P).unsqueeze(0) >= (P - lengths).unsqueeze(1)
    prompt_ids = torch.where(prompt_mask, torch.randint(4, V, (N, P), generator=torch.Generator().manual_seed(1)), 0)
    completion = torch.randint(0, V, (N, L), generator=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    lp1 = d1_sequence_logprobs(model, prompt_ids, prompt_mask, completion, MASK, p, gen)
    lp2 = d1_sequence_logprobs(model, prompt_ids, prompt_mask, completion, MASK, p, gen)
    (ids1, att1), (ids2, att2) = model.inputs
    assert len(model.inputs) == 2  # one forward per call
    hidden1 = ids1[:, :P] == MASK
    real = int(prompt_mask.sum())
    rate = float(hidden1[prompt_mask].sum()) / real
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / real)
    assert not hidden1[~prompt_mask].any() and (ids1[:, :P][~prompt_mask] == 0).all()  # pads untouched
    assert torch.equal(ids1[:, :P][~hidden1], prompt_ids[~hidden1])
    assert (ids1[:, P:] == MASK).all()
    assert not torch.equal(hidden1, ids2[:, :P] == MASK)  # a fresh mask per call
    assert torch.equal(att1[:, :P].bool(), prompt_mask)
    table_lp = torch.log_softmax(model.table[P:].detach(), -1)  # [L, V]
    expected = torch.stack([table_lp[torch.arange(L), completion[n]] for n in range(N)])
    torch.testing.assert_close(lp1, expected)
    torch.testing.assert_close(lp2, expected)  # this model ignores the prompt
    model.inputs.clear()
    d1_sequence_logprobs(model, prompt_ids, prompt_mask, completion, MASK, p, torch.Generator().manual_seed(3))
    assert torch.equal(model.inputs[0][0], ids1)  # same seed, same mask
    with pytest.raises(ValueError, match="p_mask_prompt"):
        d1_sequence_logprobs(model, prompt_ids, prompt_mask, completion, MASK, 1.5)


def test_d1_grpo_loss_hand_values():
    logp = torch.tensor([[-1.0, -2.0, -3.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    A = torch.tensor([2.0], dtype=torch.float64)
    assert d1_grpo_loss(logp, logp, A, mask, logp).item() == pytest.approx(-2.0)
    # ratio 2 at token 0 clipped to 1.2 for A > 0; ratio 1 at token 1; k3 with d = ref - logp = 0.5 at token 1
    old = torch.tensor([[-1.0 - math.log(2.0), -2.0, -3.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.0, -1.5, 0.0]], dtype=torch.float64)
    k3 = math.exp(0.5) - 0.5 - 1
    expected = ((-1.2 * 2.0) + (-2.0 + 0.1 * k3)) / 2
    assert d1_grpo_loss(logp, old, A, mask, ref, beta=0.1).item() == pytest.approx(expected)


def test_d1_grpo_loss_pools_tokens_of_unequal_completions():
    """d1 divides one sum over all completion tokens by one token count; the per-completion mean differs."""
    # row 0: 1 token (ratio 1, A = 1, loss -1); row 1: 3 tokens (ratio 1, A = -1, loss +1 each)
    logp = torch.zeros((2, 3), dtype=torch.float64)
    mask = torch.tensor([[True, False, False], [True, True, True]])
    A = torch.tensor([1.0, -1.0], dtype=torch.float64)
    pooled = (-1.0 + 3 * 1.0) / 4  # 0.5; the per-completion mean would be (-1 + 1) / 2 = 0
    assert d1_grpo_loss(logp, logp, A, mask, beta=0.0).item() == pytest.approx(pooled, abs=1e-15)
    # with k3: d = ref - logp = 1 at every token of row 1, 0 in row 0 (hand value exp(1) - 2)
    ref = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    k3 = math.e - 2.0
    expected = (-1.0 + 3 * (1.0 + 0.5 * k3)) / 4
    assert d1_grpo_loss(logp, logp, A, mask, ref, beta=0.5).item() == pytest.approx(expected, abs=1e-15)
    # the gradient in logp is the pooled one: d/dlogp_ni of -rho A / 4 is -A_n / 4 on every unmasked token
    lp = logp.clone().requires_grad_(True)
    d1_grpo_loss(lp, logp, A, mask, beta=0.0).backward()
    assert lp.grad.tolist() == [[-0.25, 0.0, 0.0], [0.25, 0.25, 0.25]]
    assert d1_grpo_loss(logp, logp, A, torch.zeros_like(mask)).item() == 0.0


def test_eos_completion_mask():
    c = torch.tensor([[5, 3, 3, 3], [5, 6, 7, 8], [3, 4, 3, 4]])
    assert eos_completion_mask(c, 3).tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]
    assert eos_completion_mask(c, None).all()


def test_authors_kl_forms_and_loss_scale_hand_values():
    """k3 of the summed step log-prob difference, exact KL summed over U_j with +eps logs, and the division by
    L // T (egspo_trainer.py at a7d618b, lines 106-146)."""
    from egspo.core.objective import kl_k3_step, step_kl

    tok = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # row 0: d = (-2.5) - (-3) = 0.5; row 1: d = -0.5
    expected = torch.tensor([math.exp(0.5) - 1.5, math.exp(-0.5) - 0.5], dtype=torch.float64)
    torch.testing.assert_close(kl_k3_step(step_logprob(tok, mask), step_logprob(ref, mask)), expected)
    torch.testing.assert_close(step_kl("k3", "step_sum", tok, ref, mask), expected)
    per_token = torch.tensor([(math.exp(-0.5) - 0.5 + math.exp(1.0) - 2.0) / 2, math.exp(-0.5) - 0.5],
                             dtype=torch.float64)
    torch.testing.assert_close(step_kl("k3", "token_mean", tok, ref, mask), per_token)
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [0.0, 0.0]],
                           [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    ref_logits = torch.zeros_like(logits)
    kl_pos0 = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)  # p = (1/4, 3/4) against (1/2, 1/2)
    torch.testing.assert_close(step_kl("exact", "step_sum", tok, None, mask, logits, ref_logits),
                               torch.tensor([kl_pos0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(step_kl("exact", "token_mean", tok, None, mask, logits, ref_logits),
                               torch.tensor([kl_pos0 / 2, 0.0], dtype=torch.float64))
    eps = 1e-3
    p, q = torch.tensor([0.25 + eps, 0.75 + eps]), torch.tensor([0.5 + eps, 0.5 + eps])
    with_eps = float((p * (p.log() - q.log())).sum())
    assert kl_exact(logits, ref_logits, mask, "sum", log_eps=eps)[0].item() == pytest.approx(with_eps, rel=1e-6)
    with pytest.raises(ValueError, match="kl_form"):
        step_kl("k3", "sum", tok, ref, mask)
    with pytest.raises(ValueError, match="logits"):
        step_kl("exact", "step_sum", tok, ref, mask)
    logp = torch.tensor([0.0, 0.0], dtype=torch.float64)
    A = torch.tensor([1.0, -1.0], dtype=torch.float64)
    kl = torch.tensor([1.0, 3.0], dtype=torch.float64)
    # rows: (-1 + 0.5 * 1) / 4 and (1 + 0.5 * 3) / 4; mean 0.25
    assert egspo_loss(logp, logp, A, kl, beta=0.5, scale=4.0).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="scale"):
        egspo_loss(logp, logp, A, kl, scale=0.0)
