"""Group baselines, stepwise returns and multi-step values."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert as shared_tiny_bert
from transformers import ModernBertForMaskedLM

from egspo.core.advantages import (
    greedy_baseline_rewards,
    group_centered,
    multistep_values,
    score,
    stepwise_returns,
)
from egspo.core.sampler import SamplerConfig, generate, step_schedule

MASK = 1


def tiny_bert(seed: int) -> ModernBertForMaskedLM:
    return shared_tiny_bert(seed)


def test_group_centered_mean_hand_values():
    v = torch.tensor([1.0, 2.0, 6.0, 0.0, 4.0, 2.0])
    assert group_centered(v, 3).tolist() == [-2.0, -1.0, 3.0, -2.0, 2.0, 0.0]
    # per column of [N, K]
    v2 = torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, 5.0], [5.0, 7.0]])
    assert group_centered(v2, 2).tolist() == [[-1.0, -5.0], [1.0, 5.0], [0.0, -1.0], [0.0, 1.0]]


def test_group_centered_loo_hand_values():
    v = torch.tensor([1.0, 2.0, 6.0])
    # 1 - (2+6)/2 = -3 ; 2 - (1+6)/2 = -1.5 ; 6 - (1+2)/2 = 4.5
    assert group_centered(v, 3, "loo").tolist() == [-3.0, -1.5, 4.5]
    with pytest.raises(ValueError, match="group_size"):
        group_centered(v, 1, "loo")


def test_group_centered_valid_mask():
    v = torch.tensor([[1.0, 4.0], [3.0, 100.0], [8.0, 6.0]])
    valid = torch.tensor([[True, True], [True, False], [True, True]])
    out = group_centered(v, 3, valid=valid)
    assert out.tolist() == [[-3.0, -1.0], [-1.0, 0.0], [4.0, 1.0]]
    loo = group_centered(v, 3, "loo", valid=torch.tensor([[True, True], [True, False], [True, False]]))
    assert loo[:, 0].tolist() == [1.0 - 5.5, 3.0 - 4.5, 8.0 - 2.0]
    assert loo[:, 1].tolist() == [0.0, 0.0, 0.0]  # no other valid entry in the column


def test_group_centered_bad_input():
    with pytest.raises(ValueError, match="group_size=4"):
        group_centered(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="mode"):
        group_centered(torch.zeros(6), 3, "std")
    with pytest.raises(ValueError, match="values"):
        group_centered(torch.tensor([1.0, float("nan")]), 2)


def test_stepwise_returns_hand_values():
    r0 = torch.tensor([1.0, 0.0])
    b = torch.tensor([[0.0, 1.0], [0.5, 0.0]])
    # lam = 0.5: (r0 + 0.5 (r0 - b)) / 1.5
    out = stepwise_returns(r0, b, 0.5)
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0 / 1.5 * 1.0], [(-0.25) / 1.5, 0.0]]))
    assert out[0, 1].item() == pytest.approx(2.0 / 3.0)
    assert stepwise_returns(r0, b, 0.0).tolist() == [[1.0, 1.0], [0.0, 0.0]]  # lam = 0: plain EGSPO


def test_stepwise_returns_bad_input():
    with pytest.raises(ValueError, match="final_reward"):
        stepwise_returns(torch.tensor([float("inf"), 0.0]), torch.zeros(2, 1), 0.5)
    with pytest.raises(ValueError, match="baseline_reward"):
        stepwise_returns(torch.zeros(2), torch.tensor([[0.0], [float("nan")]]), 0.5)
    with pytest.raises(ValueError, match="lam"):
        stepwise_returns(torch.zeros(2), torch.zeros(2, 1), -1.0)


def test_score_rejects_non_finite_and_wrong_length():
    c = torch.zeros(3, 4, dtype=torch.long)
    rows = torch.arange(3)
    with pytest.raises(ValueError, match="non-finite"):
        score(lambda comp, r: [0.0, float("nan"), 1.0], c, rows)
    with pytest.raises(ValueError, match="2 rewards for 3"):
        score(lambda comp, r: [0.0, 1.0], c, rows)


def count_token(token: int):
    return lambda completions, rows: (completions == token).sum(1).double()


@torch.no_grad()
def greedy_from_state(model, prompt_ids, prompt_mask, state, j, cfg):
    """Independent greedy low-confidence continuation of one state from step j (one row, no padding)."""
    prompt = prompt_ids[prompt_mask].tolist()
    P, B = len(prompt), cfg.block_length
    x = prompt + state.tolist()
    masked = [t == cfg.mask_token_id for t in state.tolist()]
    sched = step_schedule(cfg.gen_length, cfg.steps, B).tolist()
    for step in range(j, cfg.steps):
        block = step // cfg.steps_per_block
        logits = model(input_ids=torch.tensor([x])).logits[0, P:]
        logp = torch.log_softmax(logits, -1)
        cands = sorted(
            ((float(logp[i].max()), i, int(logp[i].argmax())) for i in range(block * B, (block + 1) * B) if masked[i]),
            key=lambda c: -c[0],
        )
        for _, i, tok in cands[: sched[step]]:
            x[P + i] = tok
            masked[i] = False
    return torch.tensor(x[P:])


def test_multistep_values_deterministic_continuation_equals_direct():
    model = tiny_bert(11)
    sample_cfg = SamplerConfig(gen_length=8, steps=4, block_length=4, mask_token_id=MASK, temperature=1.5)
    out = generate(model, [[5, 6, 7], [8, 9, 10]], sample_cfg, generator=torch.Generator().manual_seed(0))
    greedy_cfg = SamplerConfig(gen_length=8, steps=4, block_length=4, mask_token_id=MASK)  # tau = 0 continuation
    steps = torch.tensor([[0, 2, 3], [1, 2, 3]])
    calls = []

    def reward(completions, rows):
        calls.append((completions.clone(), rows.clone()))
        return (completions == 5).sum(1).double() + 0.1 * (completions == 9).sum(1).double()

    M = 3
    values = multistep_values(model, out, steps, reward, M, greedy_cfg)
    assert values.shape == (2, 3)
    assert len(calls) == 1 and calls[0][0].shape == (2 * 3 * M, 8)  # scored in one batched call
    assert calls[0][1].tolist() == [0] * 9 + [1] * 9
    for n in range(2):
        for k in range(3):
            j = int(steps[n, k])
            final = greedy_from_state(model, out.prompt_ids[n], out.prompt_mask[n], out.state(j)[n], j, greedy_cfg)
            expected = float((final == 5).sum() + 0.1 * (final == 9).sum())
            assert values[n, k].item() == pytest.approx(expected)
            for m in range(M):
                assert torch.equal(calls[0][0][(n * 3 + k) * M + m], final)


def test_multistep_values_sampled_batches_and_keeps_prefix():
    model = tiny_bert(12)
    cfg = SamplerConfig(gen_length=8, steps=8, block_length=4, mask_token_id=MASK, temperature=1.0)
    out = generate(model, [[5, 6], [7, 8]], cfg, generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([[2, 6], [4, 7]])
    seen = []

    def reward(completions, rows):
        seen.append(completions.clone())
        return torch.zeros(completions.shape[0])

    forwards = []
    handle = model.register_forward_hook(lambda m, a, o: forwards.append(a))
    vals = multistep_values(model, out, steps, reward, 4, generator=torch.Generator().manual_seed(1))
    handle.remove()
    assert vals.shape == (2, 2) and (vals == 0).all()
    assert len(forwards) == cfg.steps - 2  # one batched forward per step from the earliest start
    finals = seen[0].view(2, 2, 4, 8)
    for n in range(2):
        for k in range(2):
            kept = out.commit_step[n] < steps[n, k]
            assert (finals[n, k][:, kept] == out.completion[n][kept]).all()
    chunked = multistep_values(model, out, steps, count_token(5), 4, generator=torch.Generator().manual_seed(1),
                               micro_batch=3)
    assert chunked.shape == (2, 2)


def test_greedy_baseline_rewards_reads_greedy_fill():
    model = tiny_bert(13)
    cfg = SamplerConfig(gen_length=4, steps=4, block_length=4, mask_token_id=MASK, temperature=1.0)
    out = generate(model, [[5, 6], [7, 8]], cfg, generator=torch.Generator().manual_seed(0))
    steps = torch.tensor([[0, 3], [1, 2]])
    b = greedy_baseline_rewards(out, steps, count_token(5))
    for n in range(2):
        for k in range(2):
            assert b[n, k].item() == float((out.greedy_fill[n, steps[n, k]] == 5).sum())
