"""Which weights sample the RL rollouts: the live (unmerged) LoRA policy, or a merged copy of the adapted weights.

A peft LoRA linear computes ``y = W0 x + s * B (A x)`` (s = alpha / r). During a rollout (T forwards at a fixed
policy, no gradients) the adapter path is pure overhead: two extra skinny matmuls per projection, about as costly as
the base matmul at r = 128 (measured on an H100 for LLaDA-8B: 187 ms per forward unmerged vs 93 ms for the base
weights alone). :class:`MergedRollout` samples from ``W_r = W0 + s * B A`` instead:

* ``W_r`` is a separate buffer per LoRA-targeted linear (only those weights are copied; embeddings, norms and the
  head are shared). It is recomputed from the frozen ``W0`` and the current ``A, B`` in float32 at the start of every
  rollout (``refresh``) and rounded once to the model dtype, so rounding never accumulates across iterations;
  ``W0`` is never modified (peft's in-place ``merge`` / ``unmerge`` would add and subtract ``s B A`` in bf16 and drift).
* Inside ``with rollout.weights() as model:`` each targeted base layer's ``weight`` points at ``W_r`` and the adapters
  are disabled; on exit the original ``W0`` tensors are put back (same storage).

In float32 ``W_r x`` equals ``W0 x + s B A x`` up to float error; in bf16 the merged and live forwards round
differently, so the behaviour policy that drew the samples differs from the trained policy by rounding. The ratio of
the clipped surrogate must compare the updated policy with the policy that the update starts from, so with a merged
rollout the trainer recomputes the old log-probs ``log pi_old(S_{j+1} | S_j)`` of every selected state with the live
policy in one batched no-grad pass before the K updates (``recompute_old_logprobs``): at the first update step
``rho = 1`` exactly, as on-policy PPO requires, and the sampling rounding acts only on which trajectories were drawn.

``live`` is the plain model (no copy, no recomputation): the default without LoRA, on CPU, or with 4-bit weights
(NF4 weights cannot hold a merged copy).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

ROLLOUT_POLICIES = ("auto", "merged", "live")


def resolve_rollout_policy(choice: str, *, lora: bool, device: torch.device | str, quantized: bool = False) -> str:
    """``auto`` -> ``merged`` for a LoRA policy on a CUDA device with unquantized weights, else ``live``.
    An explicit ``merged`` without LoRA or with 4-bit weights is a ValueError."""
    if choice not in ROLLOUT_POLICIES:
        raise ValueError(f"rollout_policy must be one of {ROLLOUT_POLICIES}, got {choice!r}")
    if choice == "auto":
        return "merged" if lora and not quantized and torch.device(device).type == "cuda" else "live"
    if choice == "merged" and not lora:
        raise ValueError("rollout_policy='merged' needs a LoRA policy (lora_r > 0); full fine-tuning samples live")
    if choice == "merged" and quantized:
        raise ValueError("rollout_policy='merged' cannot merge into 4-bit weights; use 'live' with load_in_4bit")
    return choice


@dataclass
class _Merged:
    """One LoRA-targeted linear: its peft layer, the original base weight W0 and the merged buffer W_r."""

    layer: nn.Module        # peft LoraLayer (has base_layer, lora_A, lora_B, scaling)
    adapter: str
    base_weight: torch.Tensor  # W0 (the parameter's data; never written)
    merged: torch.Tensor       # W_r, same shape / dtype / device as W0


def _peft_model(policy: nn.Module) -> nn.Module:
    from egspo.models.diffusion_lm import DiffusionLM, is_peft_model

    inner = policy.model if isinstance(policy, DiffusionLM) else policy
    if not is_peft_model(inner):
        raise ValueError("MergedRollout needs a peft LoRA policy")
    return inner


def lora_layers(policy: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every peft LoRA linear of ``policy`` (with exactly one active adapter)."""
    from peft.tuners.lora import LoraLayer

    out = []
    for name, module in _peft_model(policy).named_modules():
        if isinstance(module, LoraLayer):
            out.append((name, module))
    if not out:
        raise ValueError("the policy has no LoRA layers")
    return out


