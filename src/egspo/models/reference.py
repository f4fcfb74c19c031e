"""The reference policy pi_ref: the same network with its LoRA adapter disabled, or an explicit frozen copy for
full fine-tuning."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from egspo.models.diffusion_lm import DiffusionLM, is_peft_model


@contextlib.contextmanager
def reference_logits_context(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, ``model`` computes the reference policy pi_ref: its LoRA adapter is disabled (peft's
    ``disable_adapter``). A model without an adapter has no built-in reference: use a frozen copy
    (:func:`frozen_copy`, :class:`ReferencePolicy`)."""
    inner = model.model if isinstance(model, DiffusionLM) else model
    if not is_peft_model(inner):
        raise ValueError("reference_logits_context needs a LoRA (peft) model; for full fine-tuning pass a frozen "
                         "copy of the initial policy to ReferencePolicy(frozen=...)")
    with inner.disable_adapter():
        yield model


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with ``requires_grad=False`` (the reference for full fine-tuning)."""
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


class ReferencePolicy:
    """pi_ref as a callable: ``ref(input_ids, attention_mask) -> logits [N, S, V]`` under ``torch.no_grad``.

    ``ReferencePolicy(policy)`` for a LoRA policy: the same weights with the adapter disabled (no second copy).
    ``ReferencePolicy(frozen=model)``: an explicit frozen model (full fine-tuning).
    """

    def __init__(self, policy: nn.Module | None = None, *, frozen: nn.Module | None = None):
        if (policy is None) == (frozen is None):
            raise ValueError("ReferencePolicy needs exactly one of policy (a LoRA model) or frozen (a frozen copy)")
        if policy is not None and not is_peft_model(policy):
            raise ValueError("ReferencePolicy(policy) needs a LoRA (peft) policy; without an adapter pass "
                             "frozen=frozen_copy(initial_policy)")
        if frozen is not None and any(p.requires_grad for p in frozen.parameters()):
            raise ValueError("ReferencePolicy(frozen=...) has trainable parameters; use frozen_copy(model)")
        self.policy = policy
        self.frozen = frozen

    @property
    def uses_adapter(self) -> bool:
        return self.policy is not None

    @contextlib.contextmanager
    def context(self) -> Iterator[nn.Module]:
        """Yields the module that computes pi_ref (the policy with its adapter off, or the frozen copy)."""
        if self.policy is not None:
            with reference_logits_context(self.policy) as m:
                yield m
        else:
            yield self.frozen

    @torch.no_grad()
    def logits(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        with self.context() as m:
            return m(input_ids=input_ids, attention_mask=attention_mask).logits

    __call__ = logits
