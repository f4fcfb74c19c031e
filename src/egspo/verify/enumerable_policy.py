"""The float64 policy and the rewards the exact enumeration (`egspo.verify.exact`) runs on.

:class:`EnumerablePolicy` is small enough that every trajectory of one prompt can be listed, and gives the mask token
probability exactly 0, so the library's sampler and objective run it unchanged. Rewards are deterministic functions
of the completion, ``[N, L] -> [N]`` float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: logit of the mask token in :class:`EnumerablePolicy`: ``exp(-1e4)`` is exactly 0 in float64, so the policy never
#: proposes the mask and the softmax over the real tokens is unchanged to the last bit.
MASK_LOGIT = -1.0e4

RewardFn = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------------------------
# The enumerable policy
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class PolicyOutput:
    """What the sampler and objective read from a model call: ``logits`` ``[N, P+L, V+1]``."""

    logits: torch.Tensor


class EnumerablePolicy(nn.Module):
    """A float64 policy over ``vocab`` real tokens plus the mask token (id ``vocab``) whose logits at every
    position are a small MLP of the whole state: ``logits = W2 tanh(W1 flatten(E[s] + P) + b1) + b2``.

    ``forward(input_ids, attention_mask=None)`` returns :class:`PolicyOutput` with ``logits`` ``[N, S, vocab+1]``;
    the mask column is the constant :data:`MASK_LOGIT`. Padding is not supported (all prompts have one length).
    """

    def __init__(self, vocab: int, seq_len: int, *, embed_dim: int = 3, hidden: int = 8, seed: int = 0,
                 scale: float = 1.0):
        super().__init__()
        for name, value in (("vocab", vocab), ("seq_len", seq_len), ("embed_dim", embed_dim), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EnumerablePolicy: {name} must be a positive int, got {value!r}")
        if vocab < 2:
            raise ValueError(f"EnumerablePolicy: vocab must be >= 2 real tokens, got {vocab}")
        if not scale > 0:
            raise ValueError(f"EnumerablePolicy: scale must be > 0, got {scale!r}")
        self.vocab = vocab
        self.mask_token_id = vocab
        self.seq_len = seq_len
        dt = torch.float64
        self.token_embedding = nn.Embedding(vocab + 1, embed_dim, dtype=dt)
        self.position_embedding = nn.Parameter(torch.zeros(seq_len, embed_dim, dtype=dt))
        self.hidden = nn.Linear(seq_len * embed_dim, hidden, dtype=dt)
        self.output = nn.Linear(hidden, seq_len * vocab, dtype=dt)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.token_embedding.weight.copy_(torch.randn(vocab + 1, embed_dim, generator=gen, dtype=dt))
            self.position_embedding.copy_(torch.randn(seq_len, embed_dim, generator=gen, dtype=dt))
            fan_in = seq_len * embed_dim
            self.hidden.weight.copy_(torch.randn(hidden, fan_in, generator=gen, dtype=dt) * 1.5 / math.sqrt(fan_in))
            self.hidden.bias.copy_(torch.randn(hidden, generator=gen, dtype=dt) * 0.5)
            self.output.weight.copy_(torch.randn(seq_len * vocab, hidden, generator=gen, dtype=dt)
                                     * scale * 1.5 / math.sqrt(hidden))
            self.output.bias.copy_(torch.randn(seq_len * vocab, generator=gen, dtype=dt) * scale * 0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> PolicyOutput:
        if input_ids.dim() != 2 or input_ids.shape[1] != self.seq_len:
            raise ValueError(f"EnumerablePolicy: input_ids must be [N, {self.seq_len}], got {tuple(input_ids.shape)}")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("EnumerablePolicy: attention_mask has padded positions; this model takes none")
        if bool((input_ids < 0).any()) or bool((input_ids > self.vocab).any()):
            raise ValueError(f"EnumerablePolicy: token ids must lie in [0, {self.vocab}] (mask = {self.vocab})")
        n = input_ids.shape[0]
        h = (self.token_embedding(input_ids) + self.position_embedding).reshape(n, -1)
        real = self.output(torch.tanh(self.hidden(h))).view(n, self.seq_len, self.vocab)
        mask_col = torch.full((n, self.seq_len, 1), MASK_LOGIT, dtype=real.dtype, device=real.device)
        return PolicyOutput(logits=torch.cat([real, mask_col], dim=-1))


# ---------------------------------------------------------------------------------------------------------------
# Rewards on completions (deterministic, [N, L] -> [N] float64)
# ---------------------------------------------------------------------------------------------------------------
def table_reward(vocab: int, gen_length: int, seed: int = 0) -> RewardFn:
    """r(x) = table[x]: an arbitrary fixed table of rewards in {0, 0.1, ..., 1} over all ``vocab^L`` completions."""
    gen = torch.Generator().manual_seed(seed + 7919)
    table = torch.randint(0, 11, (vocab ** gen_length,), generator=gen).to(torch.float64) / 10.0
    radix = vocab ** torch.arange(gen_length - 1, -1, -1)

    def reward(completion: torch.Tensor) -> torch.Tensor:
        _check_completion(completion, vocab, gen_length)
        return table[(completion.long() * radix).sum(-1)]

    return reward


def match_reward(target: Sequence[int], vocab: int) -> RewardFn:
    """r(x) = number of positions i with x_i = target_i."""
    tgt = torch.as_tensor(list(target), dtype=torch.long)

    def reward(completion: torch.Tensor) -> torch.Tensor:
        _check_completion(completion, vocab, len(tgt))
        return (completion.long() == tgt).sum(-1).to(torch.float64)

    return reward


def _check_completion(completion: torch.Tensor, vocab: int, gen_length: int) -> None:
    if completion.shape[-1] != gen_length:
        raise ValueError(f"reward: completion length must be {gen_length}, got shape {tuple(completion.shape)}")
    if bool((completion < 0).any()) or bool((completion >= vocab).any()):
        raise ValueError(f"reward: completion holds ids outside the real vocabulary [0, {vocab})")