class LiveRollout:
    """Rollouts from the trained model itself (no copy); old log-probs from the rollout are already the policy's."""

    name = "live"
    recompute_old_logprobs = False

    def __init__(self, policy: nn.Module):
        self.policy = policy

    @contextlib.contextmanager
    def weights(self) -> Iterator[nn.Module]:
        yield self.policy

    def copied_numel(self) -> int:
        return 0


class MergedRollout:
    """Rollouts from ``W_r = W0 + s * B A`` held beside the trained LoRA model (see the module docstring)."""

    name = "merged"
    recompute_old_logprobs = True

    def __init__(self, policy: nn.Module):
        self.policy = policy
        self.peft_model = _peft_model(policy)
        self.entries: list[_Merged] = []
        for name, layer in lora_layers(policy):
            adapters = list(layer.active_adapters)
            if len(adapters) != 1:
                raise ValueError(f"LoRA layer {name}: expected one active adapter, got {adapters}")
            adapter = adapters[0]
            base = layer.get_base_layer()
            if not isinstance(base, nn.Linear):
                raise ValueError(f"LoRA layer {name}: merged rollouts support nn.Linear bases, got "
                                 f"{type(base).__name__}")
            if getattr(layer, "fan_in_fan_out", False):
                raise ValueError(f"LoRA layer {name}: fan_in_fan_out weights are not supported")
            if getattr(layer, "use_dora", {}).get(adapter, False):
                raise ValueError(f"LoRA layer {name}: DoRA adapters are not supported by merged rollouts")
            if getattr(layer, "lora_bias", {}).get(adapter, False):
                raise ValueError(f"LoRA layer {name}: LoRA bias terms are not supported by merged rollouts")
            if getattr(layer, "merged", False):
                raise ValueError(f"LoRA layer {name} is merged in place; unmerge it first")
            w0 = base.weight.data
            self.entries.append(_Merged(layer, adapter, w0, torch.empty_like(w0)))

    def copied_numel(self) -> int:
        """Elements held in merged buffers (the size of the LoRA-targeted weights, nothing else)."""
        return sum(e.merged.numel() for e in self.entries)

    @torch.no_grad()
    def refresh(self) -> None:
        """``W_r <- round(W0 + s * B A)`` for every targeted linear, computed in float32 from the frozen W0."""
        for e in self.entries:
            layer = e.layer
            if layer.get_base_layer().weight.data.data_ptr() != e.base_weight.data_ptr():
                raise RuntimeError("a LoRA base weight was replaced since MergedRollout was built")
            a = layer.lora_A[e.adapter].weight.float()
            b = layer.lora_B[e.adapter].weight.float()
            scale = float(layer.scaling[e.adapter])
            merged = torch.addmm(e.base_weight.float(), b, a, alpha=scale)
            e.merged.copy_(merged)

    @contextlib.contextmanager
    def weights(self) -> Iterator[nn.Module]:
        """Inside the block the policy computes with ``W_r`` (adapters off); W0 is restored on exit."""
        self.refresh()
        bases = [e.layer.get_base_layer() for e in self.entries]
        with self.peft_model.disable_adapter():
            try:
                for base, e in zip(bases, self.entries, strict=True):
                    base.weight.data = e.merged
                yield self.policy
            finally:
                for base, e in zip(bases, self.entries, strict=True):
                    base.weight.data = e.base_weight


def make_rollout_policy(choice: str, policy: nn.Module, *, device, quantized: bool = False):
    """A :class:`MergedRollout` or :class:`LiveRollout` for ``policy`` by :func:`resolve_rollout_policy`."""
    from egspo.models.diffusion_lm import is_peft_model

    resolved = resolve_rollout_policy(choice, lora=is_peft_model(policy), device=device, quantized=quantized)
    return MergedRollout(policy) if resolved == "merged" else LiveRollout(policy)


__all__ = ["LiveRollout", "MergedRollout", "ROLLOUT_POLICIES", "lora_layers", "make_rollout_policy",
           "resolve_rollout_policy"]
