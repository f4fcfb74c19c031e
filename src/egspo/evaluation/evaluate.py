"""`egspo eval`: greedy generation (temperature 0, low-confidence remasking, as the d1 family evaluates) of a grid
of checkpoints x data splits x generation lengths in one process, then grading with the task's grader.

Grid form (one run's checkpoints; the workflow nests every seed of a method in one job, see below)::

    egspo eval --task sudoku --model step_40=CKPT40 --model step_80=CKPT80 --data validation=V.jsonl \
        --data test=T.jsonl --gen-length 24 32 --steps 12 16 --block-length 8 --out-dir DIR --tag method=egspo_sa

writes ``DIR/{NAME}/len{L}/{SPLIT}.jsonl`` and ``DIR/{NAME}/len{L}/{SPLIT}.metrics.json`` for every model NAME, split
SPLIT and length L (``--steps`` gives T for each ``--gen-length`` L, in order). NAME defaults to the model directory's
base name and SPLIT to the data file's name without ``.jsonl``; each metrics JSON is tagged ``ckpt=NAME`` and
``split=SPLIT`` besides the ``--tag`` values. NAME may be a relative path, so one process evaluates several runs (the
workflow: every seed of a method, ``--model seed1/step_40=DIR`` with ``--model-tag seed1/step_40:seed=1``); ``ckpt``
is then its last part. Each model is loaded once and each split tokenized once per distinct tokenizer. Single-file
form: one ``--model``, one ``--data`` and one length with ``--out FILE`` (metrics at ``--metrics``, default ``FILE``
with ``.jsonl`` replaced by ``.metrics.json``; no automatic tags).

The JSONL holds every input row + ``completion``, ``reward``, ``correct`` and the grader's extra fields; the metrics
JSON ``accuracy`` (mean of ``correct``), ``n``, ``reward_mean``, every other numeric grader field averaged (e.g.
``cell_accuracy``), the generation settings, ``tags`` and each tag also at top level. Files are written atomically. A
``--model`` may be a plain HF model dir or a LoRA adapter checkpoint (loaded on its base through
`egspo.models.loading`). The sampling generator is reseeded with ``--seed`` for every (model, split, length), so each file
equals a single-file run of the same triple.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from egspo.core.generation_io import parse_tags

# metric names every metrics JSON has (grader fields add more); a --tag may not reuse them
FIXED_METRICS = ("accuracy", "n", "reward_mean", "task", "model", "data", "style", "gen_length", "steps",
                 "block_length", "temperature", "remasking", "generation_s", "tags")


def default_metrics_path(out: str | Path) -> Path:
    out = Path(out)
    name = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(name + ".metrics.json")


def generate_completions(model, tokenizer, prompt_ids: Sequence[Sequence[int]], config, batch_size: int,
                         generator: torch.Generator | None = None) -> list[str]:
    """Completion texts for every prompt, generated ``batch_size`` prompts at a time (each batch left padded to its
    own longest prompt) and decoded up to the first EOS."""
    from egspo.core.generation_io import decode_completions
    from egspo.core.sampler import generate

    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    texts: list[str] = []
    for start in range(0, len(prompt_ids), batch_size):
        rollout = generate(model, [list(p) for p in prompt_ids[start:start + batch_size]], config,
                           generator=generator, record_greedy_fill=False)
        texts.extend(decode_completions(tokenizer, rollout.completion))
    return texts


def grade_rows(task, rows: Sequence[dict[str, Any]], completions: Sequence[str]) -> tuple[list[dict], dict[str, Any]]:
    """Rows with ``completion`` / ``reward`` / ``correct`` (+ grader extras) and the summary metrics, both computed
    through the task's Hugging Face ``evaluate`` metric (:mod:`egspo.evaluation.metric`): the summary a user gets
    from ``evaluate.load`` on the same completions."""
    from egspo.evaluation.metric import grade_with_metric

    grades, metrics = grade_with_metric(task, rows, completions)
    out_rows = [{**row, **grade, "completion": completion} for row, completion, grade in zip(rows, completions, grades,
                                                                                           strict=True)]
    return out_rows, metrics


def named_value(item: str, flag: str, default_name, nested: bool = False) -> tuple[str, str]:
    """``"NAME=VALUE"`` -> (NAME, VALUE); a bare ``"VALUE"`` -> (default_name(VALUE), VALUE). ``nested``: NAME may
    be a relative path of several names (``seed0/step_40``)."""
    name, sep, value = item.partition("=")
    if not sep:
        name, value = default_name(item), item
    if not name or not value:
        raise ValueError(f"{flag} expects [NAME=]PATH, got {item!r}")
    parts = name.split("/") if nested else [name]
    if any(not part or part in (".", "..") or "/" in part for part in parts):
        raise ValueError(f"{flag} name {name!r} (from {item!r}) cannot be used as a directory / file name")
    return name, value


def model_tags(items: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, str]]:
    """``--model-tag NAME:KEY=VALUE`` items -> {NAME: {KEY: VALUE}}; NAME must be a ``--model`` name."""
    tags: dict[str, dict[str, str]] = {}
    for item in items:
        name, sep, tag = item.rpartition(":")
        if not sep or name not in names:
            raise ValueError(f"--model-tag expects NAME:KEY=VALUE with NAME one of the --model names {list(names)}, "
                             f"got {item!r}")
        tags.setdefault(name, {}).update(parse_tags([tag]))
    return tags


def _model_name(path: str) -> str:
    return Path(path.rstrip("/")).name


def _split_name(path: str) -> str:
    name = Path(path).name
    return name[: -len(".jsonl")] if name.endswith(".jsonl") else name


def _unique(pairs: list[tuple[str, str]], flag: str) -> list[tuple[str, str]]:
    names = [n for n, _ in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{flag}: names {dupes} given more than once (use NAME=PATH)")
    return pairs


@dataclass(frozen=True)
class Job:
    """One evaluation of the grid: a model, a data split and a (gen_length, steps) pair, with its two outputs."""

    model_name: str
    split: str
    gen_length: int
    steps: int
    out: Path
    metrics: Path
    tags: dict[str, str]


def plan(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[Job]]:
    """(models, data files, jobs) of the command line; every bad combination is a ValueError naming the flag."""
    models = _unique([named_value(m, "--model", _model_name, nested=True) for m in args.model], "--model")
    data = _unique([named_value(d, "--data", _split_name) for d in args.data], "--data")
    if len(args.gen_length) != len(args.steps):
        raise ValueError(f"--steps needs one value per --gen-length: got {len(args.steps)} steps {args.steps} for "
                         f"{len(args.gen_length)} lengths {args.gen_length}")
    if len(set(args.gen_length)) != len(args.gen_length):
        raise ValueError(f"--gen-length has repeated values: {args.gen_length}")
    for flag, values in (("--gen-length", args.gen_length), ("--steps", args.steps),
                         ("--block-length", [args.block_length])):
        bad = [v for v in values if v <= 0]
        if bad:
            raise ValueError(f"{flag} must be positive integers, got {bad}")
    tags = parse_tags(args.tag)
    per_model = model_tags(args.model_tag, [name for name, _ in models])
    tag_keys = set(tags) | {k for t in per_model.values() for k in t}
    clash = sorted(tag_keys & set(FIXED_METRICS))
    if clash:
        raise ValueError(f"--tag / --model-tag keys {clash} collide with metric names")
    lengths = list(zip(args.gen_length, args.steps))
    if args.out is not None:
        if len(models) != 1 or len(data) != 1 or len(lengths) != 1:
            raise ValueError(f"--out writes one file: it needs exactly one --model, --data and --gen-length (got "
                             f"{len(models)}, {len(data)}, {len(lengths)}); use --out-dir for a grid")
        out = Path(args.out)
        metrics = Path(args.metrics) if args.metrics else default_metrics_path(out)
        return models, data, [Job(models[0][0], data[0][0], *lengths[0], out, metrics,
                                  {**tags, **per_model.get(models[0][0], {})})]
    if args.metrics is not None:
        raise ValueError("--metrics goes with --out; with --out-dir the metrics files sit beside the JSONL files")
    clash = sorted({"ckpt", "split"} & tag_keys)
    if clash:
        raise ValueError(f"--tag / --model-tag {clash}: with --out-dir these tags come from the --model / --data "
                         f"names")
    jobs = []
    for model_name, _ in models:
        for split, _ in data:
            for length, steps in lengths:
                folder = Path(args.out_dir) / model_name / f"len{length}"
                jobs.append(Job(model_name, split, length, steps, folder / f"{split}.jsonl",
                                folder / f"{split}.metrics.json",
                                {**tags, **per_model.get(model_name, {}), "ckpt": model_name.split("/")[-1],
                                 "split": split}))
    return models, data, jobs


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of what turns prompt text into ids: class, vocabulary, chat template and special tokens."""
    parts = {"class": type(tokenizer).__name__, "vocab": sorted(tokenizer.get_vocab().items()),
             "chat_template": getattr(tokenizer, "chat_template", None),
             "special": sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items())}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", required=True, action="append", metavar="[NAME=]DIR",
                        help="HF model dir, adapter checkpoint dir or hub id (repeatable; NAME names its output "
                             "folder, default the directory's base name; it may be a relative path such as "
                             "seed0/step_40, and its last part is the ckpt tag)")
    parser.add_argument("--model-tag", action="append", default=[], metavar="NAME:KEY=VALUE",
                        help="copied into the metrics JSONs of model NAME only (repeatable), e.g. seed0/step_40:seed=0")
    parser.add_argument("--data", required=True, action="append", metavar="[SPLIT=]FILE",
                        help="task rows, JSONL (repeatable; SPLIT defaults to the file name without .jsonl)")
    parser.add_argument("--gen-length", type=int, nargs="+", required=True, metavar="L", help="generation lengths")
    parser.add_argument("--steps", type=int, nargs="+", required=True, metavar="T",
                        help="denoising steps, one per --gen-length, in the same order")
    parser.add_argument("--block-length", type=int, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out-dir", default=None, help="writes OUT_DIR/{NAME}/len{L}/{SPLIT}.jsonl + .metrics.json")
    where.add_argument("--out", default=None, help="single-file form: the output JSONL (one model, data, length)")
    parser.add_argument("--metrics", default=None, help="with --out: metrics JSON (default: OUT with .metrics.json)")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generation batch")
    parser.add_argument("--style", default="d1", choices=("tiny", "d1"), help="prompt style of the task")
    parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                        help="copied into every metrics JSON (repeatable), e.g. method=egspo_sa")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows of each split")
    parser.add_argument("--remasking", default="low_confidence", choices=("low_confidence", "random"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--trust-remote-code", default=None, type=lambda s: s.lower() in ("1", "true", "yes"),
                        help="true/false (default: the model family's)")
    parser.add_argument("--seed", type=int, default=0, help="only used by random remasking")


def run(args: argparse.Namespace) -> int:
    from egspo.tasks.sources import read_task_rows
    from egspo.utils.files import write_json_atomic, write_jsonl_atomic
    from egspo.core.generation_io import encode_prompts
    from egspo.models.loading import load_model, load_tokenizer, mask_token_id
    from egspo.core.sampler import SamplerConfig
    from egspo.tasks import get_task

    models, data, jobs = plan(args)
    task = get_task(args.task)
    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be a positive integer, got {args.limit}")
    rows = {split: read_task_rows(path, task)[: args.limit] for split, path in data}
    data_path = dict(data)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    prompt_cache: dict[tuple[str, str], list[list[int]]] = {}  # (tokenizer fingerprint, split) -> prompt ids
    for model_name, model_path in models:
        tokenizer = load_tokenizer(model_path, trust_remote_code=args.trust_remote_code)
        fingerprint = tokenizer_fingerprint(tokenizer)
        model = load_model(model_path, dtype=args.dtype, trust_remote_code=args.trust_remote_code, device=device,
                           is_trainable=False)
        model.eval()
        for job in (j for j in jobs if j.model_name == model_name):
            key = (fingerprint, job.split)
            if key not in prompt_cache:
                texts = [task.prompt(row, args.style, tokenizer) for row in rows[job.split]]
                prompt_cache[key] = encode_prompts(tokenizer, texts)
            config = SamplerConfig(gen_length=job.gen_length, steps=job.steps, block_length=args.block_length,
                                   mask_token_id=mask_token_id(tokenizer), temperature=0.0,
                                   remasking=args.remasking, pad_token_id=tokenizer.pad_token_id,
                                   eos_token_id=tokenizer.eos_token_id)
            generator = torch.Generator(device=device)
            generator.manual_seed(args.seed)
            start = time.perf_counter()
            completions = generate_completions(model, tokenizer, prompt_cache[key], config, args.batch_size,
                                               generator)
            elapsed = time.perf_counter() - start
            out_rows, metrics = grade_rows(task, rows[job.split], completions)
            metrics.update({
                "task": args.task, "model": str(model_path), "data": str(data_path[job.split]),
                "style": args.style, "gen_length": job.gen_length, "steps": job.steps,
                "block_length": args.block_length, "temperature": 0.0, "remasking": args.remasking,
                "generation_s": elapsed, "tags": job.tags,
            })
            clash = sorted(set(job.tags) & set(metrics))
            if clash:
                raise ValueError(f"--tag keys {clash} collide with metric names")
            metrics.update(job.tags)  # also at top level, for tables
            write_jsonl_atomic(job.out, out_rows)
            write_json_atomic(job.metrics, metrics)
            print(f"{args.task} {model_name} {job.split} L={job.gen_length} n={metrics['n']} "
                  f"accuracy={metrics['accuracy']:.4f} reward={metrics['reward_mean']:.4f} -> {job.out}", flush=True)
        del model
        gc.collect()
    return 0


__all__ = ["Job", "configure", "default_metrics_path", "generate_completions", "grade_rows", "model_tags",
           "named_value", "plan", "run", "tokenizer_fingerprint"]
