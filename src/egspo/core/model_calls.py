"""Calling the denoiser: the device it lives on, whether and how its forward takes an attention mask, the logits'
shape check, the dtype log-softmax arithmetic runs in, and left padding of prompt batches.

Shared by the sampler (`egspo.core.sampler`), the per-step scores (`egspo.core.objective`) and SPG's
(`egspo.core.spg`), so all three call a model the same way. ``model(input_ids=..., attention_mask=...)`` must return
``.logits`` ``[N, S, V]`` (or the tensor itself).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence

import torch


def model_device(model, fallback: torch.device | None = None) -> torch.device:
    """The device of the model's first parameter (``fallback`` or CPU for a parameter-free module)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return fallback if fallback is not None else torch.device("cpu")


def accepts_attention_mask(model) -> bool:
    """Whether ``model.forward`` has an ``attention_mask`` parameter (checked on the signature, cached per
    function)."""
    forward = getattr(model, "forward", model)
    function = getattr(forward, "__func__", forward)
    try:
        return _has_attention_mask_param(function)
    except TypeError:  # unhashable callable
        return _has_attention_mask_param.__wrapped__(function)


@functools.lru_cache(maxsize=256)
def _has_attention_mask_param(function) -> bool:
    try:
        return "attention_mask" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def forward_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pass_mask: bool):
    """``model(input_ids=..., attention_mask=...).logits``; the mask is passed only when ``pass_mask`` (callers
    decide once, e.g. `needs_attention_mask`) and it is not None."""
    if pass_mask and attention_mask is not None:
        out = model(input_ids=input_ids, attention_mask=attention_mask.long())
    else:
        out = model(input_ids=input_ids)
    logits = out.logits if hasattr(out, "logits") else out
    if logits.dim() != 3 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"model logits must have shape [batch, seq, vocab] = [{input_ids.shape[0]}, {input_ids.shape[1]}, V], "
            f"got {tuple(logits.shape)}"
        )
    return logits


def needs_attention_mask(model, attention_mask: torch.Tensor) -> bool:
    """Pass the mask iff the model's forward takes one and it masks something (all ones is the same as none)."""
    return accepts_attention_mask(model) and not bool(attention_mask.all())


def vocab_size_of(model) -> int | None:
    cfg = getattr(model, "config", None)
    size = getattr(cfg, "vocab_size", None)
    return int(size) if isinstance(size, int) else None


def check_mask_id(model, mask_token_id: int, vocab_from_logits: int | None = None) -> None:
    """ValueError when ``mask_token_id`` is outside ``[0, V)`` (V from ``model.config.vocab_size`` or the logits)."""
    size = vocab_from_logits if vocab_from_logits is not None else vocab_size_of(model)
    if size is not None and not 0 <= mask_token_id < size:
        raise ValueError(f"mask_token_id={mask_token_id} is outside the model's vocabulary of size {size}")


def score_dtype(t: torch.Tensor) -> torch.dtype:
    """Float dtype for log-softmax arithmetic: at least float32 (float64 stays float64)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """``H(softmax(z)) = -sum_v p_v log p_v`` over the last dim (0 * log 0 taken as 0)."""
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros((), dtype=p.dtype, device=p.device)).sum(-1)


def pad_prompts(
    prompt_ids: Sequence[Sequence[int]] | torch.Tensor,
    pad_id: int,
    prompt_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids [N, P], mask [N, P])``: lists of token ids are left padded with ``pad_id``; a tensor is taken as is
    (all tokens real unless ``prompt_mask`` says otherwise)."""
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() != 2 or prompt_ids.shape[0] == 0:
            raise ValueError(f"prompt_ids must be a non-empty [N, P] tensor, got shape {tuple(prompt_ids.shape)}")
        ids = prompt_ids.long()
        if prompt_mask is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        else:
            mask = torch.as_tensor(prompt_mask, device=ids.device).bool()
            if mask.shape != ids.shape:
                raise ValueError(f"prompt_mask shape {tuple(mask.shape)} != prompt_ids shape {tuple(ids.shape)}")
        return ids, mask
    prompts = [list(p) for p in prompt_ids]
    if len(prompts) == 0:
        raise ValueError("prompt_ids is an empty batch (no prompts)")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for row, p in enumerate(prompts):
        if p:
            ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p) :] = True
    return ids, mask
