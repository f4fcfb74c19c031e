"""Accuracy tables from evaluation metrics: the two checkpoint protocols, means and t-intervals over seeds, paired
RL - reference differences, and the paper's reported numbers as labelled reference rows.

Per (task, method, seed, generation length L), with acc_split(c) the accuracy of checkpoint c on a split:

- ``best_on_test`` (the paper's protocol): max_c acc_test(c).
- ``val_chosen`` (honest): c* = argmax_c acc_validation(c) (ties: the later checkpoint), reported as acc_test(c*).

The row ``gen_length = "best"`` (the paper's Figure 1: best over lengths) takes the same max / argmax over the pairs
(c, L). Over seeds: mean and the 95% t-interval (n stated); differences are paired by seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from egspo.utils.files import atomic_write_text, read_json_object
from egspo.report.stats import mean_ci

PROTOCOLS = ("best_on_test", "val_chosen")
PROTOCOL_LABELS = {
    "best_on_test": "best checkpoint on test per length (paper's protocol)",
    "val_chosen": "checkpoint chosen on validation, its test accuracy (honest)",
}
BEST = "best"
# The d1 family's headline metric per task (Sudoku: fraction of empty cells filled correctly); others: accuracy.
DEFAULT_METRIC = {"sudoku": "cell_accuracy"}
METHOD_LABELS = {"sft": "SFT", "base": "Base model", "diffu_grpo": "diffu-GRPO", "egspo": "EGSPO",
                 "egspo_sa": "EGSPO-SA", "egspo_sa_rollout": "EGSPO-SA (rollout M=4)",
                 "egspo_sa_uniform": "EGSPO-SA (uniform)", "egspo_sa_random": "EGSPO-SA (random)",
                 "egspo_sa_all": "EGSPO-SA (all steps)", "wd1": "wd1", "spg": "SPG (mix)",
                 "wd1_shared_budget": "wd1 (shared budget)", "spg_shared_budget": "SPG (mix, shared budget)",
                 "egspo_sa_k1": "EGSPO-SA (K=1)", "egspo_sa_k2": "EGSPO-SA (K=2)", "egspo_sa_k8": "EGSPO-SA (K=8)",
                 "egspo_sa_k16": "EGSPO-SA (all steps, K=T)", "egspo_sa_lam025": "EGSPO-SA (lambda 0.25)",
                 "egspo_sa_lam1": "EGSPO-SA (lambda 1)", "egspo_sa_lam2": "EGSPO-SA (lambda 2)",
                 "egspo_sa_authors": "EGSPO-SA (authors' code)"}

# DESIGN §4: the paper's Figure 1 (accuracy %, best over generation lengths, LLaDA-8B-Instruct based) and the
# authors' model card, which splits "Ours" into EGSPO / EGSPO-SA.
PAPER_FIGURE1 = {
    "mbpp": {"LLaDA-8B-Instruct": 41.2, "d1": 44.7, "EGSPO/EGSPO-SA": 51.1},
    "humaneval": {"LLaDA-8B-Instruct": 37.8, "d1": 37.8, "EGSPO/EGSPO-SA": 44.5},
    "sudoku": {"LLaDA-8B-Instruct": 11.8, "d1": 22.1, "wd1": 25.2, "d2": 91.9, "EGSPO/EGSPO-SA": 94.3},
    "countdown": {"LLaDA-8B-Instruct": 20.7, "d1": 42.2, "wd1": 52.3, "SPG": 71.5, "d2": 56.6,
                  "EGSPO/EGSPO-SA": 78.5},
    "gsm8k": {"LLaDA-8B-Instruct": 78.2, "d1": 82.1, "wd1": 83.0, "SPG": 86.1, "d2": 85.0, "EGSPO/EGSPO-SA": 85.7},
    "math500": {"LLaDA-8B-Instruct": 36.2, "d1": 40.2, "wd1": 39.0, "SPG": 41.8, "d2": 41.6, "EGSPO/EGSPO-SA": 39.6},
}
PAPER_MODEL_CARD = {
    "gsm8k": {"EGSPO": 85.7, "EGSPO-SA": 85.03}, "math500": {"EGSPO": 39.0, "EGSPO-SA": 39.6},
    "sudoku": {"EGSPO": 93.6, "EGSPO-SA": 94.3}, "countdown": {"EGSPO": 75.8, "EGSPO-SA": 78.5},
    "mbpp": {"EGSPO": 50.6, "EGSPO-SA": 51.1}, "humaneval": {"EGSPO": 40.2, "EGSPO-SA": 44.5},
}
PAPER_SOURCE_FIGURE1 = "paper Figure 1 (LLaDA-8B-Instruct, best length; reference only)"
PAPER_SOURCE_CARD = "paper model card (LLaDA-8B-Instruct, best length; reference only)"
OURS = "ours"


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def checkpoint_step(ckpt: str) -> int:
    """Optimizer step of a checkpoint name: ``step_40`` -> 40; the model before RL (``sft``/``base``) -> 0."""
    if ckpt.startswith("step_"):
        return int(ckpt[len("step_"):])
    if ckpt in ("sft", "base"):
        return 0
    raise ValueError(f"checkpoint name must be 'step_<N>', 'sft' or 'base', got {ckpt!r}")


def eval_metrics_path(eval_dir: str | Path, task: str, method: str, seed: int, ckpt: str, length: int,
                      split: str) -> Path:
    """The evaluation stage's metrics file (docs/architecture.md: files between stages)."""
    return Path(eval_dir) / task / method / f"seed{seed}" / ckpt / f"len{length}" / f"{split}.metrics.json"


