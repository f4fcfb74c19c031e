"""Masked-diffusion supervised warm start (LLaDA's SFT objective), as ``egspo sft``.

For an example with prompt p (never masked) and completion x of length L (the target's tokens followed by EOS up to
L, as LLaDA pads its SFT answers), draw a noise level t ~ U(eps, 1) per example and mask every completion token
independently with probability t, giving x_t. The loss is

    loss = (1/B) sum_b  1/(t_b * L) * sum_{i : x_t[b, i] = [MASK]}  -log p_theta(x[b, i] | p_b, x_t[b])

i.e. the cross-entropy of the masked completion tokens, weighted by 1/t (which makes it an unbiased estimate of the
mean per-token cross-entropy for every t, and an upper bound on the NLL) and divided by the completion length L
(LLaDA's normalisation: its SFT code divides each token's loss by the answer length including EOS padding, then
averages over the batch). t = eps + (1 - eps) * u with u ~ U(0, 1) as in LLaDA (eps = 1e-3).

Data: JSONL rows of ``egspo data`` with a task's ``prompt(row, style)`` / ``target(row, style)``, or (``--format
s1k``, the paper preset's optional LoRA warm start) rows with question / solution fields, the tokenizer's chat
template applied to the question. The model dir (merged, for LoRA) + tokenizer + ``sft_metrics.jsonl`` are written
atomically to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from egspo.settings import add_arguments
from egspo.sft.config import DEFAULT_EPS, SFTConfig
from egspo.tasks import get_task
from egspo.tasks.sources import read_task_rows
from egspo.utils.files import read_jsonl


class TargetTooLongError(ValueError):
    """A target has more tokens than the completion length."""


@dataclass(frozen=True)
class SFTExample:
    prompt_ids: tuple[int, ...]      # tokenizer(prompt) without special tokens; never masked
    completion_ids: tuple[int, ...]  # target tokens + EOS padding, exactly gen_length ids


# ------------------------------------------------------------------------------------------------------- data


def encode_example(prompt: str, target: str, tokenizer: Any, gen_length: int, *, where: str = "row") -> SFTExample:
    """Tokenize one (prompt, target) pair; the completion is the target's tokens then EOS up to ``gen_length``.
    A target longer than ``gen_length`` tokens is an error naming ``where``."""
    if gen_length < 1:
        raise ValueError(f"gen_length must be >= 1, got {gen_length}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id (needed to pad completions)")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(target_ids) > gen_length:
        raise TargetTooLongError(f"{where}: target is {len(target_ids)} tokens, longer than gen_length={gen_length} "
                         f"(target starts {target[:60]!r})")
    if not prompt_ids:
        raise ValueError(f"{where}: empty prompt")
    return SFTExample(tuple(prompt_ids), tuple(target_ids) + (eos,) * (gen_length - len(target_ids)))


def build_examples(rows: Sequence[dict[str, Any]], tokenizer: Any, gen_length: int, *, task: Any = None,
                   style: str = "tiny", prompt_field: str | None = None, target_field: str | None = None,
                   skip_long: bool = False, source: str = "data") -> tuple[list[SFTExample], int]:
    """Examples from rows, either through ``task.prompt(row, style)`` / ``task.target(row, style)`` or from two
    fields (chat template applied to the prompt field when the tokenizer has one). Returns (examples, n_skipped);
    rows whose target is too long raise unless ``skip_long`` (then they are counted in n_skipped)."""
    if (task is None) == (prompt_field is None or target_field is None):
        raise ValueError("give either task, or both prompt_field and target_field")
    examples, skipped = [], 0
    for i, row in enumerate(rows):
        where = f"{source} row {i}" + (f" (id {row['id']!r})" if "id" in row else "")
        if task is not None:
            prompt, target = task.prompt(row, style=style), task.target(row, style=style)
        else:
            for field in (prompt_field, target_field):
                if not isinstance(row.get(field), str):
                    raise ValueError(f"{where}: field {field!r} missing or not a string")
            prompt, target = row[prompt_field], row[target_field]
            if getattr(tokenizer, "chat_template", None):
                prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                       add_generation_prompt=True)
        try:
            examples.append(encode_example(prompt, target, tokenizer, gen_length, where=where))
        except TargetTooLongError:
            if not skip_long:
                raise
            skipped += 1
    if not examples:
        raise ValueError(f"{source}: no usable rows ({skipped} skipped as longer than gen_length={gen_length})")
    return examples, skipped


def collate(examples: Sequence[SFTExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompts to the longest in the batch; every completion has the same length L and fills the last L
    columns. Returns input_ids [B, P+L], attention_mask [B, P+L] (False on padding), completion [B, L]."""
    lengths = {len(e.completion_ids) for e in examples}
    if len(lengths) != 1:
        raise ValueError(f"completions of one batch must share a length, got {sorted(lengths)}")
    p = max(len(e.prompt_ids) for e in examples)
    rows, masks = [], []
    for e in examples:
        pad = p - len(e.prompt_ids)
        rows.append([pad_token_id] * pad + list(e.prompt_ids) + list(e.completion_ids))
        masks.append([False] * pad + [True] * (len(e.prompt_ids) + len(e.completion_ids)))
    input_ids = torch.tensor(rows, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": torch.tensor(masks, dtype=torch.bool),
            "completion": input_ids[:, p:].clone()}


