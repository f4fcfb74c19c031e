"""``egspo data``: write a task's train / validation / test rows as JSONL files.

``--source tiny`` runs the task's generator (Sudoku, Countdown), with ``--seed`` and the three split sizes; the
splits are disjoint by construction (see the task modules). ``--source hub`` uses the paper's real data:

- GSM8K: ``openai/gsm8k`` (``main``) train and test; validation = ``--n-validation`` rows drawn from train with
  ``random.Random(seed)`` and removed from it.
- MATH500: test = ``HuggingFaceH4/MATH-500``; train = ``ankner/math-500`` train (the d1 family's MATH training
  problems), validation carved from it as for GSM8K.
- Countdown: test = the d1 three-number test file (fetched by URL, sha256-pinned, cached); train =
  ``Jiayi-Pan/Countdown-Tasks-3to4`` rows with 3 numbers minus any (numbers, target) in the test file; validation
  carved from it.
- Sudoku: test = the d1 4x4 test file (URL, sha256-pinned); train = the d1 training puzzles minus every puzzle whose
  solution grid is a test solution (SPG's leakage finding); validation carved from it.

For hub sources ``--n-train`` / ``--n-test`` keep the first N rows in the source order (default: all).
``--authors-test-draw N`` instead keeps the N test rows the authors' evaluation scores: their ``eval.py`` seeds
numpy with 42 and takes ``numpy.random.choice(len(test), N, replace=False)`` (in that order; Sudoku: 256 of 500).
``--source PATH`` reads one local file in the task's original schema as one split: pass ``--splits`` with exactly
that split (e.g. ``--splits test``). Each file is written atomically (temp file + rename).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from egspo.utils.files import write_jsonl_atomic
from egspo.tasks import TASK_NAMES, get_task

SPLITS = ("train", "validation", "test")


def build_splits(task_name: str, source: str, seed: int = 0, n_train: int | None = None,
                 n_validation: int | None = None, n_test: int | None = None,
                 splits: tuple[str, ...] = SPLITS) -> dict[str, list[dict]]:
    """The rows of each requested split (see the module docstring)."""
    task = get_task(task_name)
    sizes = {"train": n_train, "validation": n_validation, "test": n_test}
    for split, n in sizes.items():
        if n is not None and n < 0:
            raise ValueError(f"--n-{split} must be >= 0, got {n}")
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"--splits: unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if source == "tiny":
        kwargs = {f"n_{s}": n for s, n in sizes.items() if n is not None}
        return {s: task.load(s, "tiny", seed=seed, **kwargs) for s in splits}
    if source != "hub":
        if not Path(source).is_file():
            raise ValueError(f"--source must be 'tiny', 'hub' or an existing file; {source!r} is none of these")
        if len(splits) != 1:
            raise ValueError(f"a local file holds one split: pass --splits with one of {', '.join(SPLITS)}")
        rows = task.load(splits[0], source)
        n = sizes[splits[0]]
        return {splits[0]: rows if n is None else _first(rows, n, splits[0])}
    out = {}
    for split in splits:
        kwargs = {"seed": seed}
        if split in ("train", "validation") and n_validation is not None:
            kwargs["n_validation"] = n_validation
        rows = task.load(split, "hub", **kwargs)
        n = sizes[split] if split != "validation" else None
        out[split] = rows if n is None else _first(rows, n, split)
    return out


#: the seed of the authors' evaluation draw (their eval/eval.py: init_seed(42) before the dataset is built)
AUTHORS_EVAL_SEED = 42


def authors_test_draw(rows: list[dict], n: int) -> list[dict]:
    """The ``n`` rows the authors' evaluation scores: ``numpy.random.seed(42)`` then
    ``numpy.random.choice(len(rows), n, replace=False)`` (numpy's legacy generator, in the drawn order)."""
    if not 0 < n <= len(rows):
        raise ValueError(f"--authors-test-draw={n} must be between 1 and the {len(rows)} test rows")
    picks = np.random.RandomState(AUTHORS_EVAL_SEED).choice(len(rows), n, replace=False)
    return [rows[i] for i in picks]


def _first(rows: list[dict], n: int, split: str) -> list[dict]:
    if n > len(rows):
        raise ValueError(f"--n-{split}={n} but the source has only {len(rows)} {split} rows")
    return rows[:n]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASK_NAMES)
    parser.add_argument("--source", required=True, help="'tiny' (generator), 'hub' (the paper's data) or a file path")
    parser.add_argument("--out-dir", required=True, help="writes OUT_DIR/{train,validation,test}.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-validation", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated subset of train,validation,test")
    parser.add_argument("--authors-test-draw", type=int, default=None, metavar="N",
                        help="keep the N test rows the authors' evaluation draws (numpy seed 42, without replacement)")


def run(args: argparse.Namespace) -> int:
    splits = tuple(s for s in args.splits.split(",") if s)
    if args.authors_test_draw is not None and args.n_test is not None:
        raise ValueError("--authors-test-draw and --n-test both choose the test rows: pass one")
    try:
        data = build_splits(args.task, args.source, args.seed, args.n_train, args.n_validation, args.n_test, splits)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"egspo data: error: {exc}", file=sys.stderr)
        return 2
    if args.authors_test_draw is not None and "test" in data:
        data["test"] = authors_test_draw(data["test"], args.authors_test_draw)
    out_dir = Path(args.out_dir)
    for split, rows in data.items():
        write_jsonl_atomic(out_dir / f"{split}.jsonl", rows)
    counts = " ".join(f"{s}={len(r)}" for s, r in data.items())
    print(f"data: task={args.task} source={args.source} seed={args.seed} {counts} -> {out_dir}")
    return 0
