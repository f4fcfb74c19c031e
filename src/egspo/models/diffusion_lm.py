"""The position-aligned wrapper every downstream stage calls.

``DiffusionLM(input_ids=[N, S], attention_mask=[N, S] or None).logits -> [N, S, V]`` where ``logits[:, i]`` is the
denoiser's prediction p_theta(x_i | s) *for position i*, whatever the family: Dream's AR-initialised logits are
realigned as ``cat([logits[:, :1], logits[:, :-1]], dim=1)`` (as Dream's own sampler does), and a padded Dream batch
is passed as Dream expects it (a 4-D boolean attention mask and ``position_ids = cumsum(mask) - 1``). Left padding is
exact for the tiny ModernBERT: rotary scores depend only on relative positions and padded keys are masked out.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

from egspo.models.families import ModelFamily


class DiffusionLM(nn.Module):
    """A loaded model (plain HF or peft-wrapped) whose ``forward(input_ids, attention_mask=None)`` returns
    ``MaskedLMOutput(logits=[N, S, V])`` with ``logits[:, i]`` the prediction for position i.

    ``attention_mask`` ([N, S], True/1 on real tokens) is optional; an all-ones mask is dropped (no padding).
    Unknown attributes (``config``, ``disable_adapter``, ``enable_input_require_grads``...) are looked up on the
    wrapped model, so it can be used where the HF model would be.
    """

    def __init__(self, model: nn.Module, family: ModelFamily):
        super().__init__()
        self.model = model
        self.family = family

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name.startswith("__") or not modules or "model" not in modules:
                raise
            return getattr(modules["model"], name)

    @property
    def is_peft(self) -> bool:
        return is_peft_model(self.model)

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> MaskedLMOutput:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [N, S], got shape {tuple(input_ids.shape)}")
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                                 f"{tuple(input_ids.shape)}")
            mask = attention_mask.bool()
            if bool(mask.all()):
                mask = None
        if self.family.attention == "dream":
            if mask is None:
                out = self.model(input_ids=input_ids, attention_mask="full")
            else:
                # Real queries attend to real keys only (as in Dream's sampler); pad queries also see only real
                # keys, which keeps their (unused) rows finite instead of fully masked.
                attn = mask[:, None, None, :].expand(-1, 1, mask.shape[1], -1)
                position_ids = mask.long().cumsum(-1) - 1
                position_ids = position_ids.masked_fill(~mask, 1)
                out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids)
        else:
            out = self.model(input_ids=input_ids, attention_mask=mask)
        logits = out.logits if hasattr(out, "logits") else out[0]
        if self.family.shift_logits:
            logits = shift_logits_to_positions(logits)
        return MaskedLMOutput(logits=logits)

    def enable_activation_checkpointing(self) -> None:
        """Non-reentrant activation (gradient) checkpointing on the wrapped model: recompute each layer's
        activations in the backward pass instead of keeping them. transformers 5 renamed
        ``gradient_checkpointing_enable`` (kept for older versions) to ``activation_checkpointing_enable``. A peft
        model also gets input embeddings that require grad, so the frozen base passes gradients to the adapters."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if self.is_peft and hasattr(self.model, "enable_input_require_grads"):
            self.model.enable_input_require_grads()

    def save_pretrained(self, out_dir: str | os.PathLike, **kwargs: Any) -> None:
        """The wrapped model's ``save_pretrained``: a model dir, or an adapter dir for a peft model."""
        self.model.save_pretrained(str(out_dir), **kwargs)


def shift_logits_to_positions(logits: torch.Tensor) -> torch.Tensor:
    """AR-initialised dLLMs (Dream): ``logits[:, i]`` predicts token i+1. Returns position-aligned logits
    ``out[:, i] = logits[:, i-1]`` for i >= 1 and ``out[:, 0] = logits[:, 0]`` (position 0 is never predicted)."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def is_peft_model(model: nn.Module) -> bool:
    """True for a peft ``PeftModel`` (or a :class:`DiffusionLM` around one)."""
    from peft import PeftModel

    if isinstance(model, DiffusionLM):
        model = model.model
    return isinstance(model, PeftModel)