# ------------------------------------------------------------------------------------------------------- loss


def sample_noise(batch_size: int, gen_length: int, *, eps: float = DEFAULT_EPS,
                 generator: torch.Generator | None = None, device: torch.device | str | None = None,
                 t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(t [B], mask [B, L]): t = eps + (1 - eps) * u, u ~ U(0, 1) (or the given ``t``), and each completion
    position masked independently with probability t_b."""
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    if t is None:
        u = torch.rand(batch_size, generator=generator, device=device)
        t = eps + (1.0 - eps) * u
    elif t.shape != (batch_size,) or bool(((t <= 0) | (t > 1)).any()):
        raise ValueError(f"t must have shape ({batch_size},) with values in (0, 1], got {t}")
    mask = torch.rand(batch_size, gen_length, generator=generator, device=device) < t[:, None]
    return t, mask


def masked_diffusion_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                          t: torch.Tensor) -> torch.Tensor:
    """(1/B) sum_b 1/(t_b L) sum_{i in mask_b} CE(logits[b, i], targets[b, i]); logits [B, L, V] (completion
    positions only), targets / mask [B, L], t [B]."""
    b, length = targets.shape
    ce = F.cross_entropy(logits.float().reshape(b * length, -1), targets.reshape(-1), reduction="none")
    ce = ce.view(b, length) * mask.to(ce.dtype)
    return (ce.sum(dim=1) / (t.to(ce.dtype) * length)).mean()


def sft_loss(model: nn.Module, batch: dict[str, torch.Tensor], mask_token_id: int, *, eps: float = DEFAULT_EPS,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One stochastic evaluation of the loss on a collated batch: noise the completion (prompt untouched), one
    forward, the 1/t-weighted masked cross-entropy."""
    input_ids, completion = batch["input_ids"], batch["completion"]
    n, length = completion.shape
    t, mask = sample_noise(n, length, eps=eps, generator=generator, device=input_ids.device)
    noisy = input_ids.clone()
    noisy[:, -length:] = torch.where(mask, torch.full_like(completion, mask_token_id), completion)
    logits = model(input_ids=noisy, attention_mask=batch["attention_mask"]).logits[:, -length:]
    loss = masked_diffusion_loss(logits, completion, mask, t)
    return loss, {"t_mean": float(t.mean()), "masked_tokens": int(mask.sum())}


@torch.no_grad()
def evaluate_loss(model: nn.Module, examples: Sequence[SFTExample], mask_token_id: int, pad_token_id: int, *,
                  batch_size: int, seed: int, eps: float = DEFAULT_EPS, device: torch.device | None = None) -> float:
    """The SFT loss on ``examples`` with noise drawn from a fresh ``seed`` generator: the same masks at every
    call, so values are comparable across training steps. Example-weighted mean over batches."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device or "cpu").manual_seed(seed)
    total = 0.0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = {k: v.to(device) if device is not None else v for k, v in collate(chunk, pad_token_id).items()}
        loss, _ = sft_loss(model, batch, mask_token_id, eps=eps, generator=gen)
        total += float(loss) * len(chunk)
    model.train(was_training)
    return total / len(examples)


# ------------------------------------------------------------------------------------------------------- training


def train(model: nn.Module, tokenizer: Any, train_examples: Sequence[SFTExample], *, max_steps: int,
          batch_size: int, lr: float, seed: int, warmup_ratio: float = 0.0, weight_decay: float = 0.0,
          grad_accum: int = 1, max_grad_norm: float | None = 1.0, eps: float = DEFAULT_EPS,
          eval_examples: Sequence[SFTExample] | None = None, eval_every: int = 0,
          progress: bool = True) -> tuple[nn.Module, list[dict[str, Any]]]:
    """AdamW + linear warmup / decay (``transformers.get_scheduler``), data-parallel through accelerate.
    Returns (the unwrapped trained model, metric rows: one per optimizer step, plus ``eval_loss`` rows)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from egspo.models.loading import mask_token_id as find_mask_id

    for name, value in (("max_steps", max_steps), ("batch_size", batch_size), ("grad_accum", grad_accum)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    try:  # the model's own fact first (LLaDA's fixed id, the tiny config's), else the tokenizer's mask token
        mask_id = find_mask_id(model)
    except ValueError:
        mask_id = find_mask_id(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    accelerator = Accelerator(gradient_accumulation_steps=grad_accum)
    set_seed(seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=round(warmup_ratio * max_steps),
                              num_training_steps=max_steps)
    loader = torch.utils.data.DataLoader(
        list(train_examples), batch_size=batch_size, shuffle=True, drop_last=len(train_examples) >= batch_size,
        collate_fn=lambda ex: collate(ex, pad_id), generator=torch.Generator().manual_seed(seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    noise_gen = torch.Generator(device=accelerator.device).manual_seed(seed * 1_000_003 + accelerator.process_index)

    metrics: list[dict[str, Any]] = []
    bar = tqdm(total=max_steps, desc="sft", disable=not (progress and accelerator.is_main_process))
    step, epoch, start = 0, 0, time.time()
    micro_losses: list[float] = []
    stats_acc: dict[str, float] = {"t_mean": 0.0, "masked_tokens": 0}
    while step < max_steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for batch in loader:
            with accelerator.accumulate(model):
                loss, stats = sft_loss(model, batch, mask_id, eps=eps, generator=noise_gen)
                accelerator.backward(loss)
                micro_losses.append(float(loss.detach()))
                stats_acc["t_mean"] += stats["t_mean"]
                stats_acc["masked_tokens"] += stats["masked_tokens"]
                grad_norm = None
                if accelerator.sync_gradients and max_grad_norm is not None:
                    grad_norm = float(accelerator.clip_grad_norm_(params, max_grad_norm))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            lr_now = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            mean_loss = accelerator.gather(torch.tensor(sum(micro_losses) / len(micro_losses),
                                                        device=accelerator.device)).mean().item()
            row = {"step": step, "loss": mean_loss, "lr": lr_now, "t_mean": stats_acc["t_mean"] / len(micro_losses),
                   "masked_tokens": int(stats_acc["masked_tokens"]), "epoch": epoch,
                   "elapsed_s": round(time.time() - start, 3)}
            if grad_norm is not None:
                row["grad_norm"] = grad_norm
            micro_losses.clear()
            stats_acc = {"t_mean": 0.0, "masked_tokens": 0}
            if eval_examples and eval_every and (step % eval_every == 0 or step == max_steps):
                row["eval_loss"] = evaluate_loss(model, eval_examples, mask_id, pad_id, batch_size=batch_size,
                                                 seed=seed + 7919, eps=eps, device=accelerator.device)
            metrics.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            if step >= max_steps:
                break
        epoch += 1
    bar.close()
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model), metrics


# ------------------------------------------------------------------------------------------------------- command


def configure(parser: argparse.ArgumentParser) -> None:
    """The flags of `SFTConfig` (one per field, ``-`` for ``_``)."""
    add_arguments(parser, SFTConfig)


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from egspo.models.loading import load_model, load_tokenizer
    from egspo.models.saving import save_model

    SFTConfig.from_namespace(args).validate()
    tokenizer = load_tokenizer(args.model)
    kwargs: dict[str, Any] = {"style": args.style, "skip_long": args.skip_long}
    if args.format == "task":
        kwargs["task"] = get_task(args.task)
    else:
        kwargs.update(prompt_field=args.prompt_field, target_field=args.target_field)
    def rows_of(path: str) -> list[dict]:  # task rows checked field by field (file, line, field named)
        return read_task_rows(path, kwargs["task"]) if args.format == "task" else read_jsonl(path)

    train_examples, skipped = build_examples(rows_of(args.train), tokenizer, args.gen_length,
                                             source=str(args.train), **kwargs)
    eval_examples = None
    if args.eval:
        eval_examples, _ = build_examples(rows_of(args.eval), tokenizer, args.gen_length, source=str(args.eval),
                                          **kwargs)
    lora = None
    if args.lora_r > 0:
        lora = {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout}
        if args.lora_targets:
            lora["target_modules"] = [m.strip() for m in args.lora_targets.split(",") if m.strip()]
    state = PartialState()
    model = load_model(args.model, dtype=args.dtype, lora=lora, quantize_4bit=args.quantize_4bit,
                       device=state.device if args.quantize_4bit else None)
    model, metrics = train(
        model, tokenizer, train_examples, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, grad_accum=args.grad_accum,
        max_grad_norm=args.max_grad_norm if args.max_grad_norm > 0 else None, eps=args.eps,
        eval_examples=eval_examples, eval_every=args.eval_every or args.max_steps,
        progress=not args.no_progress)
    if state.is_main_process:
        if lora is not None and not args.save_adapter:
            model.model = model.model.merge_and_unload()
        summary = {"args": {k: v for k, v in vars(args).items() if k != "func"}, "n_train": len(train_examples),
                   "n_skipped_long": skipped, "n_eval": len(eval_examples or ()),
                   "final_loss": metrics[-1]["loss"] if metrics else math.nan}
        save_model(model, args.out, tokenizer, extra_files={
            "sft_metrics.jsonl": "".join(json.dumps(r) + "\n" for r in metrics),
            "sft_summary.json": json.dumps(summary, indent=2) + "\n"})
        print(f"wrote {args.out}: {len(metrics)} steps, final loss {summary['final_loss']:.4f}"
              + (f", eval loss {metrics[-1]['eval_loss']:.4f}" if metrics and "eval_loss" in metrics[-1] else ""))
    state.wait_for_everyone()
    return 0


__all__ = ["DEFAULT_EPS", "SFTExample", "TargetTooLongError", "build_examples", "collate", "encode_example",
           "evaluate_loss", "masked_diffusion_loss", "sample_noise", "sft_loss", "train"]
