"""`egspo report`: tables (CSV + Markdown) and figures (PNG + PDF) under results/ from the run's files.

Sub-commands (one per Snakemake report rule):

- ``accuracy``: the main table (both checkpoint protocols, mean and 95% t-interval over seeds, the paper's numbers
  as reference rows), the paired RL - reference differences, and the Figure 1 analogue; also the ablation tables.
- ``curves``: reward and KL against the optimizer step per method and task.
- ``trace``: Figure 2 from ``egspo trace`` files.
- ``gradcheck``: the exact gradient check's table and figure.
- ``compute``: seconds and model forwards per RL iteration, split into rollout / stepwise advantages / update.

Evaluation files are found from the grid (``--eval-dir``, tasks, methods, seeds, checkpoints, lengths, splits) with
the layout of docs/architecture.md, so the command line stays short however large the grid is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from egspo.report import tables
from egspo.utils import numerics
from egspo.utils.files import iter_jsonl_objects, read_json_object


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key, value


def _method_pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition("-")
    if not sep or not a or not b or "-" in b:
        raise argparse.ArgumentTypeError(f"expected METHOD_A-METHOD_B, got {text!r}")
    return a, b


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="report", metavar="REPORT", required=True)

    acc = sub.add_parser("accuracy", help="accuracy table, paired differences and grouped-bar figure")
    acc.add_argument("--eval-dir", required=True, help="root of the evaluation files (work/eval)")
    acc.add_argument("--tasks", nargs="+", required=True)
    acc.add_argument("--methods", nargs="+", required=True, help="methods in table / bar order")
    acc.add_argument("--seeds", nargs="+", type=int, required=True)
    acc.add_argument("--lengths", nargs="+", type=int, required=True, help="generation lengths evaluated")
    acc.add_argument("--splits", nargs="+", default=["validation", "test"], choices=("validation", "test"),
                     help="evaluated splits of every task not named in --task-splits")
    acc.add_argument("--task-splits", nargs="*", type=_key_value, default=[], metavar="TASK=SPLIT,SPLIT",
                     help="evaluated splits of a task that has fewer (e.g. humaneval=test: its validation-chosen "
                          "column is n/a)")
    acc.add_argument("--task-lengths", nargs="*", type=_key_value, default=[], metavar="TASK=L,L",
                     help="generation lengths of a task evaluated at fewer than --lengths (its other cells are absent "
                          "from the by-length rows; its best length is the best of these)")
    acc.add_argument("--checkpoints", nargs="+", type=_key_value, required=True, metavar="[TASK:]METHOD=CKPT,CKPT",
                     help="evaluated checkpoints per method, e.g. sft=sft egspo=step_40,step_80; a TASK:METHOD "
                          "entry overrides a method's list for one task (countdown:egspo=step_120,step_240)")
    acc.add_argument("--shared-seed", nargs="*", type=_key_value, default=[], metavar="[TASK:]METHOD=SEED",
                     help="a method whose model every seed shares (one warm start), evaluated once under SEED; its "
                          "score stands in every seed's row (e.g. sudoku:sft=2)")
    acc.add_argument("--metric", nargs="*", type=_key_value, default=[], metavar="TASK=FIELD",
                     help=f"metrics-JSON field per task (default {tables.DEFAULT_METRIC}, else accuracy)")
    acc.add_argument("--reference", help="method the paired differences are taken against (e.g. sft)")
    acc.add_argument("--table", required=True, help="output stem: STEM.csv and STEM.md")
    acc.add_argument("--gains", help="output stem of the paired-difference table (needs --reference)")
    acc.add_argument("--figure", help="output stem: STEM.png and STEM.pdf")
    acc.add_argument("--per-seed", help="also write this CSV: every score behind the tables (egspo.report.per_seed)")
    acc.add_argument("--pairs", nargs="*", type=_method_pair, default=[], metavar="A-B",
                     help="method-vs-method differences A - B paired by seed (e.g. egspo_sa-diffu_grpo)")
    acc.add_argument("--pairs-table", help="output stem of the method-vs-method table (needs --pairs)")
    acc.add_argument("--sweep", nargs="*", type=_key_value, default=[], metavar="METHOD=VALUE",
                     help="a sweep's points: each method and its value of the swept setting (e.g. egspo_sa_k1=1)")
    acc.add_argument("--sweep-name", default="value", help="the swept setting's name (axis label, e.g. K)")
    acc.add_argument("--sweep-table", help="output stem of the sweep table (needs --sweep)")
    acc.add_argument("--sweep-figure", help="output stem of the sweep figure (needs --sweep)")
    acc.add_argument("--paper-reference", action="store_true", help="append the paper's reported numbers")
    acc.add_argument("--environment", help="also write this JSON: versions, Python, pinned instruction set, "
                                           "processor (egspo.utils.numerics.describe)")
    acc.add_argument("--title", default="Accuracy by task, generation length and method")

    cur = sub.add_parser("curves", help="reward and KL against step, mean over seeds with a band")
    cur.add_argument("--rl-dir", required=True, help="root of the RL runs (work/rl)")
    cur.add_argument("--tasks", nargs="+", required=True)
    cur.add_argument("--methods", nargs="+", required=True)
    cur.add_argument("--seeds", nargs="+", type=int, required=True)
    cur.add_argument("--columns", nargs="+", default=["reward_mean", "kl"])
    cur.add_argument("--smooth", type=int, default=1, help="trailing rolling-mean window in steps")
    cur.add_argument("--figure", required=True)

    tr = sub.add_parser("trace", help="Figure 2 from egspo trace files")
    tr.add_argument("--traces", nargs="+", required=True)
    tr.add_argument("--figure", required=True)

    co = sub.add_parser("compute", help="seconds and forwards per RL iteration, split by phase, per method")
    co.add_argument("--rl-dir", required=True, help="root of the RL runs (work/rl)")
    co.add_argument("--tasks", nargs="+", required=True)
    co.add_argument("--methods", nargs="+", required=True)
    co.add_argument("--seeds", nargs="+", type=int, required=True)
    co.add_argument("--reference", help="method the time ratio is taken against (e.g. diffu_grpo)")
    co.add_argument("--table", required=True, help="output stem: STEM.csv and STEM.md")

    gc = sub.add_parser("gradcheck", help="table and figure of the exact gradient check")
    gc.add_argument("--csv", required=True, help="output of egspo gradcheck")
    gc.add_argument("--table", required=True)
    gc.add_argument("--figure", required=True)


def read_rl_metrics(path: str | Path) -> pd.DataFrame:
    """An RL run's metrics.jsonl as a frame sorted by step; a step logged twice (a resumed run) keeps its last row."""
    rows = []
    for lineno, row in iter_jsonl_objects(path):
        if "step" not in row:
            raise ValueError(f"{path}: line {lineno}: row has no 'step'")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no metrics rows")
    df = pd.DataFrame(rows)
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def rl_runs(rl_dir: str | Path, tasks, methods, seeds):
    """(task, method, metrics path, metrics frame) of every RL run of the grid, in grid order; a missing file is an
    error naming it."""
    for task in tasks:
        for method in methods:
            for seed in seeds:
                path = Path(rl_dir) / task / method / f"seed{seed}" / "metrics.jsonl"
                if not path.is_file():
                    raise FileNotFoundError(f"RL metrics file missing: {path}")
                yield task, method, path, read_rl_metrics(path)


