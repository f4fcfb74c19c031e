"""Sampler: schedule, determinism against a brute-force reference, trajectory records, padding, remasking."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_bert as shared_tiny_bert
from transformers import ModernBertForMaskedLM

from egspo.core.sampler import Rollout, SamplerConfig, continue_from, generate, step_schedule

MASK = 1
VOCAB = 24


def tiny_bert(seed: int = 0, vocab: int = VOCAB) -> ModernBertForMaskedLM:
    return shared_tiny_bert(seed, vocab=vocab)


class PositionLogits(torch.nn.Module):
    """Logits that depend only on the position (fixed table), no attention mask, no config."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())

    def forward(self, input_ids):
        n, s = input_ids.shape
        return SimpleNamespace(logits=self.table[-s:].unsqueeze(0).expand(n, s, -1))


# ---- reference implementation: one sample at a time, one step at a time ------------------------------------------


@torch.no_grad()
def reference_greedy(model, prompt: list[int], cfg: SamplerConfig):
    """tau = 0 low-confidence decoding of one unpadded prompt, written as plainly as possible."""
    L, T, B = cfg.gen_length, cfg.steps, cfg.block_length
    per_block = T // (L // B)
    x = list(prompt) + [cfg.mask_token_id] * L
    P = len(prompt)
    is_masked = [True] * L
    commit = [None] * L
    token_lp = [None] * L
    entropies, fills = [], []
    for j in range(T):
        block = j // per_block
        k = B // per_block + (1 if (j % per_block) < B % per_block else 0)
        logits = model(input_ids=torch.tensor([x])).logits[0, P:].double()
        logp = torch.log_softmax(logits, -1)
        fills.append([int(logits[i].argmax()) if is_masked[i] else x[P + i] for i in range(L)])
        cands = []
        for i in range(block * B, (block + 1) * B):
            if is_masked[i]:
                tok = int(logits[i].argmax())
                cands.append((float(logp[i, tok]), i, tok))
        cands.sort(key=lambda c: -c[0])
        ents = []
        for lp, i, tok in cands[:k]:
            ents.append(float(-(logp[i].exp() * logp[i]).sum()))
        for lp, i, tok in cands[:k]:
            x[P + i] = tok
            is_masked[i] = False
            commit[i] = j
            token_lp[i] = lp
        entropies.append(sum(ents) / len(ents))
    return x[P:], commit, token_lp, entropies, fills


# ---- schedule -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "L,T,B,expected",
    [
        (10, 6, 5, [2, 2, 1, 2, 2, 1]),
        (7, 3, 7, [3, 2, 2]),
        (8, 8, 8, [1] * 8),
        (12, 6, 4, [2, 2, 2, 2, 2, 2]),
        (9, 2, 9, [5, 4]),
    ],
)
def test_step_schedule_hand_values(L, T, B, expected):
    sched = step_schedule(L, T, B)
    assert sched.tolist() == expected
    assert int(sched.sum()) == L


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(gen_length=10, steps=4, block_length=4), "block_length"),
        (dict(gen_length=12, steps=4, block_length=4), "steps=4"),
        (dict(gen_length=8, steps=16, block_length=8), "steps=16"),
        (dict(gen_length=0, steps=1, block_length=1), "gen_length"),
    ],
)
def test_bad_lengths_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SamplerConfig(mask_token_id=MASK, **kwargs)


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="temperature"):
        SamplerConfig(gen_length=4, steps=2, block_length=4, mask_token_id=MASK, temperature=-1.0)
    with pytest.raises(ValueError, match="remasking"):
        SamplerConfig(gen_length=4, steps=2, block_length=4, mask_token_id=MASK, remasking="top")


