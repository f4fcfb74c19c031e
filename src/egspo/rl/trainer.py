"""The loop of `egspo rl`: set-up, rollout, state and checkpoints; the update is an algorithm's strategy.

**One iteration** (= one "step" of ``--max-steps``, ``--save-every`` and ``metrics.jsonl``): draw ``batch_size``
prompts (a global count; each of the W data-parallel processes takes a contiguous ``batch_size / W`` share), sample
G = ``num_generations`` completions per prompt with the current policy (eval mode, or train mode under the authors'
``rollout_dropout``; temperature tau; the G rows of a prompt are contiguous), decode them (cut at the first EOS
unless ``reward_text: full``, special tokens skipped) and score them, ``r0 = r(S_T)``.
Then the update strategy registered for ``algorithm`` (`egspo.rl.updates`: ``egspo`` = EGSPO / EGSPO-SA,
``diffu_grpo`` = d1) computes advantages and takes its optimizer steps (K for EGSPO, ``mu`` for diffu-GRPO; with
``mu = K`` both take the same number per rollout batch, a fair comparison). The loop knows nothing of either.

``grad_accum`` and ``micro_batch`` are memory knobs only: the rows of an optimizer step are processed in
``grad_accum`` pieces (each at most ``micro_batch`` rows), gradients accumulate (synchronised across processes only
on the last piece) and the loss is normalised by the global row count, so the update is the same for any setting.

**Prompt order**: `egspo.rl.prompt_sampler.PromptOrder`: one seeded permutation per epoch, batches are consecutive
slices of their concatenation, so every prompt is used exactly once per epoch; a batch that straddles an epoch boundary
takes the rest of epoch e and the head of epoch e+1.

**Checkpoints** (`egspo.rl.checkpointing`): ``OUT/checkpoints/step_{N}`` every ``save_every`` iterations and at
``max_steps``, all kept. Running the same command again resumes from the last complete checkpoint (model/adapter,
optimizer, scheduler, prompt-order position, every process's RNG states) and truncates ``OUT/metrics.jsonl`` to
its step, so a resumed run reproduces an uninterrupted one.

**Optimizer**: AdamW (betas 0.9 / 0.99, as d1) on the trainable parameters, gradient clipping at ``max_grad_norm``,
constant learning rate after ``warmup_steps`` linear warm-up optimizer steps (d1's ``constant_with_warmup``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egspo.rl.config import RESUMABLE_CHANGES, RLConfig
from egspo.rl.updates import strategy_class
from egspo.rl.updates.base import IterationResult


# ---- small helpers ---------------------------------------------------------------------------------------------------


class _ForwardWithMask:
    """Presents a DDP-wrapped model with an explicit ``forward(input_ids, attention_mask)`` signature (the sampler and
    objective pass the attention mask only to models whose forward declares it) while gradients flow through DDP."""

    def __init__(self, wrapped, inner) -> None:
        self.wrapped, self.inner = wrapped, inner

    def forward(self, input_ids, attention_mask=None):
        return self.wrapped(input_ids=input_ids, attention_mask=attention_mask)

    __call__ = forward

    def parameters(self):
        return self.inner.parameters()

    @property
    def config(self):
        return self.inner.config


def _concat_rollouts(parts):
    """One Rollout from chunks generated with the same padded prompt width."""
    from egspo.core.sampler import Rollout

    if len(parts) == 1:
        return parts[0]
    values = {}
    for f in dataclasses.fields(Rollout):
        first = getattr(parts[0], f.name)
        values[f.name] = torch.cat([getattr(p, f.name) for p in parts], 0) if isinstance(first, torch.Tensor) \
            else first
    return Rollout(**values)


def _unit_generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


# ---- the trainer -----------------------------------------------------------------------------------------------------


class RLTrainer:
    """Build with an :class:`RLConfig`; :meth:`train` runs (or resumes) to ``max_steps``."""

    def __init__(self, config: RLConfig, accelerator=None) -> None:
        from accelerate import Accelerator

        from egspo.tasks.sources import read_task_rows
        from egspo.core.generation_io import encode_prompts, keep_last_tokens
        from egspo.models.loading import load_tokenizer, mask_token_id
        from egspo.rl.prompt_sampler import PromptOrder
        from egspo.core.sampler import SamplerConfig
        from egspo.tasks import get_task

        self.cfg = config
        self.accelerator = accelerator if accelerator is not None else Accelerator()
        acc = self.accelerator
        self.rank, self.world = acc.process_index, acc.num_processes
        config.validate(self.world)
        self.task = get_task(config.task)
        self.out = Path(config.out)
        self.tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
        self.rows = read_task_rows(config.train, self.task)  # file, line and field named for a bad row
        texts = [self.task.prompt(row, config.style, self.tokenizer) for row in self.rows]
        self.prompt_ids = keep_last_tokens(encode_prompts(self.tokenizer, texts), config.max_prompt_length)
        self.semantics = config.semantics()
        self.order = PromptOrder(len(self.rows), config.seed)
        self.sampler_config = SamplerConfig(
            gen_length=config.gen_length, steps=config.steps, block_length=config.block_length,
            mask_token_id=mask_token_id(self.tokenizer), temperature=config.temperature,
            remasking=config.remasking, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id, **self.semantics.sampler_options(),
        )
        self.device = acc.device
        self.generator = _unit_generator(self.device, config.seed * 1_000_003 + self.rank)
        self.iteration = 0
        self._resume_state: dict[str, Any] | None = None
        self._build_model()
        self.strategy = strategy_class(config.algorithm)(self)

    # -- set-up ----------------------------------------------------------------------------------------------------

    def _load(self, path: str, **extra):
        from egspo.models.loading import load_model

        cfg = self.cfg
        device = self.device if not cfg.load_in_4bit else None
        return load_model(path, dtype=cfg.dtype, quantize_4bit=cfg.load_in_4bit,
                          trust_remote_code=cfg.trust_remote_code, device=device, **extra)

    def _build_model(self) -> None:
        from egspo.rl.checkpointing import latest_loadable_checkpoint, load_trainer_state
        from egspo.models.reference import ReferencePolicy, frozen_copy

        cfg, acc = self.cfg, self.accelerator
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)  # LoRA initialisation (identical on every process)
        latest = latest_loadable_checkpoint(self.out)  # skips (and names) checkpoints that do not load
        if latest is not None and cfg.on_settings_change == "restart" and self._settings_diff(
                load_trainer_state(latest[1])):
            self._discard_run()
            latest = None
        if latest is not None:
            step, path = latest
            state = load_trainer_state(path)
            self._check_resume(state, path)
            self._resume_state = state
            if cfg.lora_r:
                policy = self._load(str(path), base=cfg.model, is_trainable=True)
            else:
                policy = self._load(str(path))
        else:
            policy = self._load(cfg.model, lora=cfg.lora())
        if cfg.lora_r:
            self.reference = ReferencePolicy(policy)
        elif cfg.beta > 0:
            base = policy if latest is None else self._load(cfg.model)
            self.reference = ReferencePolicy(frozen=frozen_copy(base))
        else:
            self.reference = None  # no KL term: no reference needed
        if cfg.gradient_checkpointing:
            policy.enable_activation_checkpointing()
        params = [p for p in policy.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"model {cfg.model!r} has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
        warm = cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 1.0 if warm == 0 else min(1.0, (s + 1) / (warm + 1)))
        prepared, self.optimizer = acc.prepare(policy, optimizer)
        self.policy = acc.unwrap_model(prepared)
        self.train_model = prepared if prepared is self.policy else _ForwardWithMask(prepared, self.policy)
        self.prepared = prepared
        self.params = params
        from egspo.rl.rollout_policy import make_rollout_policy

        self.rollout_policy = make_rollout_policy(cfg.rollout_policy, self.policy, device=self.device,
                                                  quantized=cfg.load_in_4bit)
        if self._resume_state is not None:
            self._restore(self._resume_state)
        from egspo.rl.forward_meter import ForwardMeter

        frozen = getattr(self.reference, "frozen", None)
        self.forwards = ForwardMeter([self.policy] + ([frozen] if frozen is not None else []))
        self._advantages_known: tuple[float, int] | None = None

    def _settings_diff(self, state: dict[str, Any]) -> list[str]:
        """Settings of this run that differ from those a checkpoint was written with (resumable ones excluded)."""
        saved = state.get("config", {})
        return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in dataclasses.asdict(self.cfg).items()
                if k not in RESUMABLE_CHANGES and saved.get(k) != v]

    def _discard_run(self) -> None:
        """Delete the checkpoints and metrics of a run made with other settings (main process), then wait."""
        if self.accelerator.is_main_process:
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()

    def _check_resume(self, state: dict[str, Any], path: Path) -> None:
        diffs = self._settings_diff(state)
        if diffs:
            raise ValueError(f"cannot resume from {path}: settings differ from the checkpoint's ({'; '.join(diffs)}); "
                             f"use another --out or delete {self.out / 'checkpoints'} to start over")
        if len(state["rng"]) != self.world:
            raise ValueError(f"cannot resume from {path}: it was written by {len(state['rng'])} processes, this run "
                             f"has {self.world}")

    def _restore(self, state: dict[str, Any]) -> None:
        from egspo.rl.checkpointing import restore_rng_state

        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.order.load_state_dict(state["prompt_order"])
        restore_rng_state(state["rng"][self.rank], self.generator)
        self.iteration = int(state["iteration"])

    # -- one iteration -----------------------------------------------------------------------------------------------

    def _decode(self, ids: torch.Tensor) -> list[str]:
        from egspo.core.generation_io import decode_completions

        return decode_completions(self.tokenizer, ids, cut_at_eos=self.semantics.reward_text == "first_eos")

    def _rollout(self, prompt_rows: list[int], record_greedy_fill: bool):
        """G completions for each of this process's prompts (rows contiguous per prompt), in chunks of
        ``micro_batch`` trajectories."""
        from egspo.core.model_calls import pad_prompts
        from egspo.core.sampler import generate

        G = self.cfg.num_generations
        lists = [self.prompt_ids[i] for i in prompt_rows for _ in range(G)]
        ids, mask = pad_prompts(lists, self.sampler_config.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        chunk = self.cfg.micro_batch or len(lists)
        # the authors sample in train mode, so LoRA dropout is active during their rollouts (rollout_dropout)
        self.policy.train(self.semantics.rollout_dropout)
        with self.rollout_policy.weights() as model:
            parts = [generate(model, ids[s:s + chunk], self.sampler_config, generator=self.generator,
                              record_greedy_fill=record_greedy_fill, prompt_mask=mask[s:s + chunk])
                     for s in range(0, len(lists), chunk)]
        return _concat_rollouts(parts)

    def reward_fn(self, row_of_trajectory: list[dict[str, Any]]):
        """``reward_fn(completion_ids [R, L], trajectory_rows [R]) -> [R]`` for `egspo.core.advantages`."""

        def reward_fn(completions: torch.Tensor, rows: torch.Tensor) -> list[float]:
            texts = self._decode(completions)
            return self.task.reward_batch(texts, [row_of_trajectory[int(r)] for r in rows.tolist()])

        return reward_fn

    def global_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over all processes."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return t.tolist()

    def optimizer_step(self) -> float:
        """Clip the accumulated gradients at ``max_grad_norm``, step optimizer and scheduler, zero the gradients;
        returns the gradient norm before clipping."""
        norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def sync_context(self, last: bool):
        """Gradient synchronisation across processes only on the ``last`` piece of an optimizer step."""
        return contextlib.nullcontext() if last or self.world == 1 else self.accelerator.no_sync(self.prepared)

    def advantages_known(self, t0: float) -> float:
        """A strategy calls this once its advantages are known: returns the seconds since ``t0`` (the iteration's
        start) and marks the split between stepwise-advantage work and the update for the compute metrics."""
        elapsed = time.perf_counter() - t0
        self._advantages_known = (elapsed, self.forwards.rows)
        return elapsed

    def run_iteration(self, prompt_rows: list[int]) -> IterationResult:
        """Rollout + update on this process's prompts ``prompt_rows`` (dataset indices). Besides the strategy's
        metrics it logs the compute split: ``time_sampling_s`` / ``forwards_sampling`` (generation and scoring),
        ``time_advantage_s`` / ``forwards_advantage`` (selection, baselines, advantages) and
        ``forwards_update`` (old / reference log-probs and optimizer steps); forwards count sequences."""
        cfg = self.cfg
        t0 = time.perf_counter()
        f0 = self.forwards.rows
        self._advantages_known = None
        G = cfg.num_generations
        rows = [self.rows[i] for i in prompt_rows for _ in range(G)]
        rollout = self._rollout(prompt_rows, record_greedy_fill=self.strategy.records_greedy_fill)
        completions = self._decode(rollout.completion)
        r0 = torch.tensor(self.task.reward_batch(completions, rows), dtype=torch.float32)
        if not bool(torch.isfinite(r0).all()):
            raise ValueError(f"task {cfg.task!r} returned non-finite rewards")
        t_sampled, f_sampled = time.perf_counter() - t0, self.forwards.rows
        result = self.strategy.update(rollout, r0, rows, t0)
        # a strategy that never marks its advantages leaves the advantage / update split unknown (None)
        t_adv, f_adv = self._advantages_known or (None, None)
        result.completions = completions
        gathered = self.accelerator.gather(r0.to(self.device)) if self.world > 1 else r0
        entropy = self.global_sum([float(rollout.step_entropy.sum()), rollout.step_entropy.numel()])
        result.metrics.update({
            "reward_mean": float(gathered.float().mean()),
            "reward_std": float(gathered.float().std(unbiased=False)),
            "entropy_mean": entropy[0] / entropy[1],
            "time_sampling_s": t_sampled,
            "time_advantage_s": None if t_adv is None else t_adv - t_sampled,
            "forwards_sampling": f_sampled - f0,
            "forwards_advantage": None if f_adv is None else f_adv - f_sampled,
            "forwards_update": None if f_adv is None else self.forwards.rows - f_adv,
        })
        return result

    # -- the loop ------------------------------------------------------------------------------------------------------

    def _trainer_state(self) -> dict[str, Any]:
        from accelerate.utils import gather_object

        from egspo.rl.checkpointing import capture_rng_state

        rng = gather_object([capture_rng_state(self.generator)]) if self.world > 1 else \
            [capture_rng_state(self.generator)]
        return {
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "prompt_order": self.order.state_dict(),
            "rng": rng,
            "config": dataclasses.asdict(self.cfg),
        }

    def save(self) -> None:
        from egspo.rl.checkpointing import save_checkpoint

        state = self._trainer_state()  # collective: every process takes part
        if self.accelerator.is_main_process:
            save_checkpoint(self.out, self.iteration, self.policy, self.tokenizer, state)
        self.accelerator.wait_for_everyone()

    def train(self) -> Path:
        """Iterate until ``max_steps``; returns the metrics file."""
        from tqdm.auto import tqdm

        from egspo.rl.checkpointing import truncate_metrics
        from egspo.utils.files import write_json_atomic

        cfg, acc = self.cfg, self.accelerator
        metrics_path = self.out / "metrics.jsonl"
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            truncate_metrics(metrics_path, self.iteration)
            write_json_atomic(self.out / "config.json", dataclasses.asdict(cfg))
        acc.wait_for_everyone()
        bar = tqdm(total=cfg.max_steps, initial=self.iteration, disable=not acc.is_main_process,
                   desc=f"rl {cfg.algorithm}", dynamic_ncols=True)
        while self.iteration < cfg.max_steps:
            start = time.perf_counter()
            epoch = self.order.epoch
            batch = self.order.next_batch(cfg.batch_size)
            mine = self.order.shard(batch, self.rank, self.world)
            result = self.run_iteration(mine)
            self.iteration += 1
            elapsed = time.perf_counter() - start
            row = {"step": self.iteration, "epoch": epoch,
                   "lr": self.scheduler.get_last_lr()[0], **result.metrics}
            row["time_update_s"] = elapsed - row["time_rollout_s"]
            if acc.is_main_process:
                with metrics_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
                bar.set_postfix(reward=f"{row['reward_mean']:.3f}", loss=f"{row['loss']:.4f}")
                bar.update(1)
            if self.iteration % cfg.save_every == 0 or self.iteration == cfg.max_steps:
                self.save()
        bar.close()
        return metrics_path


__all__ = ["IterationResult", "RLConfig", "RLTrainer"]