def run_accuracy(args: argparse.Namespace) -> int:
    from egspo.report.figures import accuracy_bars

    checkpoints = {m: [c for c in ckpts.split(",") if c] for m, ckpts in args.checkpoints}
    metric = dict(args.metric)
    shared_seeds = {}
    for key, seed in args.shared_seed:
        if not seed.isdigit():
            raise ValueError(f"--shared-seed {key}={seed}: the seed must be a non-negative integer")
        shared_seeds[key] = int(seed)
    task_splits = {}
    for task, names in args.task_splits:
        splits = [s for s in names.split(",") if s]
        bad = [s for s in splits if s not in ("validation", "test")]
        if bad or not splits:
            raise ValueError(f"--task-splits {task}={names}: splits must be validation and/or test")
        task_splits[task] = splits
    task_lengths = {}
    for task, values in args.task_lengths:
        lengths = [v for v in values.split(",") if v]
        if not lengths or not all(v.isdigit() and int(v) in args.lengths for v in lengths):
            raise ValueError(f"--task-lengths {task}={values}: lengths must be among --lengths {args.lengths}")
        task_lengths[task] = [int(v) for v in lengths]
    grid = tables.load_eval_grid(args.eval_dir, tasks=args.tasks, methods=args.methods, seeds=args.seeds,
                                 checkpoints=checkpoints, lengths=args.lengths, splits=args.splits, metric=metric,
                                 task_splits=task_splits, task_lengths=task_lengths, shared_seeds=shared_seeds)
    scores = tables.protocol_scores(grid)
    summary = tables.summarize(scores, args.methods)
    reference = tables.paper_reference_rows(args.tasks) if args.paper_reference else None
    full = pd.concat([summary, reference], ignore_index=True) if reference is not None else summary
    note = tables.metric_note(args.tasks, metric)
    tables.write_csv(full, f"{args.table}.csv")
    tables.atomic_write_text(f"{args.table}.md", tables.main_markdown(summary, reference, note, args.title))
    if args.gains:
        if not args.reference:
            raise ValueError("--gains needs --reference (the method differences are taken against)")
        if args.reference not in args.methods:
            raise ValueError(f"--reference {args.reference!r} is not among --methods {args.methods}")
        gains = tables.paired_gains(scores, args.reference, args.methods)
        tables.write_csv(gains, f"{args.gains}.csv")
        tables.atomic_write_text(f"{args.gains}.md", tables.gains_markdown(
            gains, f"{args.title}: paired differences against {tables.method_label(args.reference)}"))
    if args.pairs_table:  # no --pairs (no pair of this run's methods): a table with no rows
        pairs = tables.method_pairs(scores, args.pairs)
        tables.write_csv(pairs, f"{args.pairs_table}.csv")
        tables.atomic_write_text(f"{args.pairs_table}.md", tables.pairs_markdown(
            pairs, f"{args.title}: method-vs-method differences"))
    if args.sweep_table or args.sweep_figure:
        from egspo.report import sweeps

        values = sweeps.parse_values(args.sweep, args.methods)
        sweep = sweeps.sweep_table(summary, values, args.sweep_name)
        if args.sweep_table:
            tables.write_csv(sweep, f"{args.sweep_table}.csv")
            tables.atomic_write_text(f"{args.sweep_table}.md", sweeps.sweep_markdown(sweep, args.sweep_name,
                                                                                     args.title, note))
        if args.sweep_figure:
            sweeps.sweep_figure(sweep, args.sweep_name, args.sweep_figure, args.title)
    if args.per_seed:
        from egspo.report.per_seed import per_seed_frame

        tables.write_csv(per_seed_frame(grid), args.per_seed)
    if args.figure:
        accuracy_bars(summary, args.methods, args.figure, args.title)
    if args.environment:
        numerics.write_description(args.environment)
    return 0


