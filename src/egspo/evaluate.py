"""`egspo eval`: greedy generation (temperature 0, low-confidence remasking, as the d1 family evaluates) with one
checkpoint at one generation length, then grading with the task's grader.

Writes ``OUT.jsonl`` (every input row + ``completion``, ``reward``, ``correct`` and the grader's extra fields) and a
metrics JSON (default ``OUT`` with ``.jsonl`` replaced by ``.metrics.json``): ``accuracy`` (mean of ``correct``),
``n``, ``reward_mean``, every other numeric grader field averaged (e.g. ``cell_accuracy``), the ``--tag`` values and
the generation settings. Both files are written atomically. ``--model`` may be a plain HF model dir or a LoRA
adapter checkpoint (loaded on its base through `egspo.models`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

RESERVED = ("completion", "reward", "correct")


def default_metrics_path(out: str | Path) -> Path:
    out = Path(out)
    name = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(name + ".metrics.json")


def generate_completions(model, tokenizer, prompt_ids: Sequence[Sequence[int]], config, batch_size: int,
                         generator: torch.Generator | None = None) -> list[str]:
    """Completion texts for every prompt, generated ``batch_size`` prompts at a time (each batch left padded to its
    own longest prompt) and decoded up to the first EOS."""
    from egspo.generation_io import decode_completions
    from egspo.sampler import generate

    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    texts: list[str] = []
    for start in range(0, len(prompt_ids), batch_size):
        rollout = generate(model, [list(p) for p in prompt_ids[start:start + batch_size]], config,
                           generator=generator, record_greedy_fill=False)
        texts.extend(decode_completions(tokenizer, rollout.completion))
    return texts


def grade_rows(task, rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> tuple[list[dict], dict[str, Any]]:
    """Rows with ``completion`` / ``reward`` / ``correct`` (+ grader extras) and the summary metrics."""
    grades = task.grade_batch(list(completions), list(rows))
    if len(grades) != len(rows):
        raise ValueError(f"task {task.name!r} returned {len(grades)} grades for {len(rows)} rows")
    out_rows, extras = [], {}
    for row, completion, grade in zip(rows, completions, grades, strict=True):
        if "correct" not in grade or "reward" not in grade:
            raise ValueError(f"task {task.name!r} grader returned {sorted(grade)}; needs 'correct' and 'reward'")
        out = dict(row)
        out.update(grade)
        out["completion"] = completion
        out["correct"] = bool(grade["correct"])
        out["reward"] = float(grade["reward"])
        out_rows.append(out)
        for key, value in grade.items():
            if key not in RESERVED and isinstance(value, (bool, int, float)):
                extras.setdefault(key, []).append(float(value))
    n = len(out_rows)
    metrics: dict[str, Any] = {
        "accuracy": sum(r["correct"] for r in out_rows) / n if n else float("nan"),
        "n": n,
        "reward_mean": sum(r["reward"] for r in out_rows) / n if n else float("nan"),
    }
    for key, values in sorted(extras.items()):
        metrics[key] = sum(values) / len(values)
    return out_rows, metrics


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF model dir, adapter checkpoint dir or hub id")
    parser.add_argument("--task", required=True)
    parser.add_argument("--data", required=True, help="task rows (JSONL)")
    parser.add_argument("--out", required=True, help="output JSONL (rows + completion, reward, correct)")
    parser.add_argument("--metrics", default=None, help="metrics JSON (default: OUT with .metrics.json)")
    parser.add_argument("--gen-length", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--block-length", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generation batch")
    parser.add_argument("--style", default="d1", choices=("tiny", "d1"), help="prompt style of the task")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="copied into the metrics JSON (repeatable), e.g. method=egspo_sa")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    parser.add_argument("--remasking", default="low_confidence", choices=("low_confidence", "random"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--trust-remote-code", default=None, type=lambda s: s.lower() in ("1", "true", "yes"),
                        help="true/false (default: the model family's)")
    parser.add_argument("--seed", type=int, default=0, help="only used by random remasking")


def run(args: argparse.Namespace) -> int:
    from egspo.generation_io import encode_prompts, parse_tags, read_jsonl, write_json_atomic, write_jsonl_atomic
    from egspo.models import load_model, load_tokenizer, mask_token_id
    from egspo.sampler import SamplerConfig
    from egspo.tasks import get_task

    tags = parse_tags(args.tag)
    task = get_task(args.task)
    rows = read_jsonl(args.data)
    if args.limit is not None:
        if args.limit <= 0:
            raise ValueError(f"--limit must be a positive integer, got {args.limit}")
        rows = rows[: args.limit]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code, device=device,
                       is_trainable=False)
    model.eval()
    config = SamplerConfig(gen_length=args.gen_length, steps=args.steps, block_length=args.block_length,
                           mask_token_id=mask_token_id(tokenizer), temperature=0.0, remasking=args.remasking,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    prompts = encode_prompts(tokenizer, [task.prompt(row, args.style, tokenizer) for row in rows])
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed)
    start = time.perf_counter()
    completions = generate_completions(model, tokenizer, prompts, config, args.batch_size, generator)
    elapsed = time.perf_counter() - start
    out_rows, metrics = grade_rows(task, rows, completions)
    metrics.update({
        "task": args.task, "model": str(args.model), "data": str(args.data), "style": args.style,
        "gen_length": args.gen_length, "steps": args.steps, "block_length": args.block_length,
        "temperature": 0.0, "remasking": args.remasking, "generation_s": elapsed, "tags": tags,
    })
    clash = sorted(set(tags) & set(metrics))
    if clash:
        raise ValueError(f"--tag keys {clash} collide with metric names")
    metrics.update(tags)  # also at top level, for tables
    write_jsonl_atomic(args.out, out_rows)
    metrics_path = Path(args.metrics) if args.metrics else default_metrics_path(args.out)
    write_json_atomic(metrics_path, metrics)
    print(f"{args.task} n={metrics['n']} accuracy={metrics['accuracy']:.4f} reward={metrics['reward_mean']:.4f} "
          f"-> {args.out}")
    return 0


__all__ = ["configure", "default_metrics_path", "generate_completions", "grade_rows", "run"]
