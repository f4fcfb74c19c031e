"""Text <-> token plumbing shared by `egspo rl`, `egspo eval` and `egspo trace`: encoding prompts, decoding
completions and ``--tag`` parsing."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def encode_prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt text, no special tokens added (a chat template already contains its own)."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    for text, row in zip(texts, ids, strict=True):
        if len(row) == 0:
            raise ValueError(f"prompt {text!r} encodes to no tokens")
    return [list(map(int, row)) for row in ids]


def truncate_at_eos(ids: Sequence[int], eos_token_id: int | None) -> list[int]:
    """``ids`` up to (not including) the first EOS."""
    ids = list(map(int, ids))
    if eos_token_id is not None and eos_token_id in ids:
        return ids[: ids.index(eos_token_id)]
    return ids


def decode_completions(tokenizer, completion_ids: torch.Tensor | Sequence[Sequence[int]],
                       cut_at_eos: bool = True) -> list[str]:
    """Completion texts: each row cut at its first ``tokenizer.eos_token_id`` (``cut_at_eos=False``: the whole row,
    as the authors score it), special tokens skipped."""
    rows = completion_ids.tolist() if isinstance(completion_ids, torch.Tensor) else completion_ids
    eos = tokenizer.eos_token_id if cut_at_eos else None
    return [tokenizer.decode(truncate_at_eos(r, eos), skip_special_tokens=True) for r in rows]


def keep_last_tokens(prompt_ids: Sequence[Sequence[int]], max_length: int | None) -> list[list[int]]:
    """Each prompt's last ``max_length`` tokens (None: unchanged), as the authors truncate left-padded prompts."""
    if max_length is None:
        return [list(p) for p in prompt_ids]
    if max_length < 1:
        raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
    return [list(p)[-max_length:] for p in prompt_ids]


def parse_tags(items: Sequence[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` -> dict; an item without ``=`` raises ValueError."""
    tags: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag expects key=value, got {item!r}")
        tags[key] = value
    return tags


__all__ = [
    "decode_completions",
    "encode_prompts",
    "keep_last_tokens",
    "parse_tags",
    "truncate_at_eos",
]