def run_curves(args: argparse.Namespace) -> int:
    from egspo.report.figures import training_curves

    runs: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for task, method, path, df in rl_runs(args.rl_dir, args.tasks, args.methods, args.seeds):
        missing = [c for c in args.columns if c not in df]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; columns: {sorted(df.columns)}")
        runs.setdefault((task, method), []).append(df)
    training_curves(runs, args.figure, columns=args.columns, smooth=args.smooth)
    return 0


def run_trace(args: argparse.Namespace) -> int:
    from egspo.report.figures import step_selection

    traces = []
    for path in args.traces:
        trace = read_json_object(path)
        for field in ("task", "samples"):
            if field not in trace:
                raise ValueError(f"{path}: trace has no field {field!r}")
        traces.append(trace)
    step_selection(traces, args.figure)
    return 0


def run_compute(args: argparse.Namespace) -> int:
    from egspo.report.compute import compute_markdown, compute_table, run_means

    runs = {}
    for task, method, path, df in rl_runs(args.rl_dir, args.tasks, args.methods, args.seeds):
        runs.setdefault((task, method), []).append(run_means(df, path))
    df = compute_table(runs, args.methods, args.reference)
    tables.write_csv(df, f"{args.table}.csv")
    tables.atomic_write_text(f"{args.table}.md", compute_markdown(df, args.reference))
    return 0


def run_gradcheck(args: argparse.Namespace) -> int:
    from egspo.report.figures import gradcheck_figure

    from egspo.report.gradcheck_scale import add_scaled_bias

    df = pd.read_csv(args.csv)
    required = ["selection", "k", "lam", "baseline", "remasking", "cosine", "rel_error", "variance"]
    missing = [c for c in required if c not in df]
    if missing:
        raise ValueError(f"{args.csv}: missing column(s) {missing}")
    try:
        df = add_scaled_bias(df)
    except ValueError as err:
        raise ValueError(f"{args.csv}: {err}") from None
    tables.write_csv(df, f"{args.table}.csv")
    columns = required[:6] + ["rel_error_known_scale", "known_scale", "best_scale", "rel_error_best_scale",
                              "variance"] + [c for c in ("score",) if c in df]
    rows = [[r[c] if not isinstance(r[c], float) else f"{r[c]:.4g}" for c in columns] for _, r in df.iterrows()]
    text = ("# Exact gradient check\n\nEach estimator's exact expectation E[g] (every trajectory enumerated) against "
            "the true policy gradient grad J: cosine, relative error |E g - grad J| / |grad J|, the relative error "
            "after the scale the estimator is unbiased up to (`known_scale`: T/K for a uniformly random K of T steps, "
            "which estimates K/T of the gradient; 1 otherwise), the best scalar c* minimising |c E g - grad J| and "
            "its error sqrt(1 - cosine^2) (direction alone), and the variance E|g|^2 - |E g|^2. Errors computed "
            "from cosine and norms are accurate to about 1e-8 (cancellation), so values below that mean exact.\n\n"
            + tables.markdown_table(columns, rows))
    tables.atomic_write_text(f"{args.table}.md", text)
    gradcheck_figure(df, args.figure)
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {"accuracy": run_accuracy, "curves": run_curves, "trace": run_trace, "gradcheck": run_gradcheck,
                "compute": run_compute}
    return handlers[args.report](args)
