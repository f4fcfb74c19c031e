"""`egspo trace`: the data behind the paper's Figure 2 for real trajectories of a model.

For N prompts (the first N rows of ``--data``) one trajectory each is sampled at temperature tau; per trajectory the
output records, with steps indexed forward (``j = 0 .. T-1``, step j maps ``S_j`` to ``S_{j+1}``):

* ``step_entropy[j]``: ``H_j``, the mean entropy of ``p_theta(. | S_j)`` over the positions committed at step j,
* ``selected``: the K steps with the largest ``H_j`` (what EGSPO re-scores), ascending,
* ``onestep_reward[j]``: ``r(x_hat(S_j))``, the task reward of the greedy one-step fill of ``S_j`` (every masked
  position filled with its argmax, committed tokens kept), at every step j,
* ``final_reward``: ``r(S_T)``, so ``final_reward - onestep_reward[j]`` is EGSPO-SA's stepwise advantage at step j.

Output JSON: ``{task, k, gen_length, steps, block_length, temperature, seed, model, samples: [{prompt, completion,
step_entropy: [T], selected: [K], onestep_reward: [T], final_reward}]}``, written atomically.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch


def trace_samples(model, tokenizer, task, rows, prompts_text, config, k: int, generator=None,
                  batch_size: int | None = None) -> list[dict[str, Any]]:
    """One sampled trajectory per row and its Figure-2 record (see the module docstring)."""
    from egspo.core.generation_io import decode_completions, encode_prompts
    from egspo.core.sampler import generate
    from egspo.core.selection import select_steps

    if not 0 < k <= config.steps:
        raise ValueError(f"k must be in [1, steps={config.steps}], got {k}")
    ids = encode_prompts(tokenizer, prompts_text)
    size = batch_size or len(ids)
    samples: list[dict[str, Any]] = []
    for start in range(0, len(ids), size):
        chunk_rows = rows[start:start + size]
        rollout = generate(model, ids[start:start + size], config, generator=generator, record_greedy_fill=True)
        n, T, L = rollout.greedy_fill.shape
        completions = decode_completions(tokenizer, rollout.completion)
        final = task.reward_batch(completions, list(chunk_rows))
        fills = decode_completions(tokenizer, rollout.greedy_fill.reshape(n * T, L))
        onestep = task.reward_batch(fills, [row for row in chunk_rows for _ in range(T)])
        selected = select_steps(rollout.step_entropy, k, "entropy").steps
        for i in range(n):
            samples.append({
                "prompt": prompts_text[start + i],
                "completion": completions[i],
                "step_entropy": [float(x) for x in rollout.step_entropy[i].tolist()],
                "selected": [int(x) for x in selected[i].tolist()],
                "onestep_reward": [float(x) for x in onestep[i * T:(i + 1) * T]],
                "final_reward": float(final[i]),
            })
    return samples


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF model dir, adapter checkpoint dir or hub id")
    parser.add_argument("--task", required=True)
    parser.add_argument("--data", required=True, help="task rows (JSONL); the first N are traced")
    parser.add_argument("--n", type=int, default=8, help="number of trajectories (one per row)")
    parser.add_argument("--out", required=True, help="output JSON")
    parser.add_argument("--k", type=int, default=8, help="steps selected by entropy (EGSPO's K)")
    parser.add_argument("--gen-length", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--block-length", type=int, required=True)
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--remasking", default="low_confidence", choices=("low_confidence", "random"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", default="d1", choices=("tiny", "d1"))
    parser.add_argument("--batch-size", type=int, default=None, help="trajectories per generation batch")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default=None)
    parser.add_argument("--trust-remote-code", default=None, type=lambda s: s.lower() in ("1", "true", "yes"))


def run(args: argparse.Namespace) -> int:
    from egspo.tasks.sources import read_task_rows
    from egspo.utils.files import write_json_atomic
    from egspo.models.loading import load_model, load_tokenizer, mask_token_id
    from egspo.core.sampler import SamplerConfig
    from egspo.tasks import get_task

    task = get_task(args.task)
    rows = read_task_rows(args.data, task)
    if not 0 < args.n <= len(rows):
        raise ValueError(f"--n must be in [1, {len(rows)}] (rows in {args.data}), got {args.n}")
    if args.batch_size is not None and args.batch_size <= 0:
        raise ValueError(f"--batch-size must be a positive integer, got {args.batch_size}")
    rows = rows[: args.n]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code, device=device,
                       is_trainable=False)
    model.eval()
    config = SamplerConfig(gen_length=args.gen_length, steps=args.steps, block_length=args.block_length,
                           mask_token_id=mask_token_id(tokenizer), temperature=args.temperature,
                           remasking=args.remasking, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed)
    prompts = [task.prompt(row, args.style, tokenizer) for row in rows]
    samples = trace_samples(model, tokenizer, task, rows, prompts, config, args.k, generator, args.batch_size)
    write_json_atomic(args.out, {
        "task": args.task, "k": args.k, "gen_length": args.gen_length, "steps": args.steps,
        "block_length": args.block_length, "temperature": args.temperature, "remasking": args.remasking,
        "seed": args.seed, "model": str(args.model), "samples": samples,
    })
    print(f"traced {len(samples)} trajectories of {args.task} -> {args.out}")
    return 0


__all__ = ["configure", "run", "trace_samples"]
