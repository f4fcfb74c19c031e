"""`egspo rl`: RL post-training of a masked diffusion LM with diffu-GRPO (d1), EGSPO or EGSPO-SA.

**One iteration** (= one "step" of ``--max-steps``, ``--save-every`` and ``metrics.jsonl``): draw ``batch_size``
prompts (a global count; each of the W data-parallel processes takes a contiguous ``batch_size / W`` share), sample
G = ``num_generations`` completions per prompt with the current policy (eval mode, temperature tau; the G rows of a
prompt are contiguous), decode them (cut at the first EOS, special tokens skipped) and score them, ``r0 = r(S_T)``.
Then, per algorithm:

* ``egspo`` (EGSPO, and EGSPO-SA when ``lam > 0``): choose K steps per trajectory (``--selection``); the state
  baseline ``b_j`` of every chosen step is the reward of the greedy one-step fill ``x_hat(S_j)`` (``--baseline
  greedy``), the mean reward of M continuations (``rollout``), or absent (``none``); returns
  ``R_j = (r0 + lam (r0 - b_j)) / (1 + lam)`` (``R = r0`` when ``lam = 0`` or ``baseline = none``, and then no
  baseline is computed); advantages ``A_j = R_j - mean_G(R_j)`` per selected-step column (``loo``: mean of the other
  G-1). Reference log-probs of all N*K selected states come from one no-grad pass (batched by ``micro_batch``).
  Then K optimizer steps, step k on the k-th selected state of every trajectory:
  ``loss = mean_valid[-min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) + beta KL]`` with
  ``rho = exp(log pi_theta(S_{j+1}|S_j) - log pi_old(S_{j+1}|S_j))``, ``log pi_old`` the step log-prob recorded
  during the rollout, KL to pi_ref (k3 or exact, mean over U_j).
* ``diffu_grpo`` (d1): ``A = r0 - mean_G(r0)``; ``mu`` inner iterations, each with a fresh prompt mask (prompt tokens
  hidden with probability ``p_mask_prompt``, completion fully masked, one forward): old and reference per-token
  log-probs are computed for all ``mu`` masks before the first update; inner iteration i takes one optimizer step on
  d1's per-token clipped loss + ``beta * k3``.

With ``mu = K`` both algorithms take the same number of optimizer steps per rollout batch (a fair comparison).

``grad_accum`` and ``micro_batch`` are memory knobs only: the rows of an optimizer step are processed in
``grad_accum`` pieces (each at most ``micro_batch`` rows), gradients accumulate (synchronised across processes only
on the last piece) and the loss is normalised by the global row count, so the update is the same for any setting.

**Prompt order**: `egspo.rl.prompt_sampler.PromptOrder`: one seeded permutation per epoch, batches are consecutive slices
of their concatenation, so every prompt is used exactly once per epoch; a batch that straddles an epoch boundary
takes the rest of epoch e and the head of epoch e+1.

**Checkpoints** (`egspo.rl.checkpointing`): ``OUT/checkpoints/step_{N}`` every ``save_every`` iterations and at
``max_steps``, all kept. Running the same command again resumes from the last complete checkpoint (model/adapter,
optimizer, scheduler, prompt-order position, every process's RNG states) and truncates ``OUT/metrics.jsonl`` to
its step, so a resumed run reproduces an uninterrupted one.

**Optimizer**: AdamW (betas 0.9 / 0.99, as d1) on the trainable parameters, gradient clipping at ``max_grad_norm``,
constant learning rate after ``warmup_steps`` linear warm-up optimizer steps (d1's ``constant_with_warmup``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ALGORITHMS = ("egspo", "diffu_grpo")
STYLES = ("tiny", "d1")
BASELINES = ("greedy", "rollout", "none")
KL_ESTIMATORS = ("k3", "exact")
#: settings that may change between a run and its resumption (everything else must match the checkpoint).
RESUMABLE_CHANGES = frozenset({"max_steps", "save_every", "micro_batch", "grad_accum", "gradient_checkpointing",
                               "rollout_policy", "on_settings_change"})


@dataclass
class RLConfig:
    """Every setting of `egspo rl`; CLI flags are these names with '-' for '_'. Defaults: the authors' (DESIGN §2)."""

    model: str
    task: str
    train: str
    out: str
    seed: int = 0
    algorithm: str = "egspo"
    style: str = "d1"
    num_generations: int = 8
    batch_size: int = 4  # prompts per iteration, summed over processes
    grad_accum: int = 1
    max_steps: int = 100
    save_every: int = 50
    lr: float = 3e-5
    warmup_steps: int = 0
    weight_decay: float = 0.1
    max_grad_norm: float = 0.2
    k: int = 8
    lam: float = 0.5
    selection: str = "entropy"
    baseline: str = "greedy"
    rollout_m: int = 4
    advantage_baseline: str = "mean"
    logprob_reduction: str = "sum"
    restrict_to_content: bool = False
    eps_low: float = 0.2
    eps_high: float = 0.5
    beta: float = 0.04
    kl_estimator: str = "k3"
    mu: int = 8
    p_mask_prompt: float = 0.15
    temperature: float = 0.9
    remasking: str = "low_confidence"
    gen_length: int = 256
    steps: int = 128
    block_length: int = 32
    micro_batch: int | None = None
    lora_r: int = 0  # 0: full fine-tuning
    lora_alpha: float = 64.0
    lora_dropout: float = 0.05
    lora_targets: str | None = None  # comma-separated module names (or one regex); None: the family's default
    dtype: str = "float32"
    load_in_4bit: bool = False
    trust_remote_code: bool | None = None
    gradient_checkpointing: bool = False
    rollout_policy: str = "auto"  # merged | live | auto (merged with LoRA on CUDA); egspo.rl.rollout_policy
    # checkpoints in --out written with other settings: "error" refuses to resume; "restart" deletes them and the
    # metrics and trains from the start (what the workflow wants when it reruns a job because its settings changed)
    on_settings_change: str = "error"

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> RLConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    def validate(self, world_size: int = 1) -> None:
        """ValueError naming the first bad setting."""
        from egspo.core.sampler import REMASKING_METHODS, step_schedule
        from egspo.core.selection import SELECTION_METHODS

        choices = {
            "algorithm": ALGORITHMS, "style": STYLES, "selection": SELECTION_METHODS, "baseline": BASELINES,
            "advantage_baseline": ("mean", "loo"), "logprob_reduction": ("sum", "mean"),
            "kl_estimator": KL_ESTIMATORS, "remasking": REMASKING_METHODS,
            "dtype": ("float32", "bfloat16", "float16"), "rollout_policy": ("auto", "merged", "live"),
            "on_settings_change": ("error", "restart"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        positive = ("num_generations", "batch_size", "grad_accum", "max_steps", "save_every", "k", "rollout_m", "mu",
                    "gen_length", "steps", "block_length")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 for a group baseline, got {self.num_generations}")
        if self.micro_batch is not None and self.micro_batch <= 0:
            raise ValueError(f"micro_batch must be a positive integer or unset, got {self.micro_batch!r}")
        step_schedule(self.gen_length, self.steps, self.block_length)  # gen_length / steps / block_length
        if self.k > self.steps:
            raise ValueError(f"k={self.k} exceeds the number of denoising steps steps={self.steps}")
        if self.selection == "all" and self.k != self.steps:
            raise ValueError(f"selection='all' needs k == steps, got k={self.k}, steps={self.steps}")
        if self.batch_size % world_size:
            raise ValueError(f"batch_size={self.batch_size} prompts cannot be split evenly over {world_size} processes")
        local_rows = self.batch_size // world_size * self.num_generations
        if local_rows % self.grad_accum:
            raise ValueError(f"batch_size*num_generations/processes = {local_rows} rows per process is not divisible "
                             f"by grad_accum={self.grad_accum}")
        ranges = {
            "lr": self.lr >= 0, "warmup_steps": self.warmup_steps >= 0, "weight_decay": self.weight_decay >= 0,
            "max_grad_norm": self.max_grad_norm > 0, "lam": 0 <= self.lam < math.inf,
            "eps_low": 0 <= self.eps_low < 1, "eps_high": self.eps_high >= 0, "beta": self.beta >= 0,
            "p_mask_prompt": 0 <= self.p_mask_prompt <= 1, "temperature": 0 <= self.temperature < math.inf,
            "lora_r": self.lora_r >= 0, "lora_alpha": self.lora_alpha > 0, "lora_dropout": 0 <= self.lora_dropout < 1,
        }
        for name, ok in ranges.items():
            if not ok:
                raise ValueError(f"{name} is out of range: {getattr(self, name)!r}")
        if self.rollout_policy == "merged" and (not self.lora_r or self.load_in_4bit):
            raise ValueError("rollout_policy='merged' needs LoRA (lora_r > 0) without load_in_4bit")
        if self.load_in_4bit and not self.lora_r:
            raise ValueError("load_in_4bit needs LoRA (lora_r > 0): 4-bit weights cannot be fine-tuned directly")
        if not Path(self.train).is_file():
            raise ValueError(f"train file {self.train!r} does not exist")

    @property
    def uses_baseline(self) -> bool:
        """Whether EGSPO-SA's stepwise term is on (needs a state baseline b_j)."""
        return self.algorithm == "egspo" and self.lam > 0 and self.baseline != "none"

    def lora(self) -> dict[str, Any] | None:
        if not self.lora_r:
            return None
        spec: dict[str, Any] = {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout}
        if self.lora_targets:
            targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
            spec["target_modules"] = targets[0] if len(targets) == 1 and any(c in targets[0] for c in "*\\|(") \
                else targets
        return spec


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


def _pieces(n: int, parts: int, cap: int | None) -> list[torch.Tensor]:
    """Row indices ``0 .. n-1`` split into ``parts`` equal slices, each further cut to at most ``cap`` rows."""
    out = []
    size = n // parts
    for p in range(parts):
        lo, hi = p * size, (p + 1) * size
        step = hi - lo if cap is None else cap
        for s in range(lo, hi, step):
            out.append(torch.arange(s, min(s + step, hi)))
    return out


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


@dataclass
class IterationResult:
    """What one iteration computed (exposed for tests and metrics); tensors are this process's rows."""

    rewards: torch.Tensor  # [N] r0
    advantages: torch.Tensor  # [N, K] (egspo) or [N] (diffu_grpo)
    returns: torch.Tensor | None = None  # [N, K] R_j (egspo)
    baseline_rewards: torch.Tensor | None = None  # [N, K] b_j (egspo with a stepwise term)
    selection: Any = None  # StepSelection (egspo)
    rollout: Any = None  # the Rollout
    completions: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


class RLTrainer:
    """Build with an :class:`RLConfig`; :meth:`train` runs (or resumes) to ``max_steps``."""

    def __init__(self, config: RLConfig, accelerator=None) -> None:
        from accelerate import Accelerator

        from egspo.utils.files import read_jsonl
        from egspo.core.generation_io import encode_prompts
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
        self.rows = read_jsonl(config.train)
        texts = [self.task.prompt(row, config.style, self.tokenizer) for row in self.rows]
        self.prompt_ids = encode_prompts(self.tokenizer, texts)
        self.order = PromptOrder(len(self.rows), config.seed)
        self.sampler_config = SamplerConfig(
            gen_length=config.gen_length, steps=config.steps, block_length=config.block_length,
            mask_token_id=mask_token_id(self.tokenizer), temperature=config.temperature,
            remasking=config.remasking, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        self.device = acc.device
        self.generator = _unit_generator(self.device, config.seed * 1_000_003 + self.rank)
        self.iteration = 0
        self._resume_state: dict[str, Any] | None = None
        self._build_model()

    # -- set-up ----------------------------------------------------------------------------------------------------

    def _load(self, path: str, **extra):
        from egspo.models.loading import load_model

        cfg = self.cfg
        device = self.device if not cfg.load_in_4bit else None
        return load_model(path, dtype=cfg.dtype, quantize_4bit=cfg.load_in_4bit,
                          trust_remote_code=cfg.trust_remote_code, device=device, **extra)

    def _build_model(self) -> None:
        from egspo.rl.checkpointing import latest_checkpoint, load_trainer_state
        from egspo.models.reference import ReferencePolicy, frozen_copy

        cfg, acc = self.cfg, self.accelerator
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)  # LoRA initialisation (identical on every process)
        latest = latest_checkpoint(self.out)
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

        return decode_completions(self.tokenizer, ids)

    def _rollout(self, prompt_rows: list[int], record_greedy_fill: bool):
        """G completions for each of this process's prompts (rows contiguous per prompt), in chunks of
        ``micro_batch`` trajectories."""
        from egspo.core.sampler import generate, pad_prompts

        G = self.cfg.num_generations
        lists = [self.prompt_ids[i] for i in prompt_rows for _ in range(G)]
        ids, mask = pad_prompts(lists, self.sampler_config.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        chunk = self.cfg.micro_batch or len(lists)
        self.policy.eval()
        with self.rollout_policy.weights() as model:
            parts = [generate(model, ids[s:s + chunk], self.sampler_config, generator=self.generator,
                              record_greedy_fill=record_greedy_fill, prompt_mask=mask[s:s + chunk])
                     for s in range(0, len(lists), chunk)]
        return _concat_rollouts(parts)

    def _reward_fn(self, row_of_trajectory: list[dict[str, Any]]):
        """``reward_fn(completion_ids [R, L], trajectory_rows [R]) -> [R]`` for `egspo.core.advantages`."""

        def reward_fn(completions: torch.Tensor, rows: torch.Tensor) -> list[float]:
            texts = self._decode(completions)
            return self.task.reward_batch(texts, [row_of_trajectory[int(r)] for r in rows.tolist()])

        return reward_fn

    def _global_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return t.tolist()

    def _optimizer_step(self) -> float:
        norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def _sync_context(self, last: bool):
        return contextlib.nullcontext() if last or self.world == 1 else self.accelerator.no_sync(self.prepared)

    def run_iteration(self, prompt_rows: list[int]) -> IterationResult:
        """Rollout + update on this process's prompts ``prompt_rows`` (dataset indices)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        G = cfg.num_generations
        rows = [self.rows[i] for i in prompt_rows for _ in range(G)]
        rollout = self._rollout(prompt_rows, record_greedy_fill=cfg.uses_baseline and cfg.baseline == "greedy")
        completions = self._decode(rollout.completion)
        r0 = torch.tensor(self.task.reward_batch(completions, rows), dtype=torch.float32)
        if not bool(torch.isfinite(r0).all()):
            raise ValueError(f"task {cfg.task!r} returned non-finite rewards")
        if cfg.algorithm == "egspo":
            result = self._egspo(rollout, r0, rows, t0)
        else:
            result = self._diffu_grpo(rollout, r0, t0)
        result.completions = completions
        gathered = self.accelerator.gather(r0.to(self.device)) if self.world > 1 else r0
        entropy = self._global_sum([float(rollout.step_entropy.sum()), rollout.step_entropy.numel()])
        result.metrics.update({
            "reward_mean": float(gathered.float().mean()),
            "reward_std": float(gathered.float().std(unbiased=False)),
            "entropy_mean": entropy[0] / entropy[1],
        })
        return result

    def _egspo(self, rollout, r0: torch.Tensor, rows, t0: float) -> IterationResult:
        from egspo.core.advantages import greedy_baseline_rewards, group_centered, multistep_values, stepwise_returns
        from egspo.core.objective import clipped_surrogate, kl_exact, kl_k3, step_batch, step_logprob, token_logprobs
        from egspo.core.selection import last_content_step, select_steps

        cfg = self.cfg
        N, K, G = len(rollout), cfg.k, cfg.num_generations
        last = last_content_step(rollout) if cfg.restrict_to_content else None
        sel = select_steps(rollout.step_entropy, K, cfg.selection, generator=self.generator, last_step=last)
        steps, valid = sel.steps, sel.valid
        baseline = None
        if cfg.uses_baseline:
            reward_fn = self._reward_fn(rows)
            if cfg.baseline == "greedy":
                baseline = greedy_baseline_rewards(rollout, steps, reward_fn).float()
            else:
                self.policy.eval()
                baseline = multistep_values(self.policy, rollout, steps, reward_fn, cfg.rollout_m,
                                            generator=self.generator, micro_batch=cfg.micro_batch).float()
            returns = stepwise_returns(r0, baseline, cfg.lam)
        else:
            returns = r0.unsqueeze(1).expand(N, K).clone()
        valid_cpu = valid.cpu()
        advantages = group_centered(returns, G, cfg.advantage_baseline, valid=valid_cpu)
        t_rollout = time.perf_counter() - t0

        batch = step_batch(rollout, steps)  # row n*K + k
        if self.rollout_policy.recompute_old_logprobs:
            # The rollout sampled from merged weights (rounded differently from the trained LoRA forward): pi_old of
            # the ratio is the trained policy before the update, re-scored on the selected states in one pass.
            with torch.no_grad():
                self.policy.eval()
                batch.old_logprobs = token_logprobs(self.policy, batch, cfg.micro_batch)
        exact = cfg.kl_estimator == "exact"
        ref_lp = ref_logits = ref_offsets = None
        if cfg.beta > 0:
            with torch.no_grad(), self.reference.context() as ref_model:
                ref_model.eval()
                out = token_logprobs(ref_model, batch, cfg.micro_batch, return_logits_at_targets=exact)
            ref_lp, ref_logits = (out if exact else (out, None))
            if exact:
                counts = batch.target_mask.sum(1)
                ref_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
        A = advantages.to(self.device)
        valid_d = valid.to(self.device)
        self.policy.train()
        sums = {"surrogate": 0.0, "kl": 0.0, "clipped": 0.0, "valid": 0.0}
        grad_norms = []
        for k in range(K):
            idx = torch.arange(N, device=self.device) * K + k
            n_valid = self._global_sum([float(valid_d[:, k].sum())])[0]
            if n_valid == 0:
                continue
            denom = n_valid / self.world
            pieces = _pieces(N, cfg.grad_accum, cfg.micro_batch)
            for p, piece in enumerate(pieces):
                piece = piece.to(self.device)
                rows_m = idx[piece]
                sub = batch.rows(rows_m)
                with self._sync_context(p == len(pieces) - 1):
                    out = token_logprobs(self.train_model, sub, None, return_logits_at_targets=exact)
                    tok_lp, logits = out if exact else (out, None)
                    logp = step_logprob(tok_lp, sub.target_mask, cfg.logprob_reduction)
                    old = step_logprob(sub.old_logprobs, sub.target_mask, cfg.logprob_reduction)
                    a = A[piece, k]
                    surrogate = clipped_surrogate(logp, old, a, cfg.eps_low, cfg.eps_high)
                    per_row = surrogate
                    kl = None
                    if cfg.beta > 0:
                        if exact:
                            ref_packed = torch.cat([ref_logits[ref_offsets[r]:ref_offsets[r + 1]]
                                                    for r in rows_m.tolist()])
                            kl = kl_exact(logits, ref_packed, sub.target_mask)
                        else:
                            kl = kl_k3(tok_lp, ref_lp[rows_m], sub.target_mask)
                        per_row = per_row + cfg.beta * kl
                    w = valid_d[piece, k].to(per_row.dtype)
                    loss = (per_row * w).sum() / denom
                    self.accelerator.backward(loss)
                with torch.no_grad():
                    rho = torch.exp(logp - old)
                    clipped = ((rho < 1 - cfg.eps_low) & (a < 0)) | ((rho > 1 + cfg.eps_high) & (a > 0))
                    sums["surrogate"] += float((surrogate * w).sum())
                    sums["kl"] += float((kl * w).sum()) if kl is not None else 0.0
                    sums["clipped"] += float((clipped.to(w.dtype) * w).sum())
                    sums["valid"] += float(w.sum())
            grad_norms.append(self._optimizer_step())
        totals = dict(zip(sums, self._global_sum(list(sums.values())), strict=True))
        nv = max(totals["valid"], 1.0)
        vsum = self._global_sum([float((advantages.abs() * valid_cpu).sum()), float(valid_cpu.sum()),
                                 float((baseline * valid_cpu).sum()) if baseline is not None else 0.0])
        metrics = {
            "loss": (totals["surrogate"] + cfg.beta * totals["kl"]) / nv,
            "kl": totals["kl"] / nv if cfg.beta > 0 else None,
            "clip_frac": totals["clipped"] / nv,
            "grad_norm": float(np.mean(grad_norms)) if grad_norms else None,
            "advantage_abs_mean": vsum[0] / max(vsum[1], 1.0),
            "onestep_reward_mean": vsum[2] / max(vsum[1], 1.0) if baseline is not None else None,
            "time_rollout_s": t_rollout,
        }
        return IterationResult(rewards=r0, advantages=advantages, returns=returns, baseline_rewards=baseline,
                               selection=sel, rollout=rollout, metrics=metrics)

    def _diffu_grpo(self, rollout, r0: torch.Tensor, t0: float) -> IterationResult:
        from egspo.core.advantages import group_centered
        from egspo.core.objective import d1_grpo_loss, d1_sequence_logprobs, eos_completion_mask

        cfg = self.cfg
        N = len(rollout)
        advantages = group_centered(r0, cfg.num_generations, cfg.advantage_baseline)
        t_rollout = time.perf_counter() - t0
        mask_id = self.sampler_config.mask_token_id
        cmask = eos_completion_mask(rollout.completion, self.sampler_config.eos_token_id)
        scratch = _unit_generator(self.device, 0)  # prompts are pre-masked here, so the p=0 draw is irrelevant
        chunk = cfg.micro_batch or N

        def seq_lp(model, prompts, rows):
            return d1_sequence_logprobs(model, prompts[rows], rollout.prompt_mask[rows], rollout.completion[rows],
                                        mask_id, 0.0, scratch)

        # One prompt mask per inner iteration: real prompt tokens hidden with probability p_mask_prompt.
        noisy = []
        for _ in range(cfg.mu):
            draw = torch.rand(rollout.prompt_ids.shape, generator=self.generator, device=self.device)
            hide = (draw < cfg.p_mask_prompt) & rollout.prompt_mask
            noisy.append(torch.where(hide, mask_id, rollout.prompt_ids))
        all_rows = [torch.arange(s, min(s + chunk, N), device=self.device) for s in range(0, N, chunk)]
        with torch.no_grad():
            self.policy.eval()
            old = [torch.cat([seq_lp(self.policy, x, r) for r in all_rows]) for x in noisy]
            ref = None
            if cfg.beta > 0:
                with self.reference.context() as ref_model:
                    ref_model.eval()
                    ref = [torch.cat([seq_lp(ref_model, x, r) for r in all_rows]) for x in noisy]
        A = advantages.to(self.device)
        self.policy.train()
        sums = {"loss": 0.0, "kl": 0.0, "clipped": 0.0, "tokens": 0.0}
        grad_norms = []
        for i in range(cfg.mu):
            pieces = _pieces(N, cfg.grad_accum, cfg.micro_batch)
            for p, piece in enumerate(pieces):
                piece = piece.to(self.device)
                with self._sync_context(p == len(pieces) - 1):
                    lp = seq_lp(self.train_model, noisy[i], piece)
                    ref_i = ref[i][piece] if ref is not None else None
                    loss = d1_grpo_loss(lp, old[i][piece], A[piece], cmask[piece], ref_i, beta=cfg.beta,
                                        eps_low=cfg.eps_low, eps_high=cfg.eps_high)
                    self.accelerator.backward(loss * (len(piece) / N))
                with torch.no_grad():
                    m = cmask[piece].to(lp.dtype)
                    rho = torch.exp(lp - old[i][piece])
                    a = A[piece].unsqueeze(1)
                    clipped = ((rho < 1 - cfg.eps_low) & (a < 0)) | ((rho > 1 + cfg.eps_high) & (a > 0))
                    sums["loss"] += float(loss) * len(piece)
                    sums["clipped"] += float((clipped.to(m.dtype) * m).sum())
                    sums["tokens"] += float(m.sum())
                    if ref_i is not None:
                        d = ref_i - lp
                        per_row = ((torch.exp(d) - d - 1) * m).sum(1) / m.sum(1)
                        sums["kl"] += float(per_row.sum())
            grad_norms.append(self._optimizer_step())
        totals = dict(zip(sums, self._global_sum(list(sums.values())), strict=True))
        rows_total = N * self.world * cfg.mu
        adv = self._global_sum([float(advantages.abs().sum()), float(advantages.numel())])
        metrics = {
            "loss": totals["loss"] / rows_total,
            "kl": totals["kl"] / rows_total if cfg.beta > 0 else None,
            "clip_frac": totals["clipped"] / max(totals["tokens"], 1.0),
            "grad_norm": float(np.mean(grad_norms)),
            "advantage_abs_mean": adv[0] / adv[1],
            "onestep_reward_mean": None,
            "time_rollout_s": t_rollout,
        }
        return IterationResult(rewards=r0, advantages=advantages, rollout=rollout, metrics=metrics)

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

        cfg, acc = self.cfg, self.accelerator
        metrics_path = self.out / "metrics.jsonl"
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            truncate_metrics(metrics_path, self.iteration)
            (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
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


# ---- CLI -------------------------------------------------------------------------------------------------------------


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none", "null", "0") else int(text)


def _optional_bool(text: str) -> bool | None:
    return None if text.strip().lower() in ("", "none", "null", "auto") else _bool(text)


_HELP = {
    "model": "initial policy: HF model dir or hub id (the SFT output for the tiny preset)",
    "task": "task name (egspo.tasks)", "train": "training prompts, JSONL rows of the task",
    "out": "run directory: checkpoints/, metrics.jsonl, config.json",
    "batch_size": "prompts per iteration (all processes together)",
    "grad_accum": "pieces each optimizer step's rows are processed in (memory only; same update)",
    "max_steps": "iterations (rollout batch + K or mu optimizer steps each)",
    "save_every": "checkpoint every N iterations (and at max_steps)",
    "k": "K steps selected per trajectory (egspo)", "lam": "lambda of the stepwise return (0 = EGSPO)",
    "baseline": "state baseline b_j: greedy one-step fill, M-continuation rollout value, or none",
    "rollout_m": "M continuations per state for --baseline rollout",
    "advantage_baseline": "group baseline: mean of the G rows, or leave-one-out",
    "restrict_to_content": "select only steps up to the last one that committed a non-EOS token",
    "mu": "inner iterations per rollout batch (diffu_grpo)", "micro_batch": "rows per forward pass (unset: all)",
    "lora_r": "LoRA rank (0 = full fine-tuning)", "lora_targets": "comma-separated LoRA target modules",
    "trust_remote_code": "true/false (default: the model family's)",
    "rollout_policy": "rollout weights: merged (separate W0 + s*B@A copy, old log-probs re-scored live), live, or "
                      "auto (merged with LoRA on CUDA, else live)",
}


def configure(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(RLConfig):
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"help": _HELP.get(f.name)}
        if f.default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
            if kwargs["help"] is None:
                kwargs["help"] = f"default {f.default!r}"
        if f.name == "trust_remote_code":
            kwargs.update(type=_optional_bool, nargs="?", const=True)
        elif f.type in ("bool", bool):
            kwargs.update(type=_bool, nargs="?", const=True)
        elif f.name == "micro_batch":
            kwargs["type"] = _optional_int
        elif f.name in ("algorithm", "style", "baseline", "kl_estimator", "advantage_baseline", "logprob_reduction",
                        "selection", "remasking", "dtype"):
            kwargs["type"] = str
        elif f.default is not dataclasses.MISSING and f.default is not None and f.type != "str | None":
            kwargs["type"] = type(f.default)
        else:
            kwargs["type"] = str
        parser.add_argument(flag, dest=f.name, **kwargs)


def run(args: argparse.Namespace) -> int:
    config = RLConfig.from_namespace(args)
    RLTrainer(config).train()
    return 0


__all__ = ["IterationResult", "RLConfig", "RLTrainer", "configure", "run"]