def load_eval_grid(eval_dir: str | Path, *, tasks: Sequence[str], methods: Sequence[str], seeds: Sequence[int],
                   checkpoints: Mapping[str, Sequence[str]], lengths: Sequence[int], splits: Sequence[str],
                   metric: Mapping[str, str] | None = None,
                   task_splits: Mapping[str, Sequence[str]] | None = None,
                   task_lengths: Mapping[str, Sequence[int]] | None = None,
                   shared_seeds: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Every metrics file of the grid as one row: task, method, seed, ckpt, step, gen_length, split, value (%),
    n (examples behind the value, the file's ``n``), shared (the row stands in for a shared model) and model_seed
    (the seed whose files were read).

    ``checkpoints`` maps a method to its evaluated checkpoints; a ``"TASK:METHOD"`` key overrides that for one task
    (a task whose RL runs save on their own schedule). ``shared_seeds["TASK:METHOD"]`` (or ``[METHOD]``) names a
    method whose model every seed shares (the one warm start all RL seeds start from), evaluated once under that
    seed: its files are read from there and its score stands in every seed's row, so paired differences pair each
    RL seed with the same start model. ``task_splits[task]`` replaces ``splits`` for a task that has
    fewer (HumanEval: test only); such a task then has no ``val_chosen`` score (see ``_choose``);
    ``task_lengths[task]`` likewise replaces ``lengths`` for a task evaluated at fewer generation lengths. ``value``
    is 100 x the task's metric field (``metric[task]``, else
    ``DEFAULT_METRIC``, else ``accuracy``). A missing file or field is an error naming it."""
    metric = {**DEFAULT_METRIC, **(metric or {})}
    task_splits, task_lengths = dict(task_splits or {}), dict(task_lengths or {})
    for name, given in (("task_splits", task_splits), ("task_lengths", task_lengths)):
        unknown = sorted(set(given) - set(tasks))
        if unknown:
            raise ValueError(f"{name} names tasks not in tasks {list(tasks)}: {unknown}")
    rows = []
    for task in tasks:
        field = metric.get(task, "accuracy")
        splits_of_task = list(task_splits.get(task, splits))
        if "test" not in splits_of_task:
            raise ValueError(f"task {task!r}: splits {splits_of_task} have no 'test' (both protocols report test "
                             f"accuracy)")
        for method in methods:
            ckpts = checkpoints.get(f"{task}:{method}", checkpoints.get(method))
            if ckpts is None:
                raise ValueError(f"no checkpoint list for method {method!r} of task {task!r} (checkpoints has "
                                 f"{sorted(checkpoints)})")
            shared = (shared_seeds or {}).get(f"{task}:{method}", (shared_seeds or {}).get(method))
            for seed in seeds:
                for ckpt in ckpts:
                    step = checkpoint_step(ckpt)
                    for length in task_lengths.get(task, lengths):
                        for split in splits_of_task:
                            path = eval_metrics_path(eval_dir, task, method, seed if shared is None else shared,
                                                     ckpt, length, split)
                            if not path.is_file():
                                raise FileNotFoundError(f"evaluation metrics file missing: {path}")
                            data = read_json_object(path)
                            if field not in data:
                                raise ValueError(f"{path}: no field {field!r} (the metric of task {task!r}); "
                                                 f"fields: {sorted(data)}")
                            value = data[field]
                            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                                    or not 0.0 <= value <= 1.0:
                                raise ValueError(f"{path}: field {field!r} = {value} is not a fraction in [0, 1]")
                            n = data.get("n")
                            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                                raise ValueError(f"{path}: field 'n' (examples evaluated) = {n!r} is not a positive "
                                                 f"integer")
                            rows.append({"task": task, "method": method, "seed": int(seed), "ckpt": ckpt,
                                         "step": step, "gen_length": int(length), "split": split,
                                         "value": 100.0 * value, "n": n, "shared": shared is not None,
                                         "model_seed": int(seed if shared is None else shared)})
    return pd.DataFrame(rows, columns=GRID_COLUMNS)


GRID_COLUMNS = ["task", "method", "seed", "ckpt", "step", "gen_length", "split", "value", "n", "shared",
                "model_seed"]


def _choose(group: pd.DataFrame) -> dict:
    """Both protocols for one (task, method, seed) group of candidate (ckpt, gen_length) pairs."""
    wide = group.pivot_table(index=["ckpt", "step", "gen_length"], columns="split", values="value",
                             aggfunc="first").reset_index()
    if "test" not in wide:
        raise ValueError("evaluation grid has no 'test' split")
    best_on_test = float(wide["test"].max())
    if "validation" in wide and wide["validation"].notna().all():
        # argmax of validation accuracy; ties -> the later checkpoint, then the shorter length
        order = wide.sort_values(["validation", "step", "gen_length"], ascending=[False, False, True],
                                 kind="mergesort")
        chosen = order.iloc[0]
        return {"best_on_test": best_on_test, "val_chosen": float(chosen["test"]),
                "val_ckpt": str(chosen["ckpt"]), "val_gen_length": int(chosen["gen_length"])}
    return {"best_on_test": best_on_test, "val_chosen": math.nan, "val_ckpt": "", "val_gen_length": -1}


def protocol_scores(grid: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method, seed, gen_length) and per (task, method, seed) with gen_length "best": the accuracy of
    each protocol and the checkpoint the validation split chose; ``shared`` marks a model every seed shares."""
    rows = []
    for (task, method, seed), group in grid.groupby(["task", "method", "seed"], sort=False):
        shared = bool(group["shared"].all()) if "shared" in group else False
        for length, sub in group.groupby("gen_length", sort=False):
            rows.append({"task": task, "method": method, "seed": seed, "gen_length": str(length), "shared": shared,
                         **_choose(sub)})
        rows.append({"task": task, "method": method, "seed": seed, "gen_length": BEST, "shared": shared,
                     **_choose(group)})
    return pd.DataFrame(rows)


def _length_order(values: Iterable[str]) -> list[str]:
    lengths = sorted({v for v in values if v != BEST}, key=int)
    return lengths + ([BEST] if BEST in set(values) else [])


def summarize(scores: pd.DataFrame, methods: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Mean and t-interval over seeds of both protocols, rows in the order task x length x ``methods``. A shared
    model (one evaluation standing in every seed's row) counts once: n = 1, no interval."""
    rows = []
    tasks = list(dict.fromkeys(scores["task"]))
    for task in tasks:
        for length in _length_order(scores.loc[scores["task"] == task, "gen_length"]):
            for method in methods:
                sub = scores[(scores["task"] == task) & (scores["gen_length"] == length) & (scores["method"] == method)]
                if sub.empty:
                    raise ValueError(f"no scores for task {task!r}, method {method!r}, gen_length {length}")
                if "shared" in sub and sub["shared"].all():
                    sub = sub.head(1)
                row = {"source": OURS, "task": task, "gen_length": length, "method": method,
                       "n_seeds": int(len(sub))}
                for protocol in PROTOCOLS:
                    values = sub[protocol].dropna()
                    if values.empty:
                        row.update({f"{protocol}_mean": math.nan, f"{protocol}_ci_low": math.nan,
                                    f"{protocol}_ci_high": math.nan})
                        continue
                    ci = mean_ci(values.tolist(), level)
                    row.update({f"{protocol}_mean": ci.mean, f"{protocol}_ci_low": ci.low,
                                f"{protocol}_ci_high": ci.high})
                rows.append(row)
    return pd.DataFrame(rows)


def _paired_rows(scores: pd.DataFrame, method: str, reference: str, level: float) -> list[dict]:
    """Per task, length and protocol: d_s = score(method, s) - score(reference, s) over the seeds s both have (a
    shared reference pairs with every seed); mean, t-interval, n, and whether the interval excludes zero."""
    rows = []
    ref = scores[scores["method"] == reference].set_index(["task", "gen_length", "seed"])
    for task in dict.fromkeys(scores["task"]):
        for length in _length_order(scores.loc[scores["task"] == task, "gen_length"]):
            for protocol in PROTOCOLS:
                sub = scores[(scores["task"] == task) & (scores["gen_length"] == length) & (scores["method"] == method)]
                diffs = []
                for _, r in sub.iterrows():
                    key = (task, length, r["seed"])
                    if key in ref.index and not math.isnan(r[protocol]) and not math.isnan(ref.loc[key, protocol]):
                        diffs.append(float(r[protocol]) - float(ref.loc[key, protocol]))
                if not diffs:
                    continue
                ci = mean_ci(diffs, level)
                rows.append({"task": task, "gen_length": length, "protocol": protocol, "method": method,
                             "reference": reference, "n_seeds": ci.n, "diff_mean": ci.mean,
                             "diff_ci_low": ci.low, "diff_ci_high": ci.high,
                             "ci_excludes_zero": bool(ci.excludes_zero)})
    return rows


def _ordered(rows: list[dict]) -> pd.DataFrame:
    """Rows in the order task x length x protocol, pairs in the order given (stable sort)."""
    df = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    if df.empty:
        return df
    tasks = {t: i for i, t in enumerate(dict.fromkeys(df["task"]))}
    lengths = {v: i for i, v in enumerate(_length_order(df["gen_length"]))}
    key = df["task"].map(tasks) * 10_000 + df["gen_length"].map(lengths) * 10 + df["protocol"].map(
        {p: i for i, p in enumerate(PROTOCOLS)})
    return df.iloc[key.argsort(kind="mergesort")].reset_index(drop=True)


PAIRED_COLUMNS = ["task", "gen_length", "protocol", "method", "reference", "n_seeds", "diff_mean", "diff_ci_low",
                  "diff_ci_high", "ci_excludes_zero"]


def paired_gains(scores: pd.DataFrame, reference: str, methods: Sequence[str], level: float = 0.95) -> pd.DataFrame:
    """Every method of ``methods`` minus ``reference``, paired by seed (see ``_paired_rows``)."""
    if scores[scores["method"] == reference].empty:
        raise ValueError(f"reference method {reference!r} has no scores")
    return _ordered([row for m in methods if m != reference for row in _paired_rows(scores, m, reference, level)])


def method_pairs(scores: pd.DataFrame, pairs: Sequence[tuple[str, str]], level: float = 0.95) -> pd.DataFrame:
    """Method-vs-method differences ``a - b`` for each pair (a, b), paired by seed, both protocols."""
    present = set(scores["method"])
    for a, b in pairs:
        missing = [m for m in (a, b) if m not in present]
        if missing:
            raise ValueError(f"pair {a}-{b}: method(s) {missing} have no scores (methods: {sorted(present)})")
    return _ordered([row for a, b in pairs for row in _paired_rows(scores, a, b, level)])


def paper_reference_rows(tasks: Sequence[str]) -> pd.DataFrame:
    """The paper's reported numbers for ``tasks`` as rows of the main table (best length, test protocol)."""
    rows = []
    for task in tasks:
        for source, table in ((PAPER_SOURCE_FIGURE1, PAPER_FIGURE1), (PAPER_SOURCE_CARD, PAPER_MODEL_CARD)):
            for method, value in table.get(task, {}).items():
                rows.append({"source": source, "task": task, "gen_length": BEST, "method": method,
                             "n_seeds": math.nan, "best_on_test_mean": value, "best_on_test_ci_low": math.nan,
                             "best_on_test_ci_high": math.nan, "val_chosen_mean": math.nan,
                             "val_chosen_ci_low": math.nan, "val_chosen_ci_high": math.nan})
    return pd.DataFrame(rows)


# ---- writing -----------------------------------------------------------------------------------------------------
def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.4f", lineterminator="\n"))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table (cells converted with str, '|' escaped)."""
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_ci(mean: float, low: float, high: float, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def tasks_without_validation(summary: pd.DataFrame) -> list[str]:
    """Tasks of a summary whose validation-chosen score is missing in every row (no validation split)."""
    return [task for task, sub in summary.groupby("task", sort=False) if sub["val_chosen_mean"].isna().all()]


def main_markdown(summary: pd.DataFrame, reference: pd.DataFrame | None, metric_note: str, title: str) -> str:
    n_values = sorted({int(n) for n in summary["n_seeds"]})
    parts = [f"# {title}\n",
             f"Accuracy in % ({metric_note}); mean and 95% t-interval over seeds (n = "
             f"{', '.join(map(str, n_values))} per cell; a single seed has no interval: the warm start every seed shares is "
             f"one evaluation of one model, n = 1). Two checkpoint protocols:",
             f"- **Best on test**: {PROTOCOL_LABELS['best_on_test']}.",
             f"- **Chosen on validation**: {PROTOCOL_LABELS['val_chosen']}.",
             "- Length `best`: the best generation length, picked the same way (the paper's Figure 1).\n"]
    rows = [[r.task, r.gen_length, method_label(r.method), int(r.n_seeds),
             format_ci(r.best_on_test_mean, r.best_on_test_ci_low, r.best_on_test_ci_high),
             format_ci(r.val_chosen_mean, r.val_chosen_ci_low, r.val_chosen_ci_high)]
            for r in summary.itertuples()]
    parts.append(markdown_table(["Task", "Gen. length", "Method", "n seeds", "Best on test (paper protocol)",
                                 "Chosen on validation (honest)"], rows))
    no_validation = tasks_without_validation(summary)
    if no_validation:
        parts.append(f"\n\"Chosen on validation\" is n/a for {', '.join(no_validation)}: no validation split "
                     f"(only test is evaluated), so no checkpoint can be chosen without looking at test.\n")
    if reference is not None and not reference.empty:
        parts.append("\n## Reference: the paper's reported numbers (LLaDA-8B-Instruct, best length)\n")
        parts.append("Not comparable with the rows above: different model, data scale and lengths.\n")
        parts.append(markdown_table(["Task", "Source", "Method", "Accuracy"],
                                    [[r.task, r.source, r.method, f"{r.best_on_test_mean:.1f}"]
                                     for r in reference.itertuples()]))
    return "\n".join(parts)


def gains_markdown(gains: pd.DataFrame, title: str) -> str:
    ref = ", ".join(sorted({method_label(m) for m in gains["reference"]})) if not gains.empty else "reference"
    parts = [f"# {title}\n",
             f"Paired differences method - {ref} in accuracy points, per seed, then mean and 95% t-interval over "
             "seeds. `excludes 0` marks intervals entirely above or below zero.\n"]
    rows = [[r.task, r.gen_length, "best on test" if r.protocol == "best_on_test" else "chosen on validation",
             method_label(r.method), int(r.n_seeds), format_ci(r.diff_mean, r.diff_ci_low, r.diff_ci_high),
             "yes" if r.ci_excludes_zero else "no"] for r in gains.itertuples()]
    parts.append(markdown_table(["Task", "Gen. length", "Protocol", "Method", "n seeds", f"Difference vs {ref}",
                                 "excludes 0"], rows))
    return "\n".join(parts)


def metric_note(tasks: Sequence[str], metric: Mapping[str, str] | None = None) -> str:
    metric = {**DEFAULT_METRIC, **(metric or {})}
    return "; ".join(f"{t}: {metric.get(t, 'accuracy')}" for t in tasks)


def pairs_markdown(pairs: pd.DataFrame, title: str) -> str:
    """The method-vs-method table: each row one pair a - b, paired by seed."""
    parts = [f"# {title}\n",
             "Paired differences a - b in accuracy points: per seed the score of a minus the score of b (same seed, "
             "same warm start, same prompts), then mean and 95% t-interval over seeds. `excludes 0` marks intervals "
             "entirely above or below zero.\n"]
    rows = [[r.task, r.gen_length, "best on test" if r.protocol == "best_on_test" else "chosen on validation",
             f"{method_label(r.method)} - {method_label(r.reference)}", int(r.n_seeds),
             format_ci(r.diff_mean, r.diff_ci_low, r.diff_ci_high), "yes" if r.ci_excludes_zero else "no"]
            for r in pairs.itertuples()]
    parts.append(markdown_table(["Task", "Gen. length", "Protocol", "Pair (a - b)", "n seeds", "Difference",
                                 "excludes 0"], rows))
    return "\n".join(parts)