def test_mask_id_outside_vocab_raises():
    model = tiny_bert()
    cfg = SamplerConfig(gen_length=4, steps=2, block_length=4, mask_token_id=VOCAB)
    with pytest.raises(ValueError, match=f"mask_token_id={VOCAB}"):
        generate(model, [[5, 6]], cfg)
    # a model without config: checked against the logits' last dim
    table = torch.zeros(8, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="mask_token_id=7"):
        generate(PositionLogits(table), [[2, 3]], SamplerConfig(gen_length=4, steps=2, block_length=4,
                                                               mask_token_id=7))


def test_empty_prompt_batch_raises():
    cfg = SamplerConfig(gen_length=4, steps=2, block_length=4, mask_token_id=MASK)
    with pytest.raises(ValueError, match="empty"):
        generate(tiny_bert(), [], cfg)
    with pytest.raises(ValueError, match="prompt_ids"):
        generate(tiny_bert(), torch.zeros((0, 3), dtype=torch.long), cfg)


# ---- determinism and the brute-force reference ------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompts",
    [
        [[5, 6, 7], [8, 9, 10], [11, 5, 5]],  # equal lengths: no padding
        [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]],  # left padding
    ],
)
def test_greedy_equals_reference(prompts):
    model = tiny_bert(1)
    cfg = SamplerConfig(gen_length=8, steps=6, block_length=4, mask_token_id=MASK)
    out = generate(model, prompts, cfg)
    again = generate(model, prompts, cfg)
    assert torch.equal(out.completion, again.completion) and torch.equal(out.commit_step, again.commit_step)
    for n, prompt in enumerate(prompts):
        tokens, commit, lp, ent, fills = reference_greedy(model, prompt, cfg)
        assert out.completion[n].tolist() == tokens
        assert out.commit_step[n].tolist() == commit
        torch.testing.assert_close(out.token_logprobs[n].double(), torch.tensor(lp, dtype=torch.float64),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(out.step_entropy[n].double(), torch.tensor(ent, dtype=torch.float64),
                                   atol=1e-5, rtol=0)
        assert out.greedy_fill[n].tolist() == fills


def test_padding_is_seen_by_the_model():
    """The left-padding test above is meaningful only if the model's output depends on the attention mask."""
    model = tiny_bert(1)
    ids = torch.tensor([[MASK, MASK, 10, 11, MASK, MASK]])
    att = torch.tensor([[0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        with_mask = model(input_ids=ids, attention_mask=att).logits[0, 2:]
        without = model(input_ids=ids).logits[0, 2:]
        unpadded = model(input_ids=ids[:, 2:]).logits[0]
    assert (with_mask - without).abs().max() > 1e-3
    torch.testing.assert_close(with_mask, unpadded, atol=1e-6, rtol=0)  # rotary tables are float32


def test_padded_batch_equals_unpadded_generation():
    model = tiny_bert(2)
    cfg = SamplerConfig(gen_length=8, steps=8, block_length=4, mask_token_id=MASK)
    prompts = [[5, 6, 7, 8, 9, 10], [12], [13, 14, 15]]
    batch = generate(model, prompts, cfg)
    assert batch.prompt_mask.sum(1).tolist() == [6, 1, 3]
    assert batch.prompt_ids[1, :5].tolist() == [MASK] * 5  # pad id defaults to the mask id
    for n, p in enumerate(prompts):
        single = generate(model, [p], cfg)
        assert torch.equal(single.completion[0], batch.completion[n])
        assert torch.equal(single.commit_step[0], batch.commit_step[n])
        torch.testing.assert_close(single.step_logprobs[0], batch.step_logprobs[n], atol=1e-5, rtol=0)


def test_same_seed_same_rollout_and_different_seed_differs():
    model = tiny_bert(3)
    cfg = SamplerConfig(gen_length=8, steps=4, block_length=8, mask_token_id=MASK, temperature=1.0)
    a = generate(model, [[5, 6]] * 6, cfg, generator=torch.Generator().manual_seed(7))
    b = generate(model, [[5, 6]] * 6, cfg, generator=torch.Generator().manual_seed(7))
    c = generate(model, [[5, 6]] * 6, cfg, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.completion, b.completion) and torch.equal(a.commit_step, b.commit_step)
    assert not torch.equal(a.completion, c.completion)


# ---- records of a sampled trajectory ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sampled() -> tuple[torch.nn.Module, Rollout]:
    model = tiny_bert(4)
    cfg = SamplerConfig(gen_length=10, steps=6, block_length=5, mask_token_id=MASK, temperature=0.9)
    out = generate(model, [[5, 6, 7], [8, 9], [10, 11, 12, 13]], cfg, generator=torch.Generator().manual_seed(0))
    return model, out


def test_schedule_is_followed(sampled):
    _, out = sampled
    cfg = out.config
    sched = step_schedule(cfg.gen_length, cfg.steps, cfg.block_length)
    for n in range(len(out)):
        counts = torch.bincount(out.commit_step[n], minlength=cfg.steps)
        assert counts.tolist() == sched.tolist()  # exactly L tokens, [2, 2, 1, 2, 2, 1]
        block_of_pos = torch.arange(cfg.gen_length) // cfg.block_length
        assert torch.equal(out.commit_step[n] // cfg.steps_per_block, block_of_pos)


def test_states_and_unmasked_are_consistent(sampled):
    _, out = sampled
    T, N, L = out.config.steps, len(out), out.config.gen_length
    states = out.states()
    assert states.shape == (N, T + 1, L)
    assert (out.state(0) == MASK).all()
    assert torch.equal(out.state(T), out.completion)
    for j in range(T):
        assert torch.equal(states[:, j], out.state(j))
        u = out.unmasked(j)
        changed = out.state(j) != out.state(j + 1)
        assert torch.equal(u & changed, changed)  # everything that changes is in U_j
        assert torch.equal(torch.where(u, out.completion, out.state(j)), out.state(j + 1))
        torch.testing.assert_close(out.step_logprobs[:, j], (out.token_logprobs * u).sum(1))
    with pytest.raises(ValueError, match="j"):
        out.state(T + 1)
    with pytest.raises(ValueError, match="j"):
        out.unmasked(T)


def test_records_equal_direct_recomputation(sampled):
    model, out = sampled
    T, P = out.config.steps, out.prompt_ids.shape[1]
    for j in range(T):
        ids = torch.cat([out.prompt_ids, out.state(j)], 1)
        att = torch.cat([out.prompt_mask, torch.ones_like(out.completion, dtype=torch.bool)], 1).long()
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=att).logits[:, P:]
        logp = torch.log_softmax(logits, -1)
        u = out.unmasked(j)
        chosen = logp.gather(-1, out.completion.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(out.token_logprobs[u].double(), chosen[u], atol=1e-5, rtol=0)
        ent = -(logp.exp() * logp).sum(-1)
        torch.testing.assert_close(out.step_entropy[:, j].double(), (ent * u).sum(1) / u.sum(1), atol=1e-5, rtol=0)
        masked = out.state(j) == MASK
        expected_fill = torch.where(masked, logits.argmax(-1), out.state(j))
        assert torch.equal(out.greedy_fill[:, j], expected_fill)


def test_rollout_index_select_and_to(sampled):
    _, out = sampled
    sub = out.index_select(torch.tensor([2, 0]))
    assert torch.equal(sub.completion, out.completion[[2, 0]])
    assert torch.equal(sub.greedy_fill, out.greedy_fill[[2, 0]])
    assert torch.equal(out.index_select(torch.tensor([False, True, False])).commit_step, out.commit_step[1:2])
    moved = out.to("cpu")
    assert torch.equal(moved.step_entropy, out.step_entropy)


def test_no_greedy_fill_when_not_requested():
    cfg = SamplerConfig(gen_length=4, steps=2, block_length=4, mask_token_id=MASK)
    assert generate(tiny_bert(), [[5]], cfg, record_greedy_fill=False).greedy_fill is None


# ---- sampling and remasking distributions -----------------------------------------------------------------------


def test_gumbel_max_samples_softmax_at_temperature():
    z = torch.tensor([[0.0, 1.0, 2.0, -1.0, 0.5]], dtype=torch.float64)
    table = z.expand(4, -1)  # 3 prompt positions + 1 completion position
    model = PositionLogits(table)
    tau, n = 0.7, 6000
    cfg = SamplerConfig(gen_length=1, steps=1, block_length=1, mask_token_id=3, temperature=tau)
    out = generate(model, [[0, 0, 0]] * n, cfg, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out.completion[:, 0], minlength=5).double() / n
    target = torch.softmax(z[0] / tau, -1)
    assert (freq - target).abs().max() < 4 * math.sqrt(0.25 / n)
    # scores are at temperature 1, whatever tau is
    torch.testing.assert_close(out.token_logprobs[:, 0].double(), torch.log_softmax(z[0], -1)[out.completion[:, 0]])


def test_low_confidence_commits_most_confident_first():
    # position i has a peaked distribution of sharpness 10 - i: most confident first, one per step
    L = 4
    table = torch.zeros(L + 1, 6, dtype=torch.float64)
    for i, sharp in enumerate([1.0, 5.0, 3.0, 4.0]):
        table[1 + i, 2] = sharp
    cfg = SamplerConfig(gen_length=L, steps=4, block_length=4, mask_token_id=0)
    out = generate(PositionLogits(table), [[5]], cfg)
    assert out.commit_step[0].tolist() == [3, 0, 2, 1]
    assert (out.completion == 2).all()


def test_random_remasking_is_uniform_within_the_current_block():
    L, B = 8, 4
    table = torch.zeros(1 + L, 6, dtype=torch.float64)
    table[1:, 2] = torch.arange(L, dtype=torch.float64)  # low-confidence would always pick the same positions
    cfg = SamplerConfig(gen_length=L, steps=8, block_length=B, mask_token_id=0, remasking="random")
    n = 2000
    out = generate(PositionLogits(table), [[5]] * n, cfg, generator=torch.Generator().manual_seed(0))
    pos_block = torch.arange(L) // B
    assert torch.equal(out.commit_step // cfg.steps_per_block, pos_block.expand(n, L))
    first = (out.commit_step == 0).double().mean(0)  # P(position committed at step 0)
    expected = torch.tensor([0.25] * 4 + [0.0] * 4, dtype=torch.float64)
    assert (first - expected).abs().max() < 4 * math.sqrt(0.25 * 0.75 / n)
    low = generate(PositionLogits(table), [[5]], SamplerConfig(gen_length=L, steps=8, block_length=B, mask_token_id=0))
    assert low.commit_step[0].tolist() == [3, 2, 1, 0, 7, 6, 5, 4]


# ---- continuation from a partial state --------------------------------------------------------------------------


def test_continue_from_greedy_reproduces_and_batches():
    model = tiny_bert(5)
    cfg = SamplerConfig(gen_length=8, steps=8, block_length=4, mask_token_id=MASK)
    out = generate(model, [[5, 6], [7, 8, 9]], cfg)
    rows = torch.tensor([0, 0, 1, 1, 1])
    starts = torch.tensor([0, 5, 2, 7, 8])
    finals = continue_from(model, out, rows, starts)
    assert torch.equal(finals, out.completion[rows])  # greedy decoding from its own states is deterministic
    calls = []
    handle = model.register_forward_hook(lambda m, a, k_out: calls.append(1))
    continue_from(model, out, rows, starts)
    handle.remove()
    assert len(calls) == cfg.steps - 0  # one batched forward per step from the earliest start


def test_continue_from_sampled_keeps_committed_tokens(sampled):
    model, out = sampled
    rows = torch.tensor([0, 1, 2, 2])
    starts = torch.tensor([3, 1, 6, 4])
    finals = continue_from(model, out, rows, starts, generator=torch.Generator().manual_seed(1))
    for r, (n, j) in enumerate(zip(rows.tolist(), starts.tolist())):
        kept = out.commit_step[n] < j
        assert torch.equal(finals[r][kept], out.completion[n][kept])
    assert torch.equal(finals[2], out.completion[2])
    with pytest.raises(ValueError, match="start_steps"):
        continue_from(model, out, torch.tensor([0]), torch.tensor([7]))


# ---- authors-exact switches (docs/fidelity.md) ----------------------------------------------------------------------


def test_injected_uniforms_drive_the_gumbel_draw():
    """Equal uniforms across the vocabulary add the same noise to every token: the draw is the greedy one. Other
    uniforms give the same tokens in both Gumbel forms (log p - tau log(-log u) and exp(z) / (-log u)^tau) on a
    float64 model, and a different rollout from the greedy one."""
    model = tiny_bert(4).double()
    N, L, T = 4, 8, 4
    greedy = SamplerConfig(gen_length=L, steps=T, block_length=8, mask_token_id=MASK)
    hot = SamplerConfig(gen_length=L, steps=T, block_length=8, mask_token_id=MASK, temperature=0.9)
    flat = torch.full((N, T, L, VOCAB), 0.3, dtype=torch.float64)
    prompts = [[5, 6, 7]] * N
    assert torch.equal(generate(model, prompts, hot, uniforms=flat).completion,
                       generate(model, prompts, greedy).completion)
    u = torch.rand((N, T, L, VOCAB), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = generate(model, prompts, hot, uniforms=u)
    b = generate(model, prompts, dataclasses.replace(hot, gumbel_in_model_dtype=True), uniforms=u)
    assert torch.equal(a.completion, b.completion) and torch.equal(a.commit_step, b.commit_step)
    assert not torch.equal(a.completion, generate(model, prompts, greedy).completion)
    assert a.step_logprobs.dtype == torch.float64  # records keep a float64 model's precision
    with pytest.raises(ValueError, match="uniforms"):
        generate(model, prompts, hot, uniforms=u[:, :2])


def test_attend_to_pads_calls_the_model_without_a_mask():
    model = tiny_bert(5)
    seen = []
    model.register_forward_pre_hook(lambda m, args, kwargs: seen.append("attention_mask" in kwargs), with_kwargs=True)
    prompts = [[5, 6, 7], [8]]
    cfg = SamplerConfig(gen_length=4, steps=2, block_length=4, mask_token_id=MASK)
    masked = generate(model, prompts, cfg)
    assert seen == [True, True]
    seen.clear()
    attended = generate(model, prompts, dataclasses.replace(cfg, attend_to_pads=True))
    assert seen == [False, False]
    assert not torch.allclose(masked.step_logprobs[1], attended.step_logprobs[1])  # the pads now change row 1
    torch.testing.assert_close(masked.step_logprobs[0], attended.step_logprobs[0])  # row 0 has no pads


def test_entropy_eps_is_the_authors_formula():
    """H = -sum p log(p + eps) on a position-only model with known distributions."""
    table = torch.log(torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.7, 0.1, 0.1, 0.1]], dtype=torch.float64)
                      .clamp_min(1e-300)).repeat(3, 1)[:5]
    model = PositionLogits(table)
    cfg = SamplerConfig(gen_length=2, steps=1, block_length=2, mask_token_id=3)
    eps = 1e-2
    out = generate(model, [[0, 1, 2]], dataclasses.replace(cfg, entropy_eps=eps))
    p = torch.softmax(table[-2:], -1)
    expected = float(-(p * torch.log(p + eps)).sum(-1).mean())
    assert out.step_entropy[0, 0].item() == pytest.approx(expected, rel=1e-12)
    exact = generate(model, [[0, 1, 2]], cfg).step_entropy[0, 0].item()
    assert exact == pytest.approx(float(torch.special.entr(p).sum(-1).mean()), rel=1e-12) and exact != expected
    with pytest.raises(ValueError, match="entropy_eps"):
        SamplerConfig(gen_length=2, steps=1, block_length=2, mask_token_id=3, entropy_eps=-1.0)
