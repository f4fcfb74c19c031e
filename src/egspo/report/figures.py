"""Figures of the report (matplotlib, Agg backend), each saved as PNG and PDF, deterministically and atomically.

- ``accuracy_bars``: the layout of the paper's Figure 1 (grouped bars per task, one per method) with t-interval
  error bars, one panel per checkpoint protocol.
- ``training_curves``: reward and KL against the optimizer step, mean over seeds with a +-1 standard deviation band.
- ``step_selection``: Figure 2 from recorded trajectories: step entropy H_j with the selected steps, how often each
  step is selected, and the one-step-fill reward r(x_hat(S_j)) against the final reward r(S_T).
- ``gradcheck_figure``: relative error of each estimator's exact expectation against grad J, and its variance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from egspo.utils.files import atomic_write_file  # noqa: E402
from egspo.report.tables import BEST, PROTOCOL_LABELS, PROTOCOLS, method_label  # noqa: E402

# Fixed metadata: no dates or versions that would change the bytes between identical runs.
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}


def save_figure(fig: plt.Figure, stem: str | Path) -> list[Path]:
    """Write ``stem``.png and ``stem``.pdf, each atomically (:func:`egspo.utils.files.atomic_write_file`); close the
    figure."""
    stem = Path(stem)
    written = []
    for ext, metadata in (("png", PNG_METADATA), ("pdf", PDF_METADATA)):
        target = stem.with_name(stem.name + "." + ext)
        atomic_write_file(target, lambda tmp, ext=ext, metadata=metadata: fig.savefig(
            tmp, format=ext, dpi=120, metadata=metadata, bbox_inches="tight"))
        written.append(target)
    plt.close(fig)
    return written


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def accuracy_bars(summary: pd.DataFrame, methods: Sequence[str], stem: str | Path, title: str) -> list[Path]:
    """Grouped bars per task (x) and method (bar) of the ``gen_length == "best"`` rows of ``summary`` (the output
    of ``report_tables.summarize``), one panel per protocol; error bars are the 95% t-intervals."""
    best = summary[summary["gen_length"] == BEST]
    if best.empty:
        raise ValueError("summary has no gen_length == 'best' rows to plot")
    tasks = list(dict.fromkeys(best["task"]))
    n_seeds = sorted({int(n) for n in best["n_seeds"]})
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(1, len(PROTOCOLS), figsize=(5.5 * len(PROTOCOLS), 4.2), sharey=True, squeeze=False)
    for ax, protocol in zip(axes[0], PROTOCOLS):
        for i, (method, color) in enumerate(zip(methods, _colors(len(methods)))):
            sub = best[best["method"] == method].set_index("task").reindex(tasks)
            means = sub[f"{protocol}_mean"].to_numpy(dtype=float)
            low = means - sub[f"{protocol}_ci_low"].to_numpy(dtype=float)
            high = sub[f"{protocol}_ci_high"].to_numpy(dtype=float) - means
            err = np.vstack([np.nan_to_num(low), np.nan_to_num(high)])
            x = np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width
            # accuracy is bounded: draw the t-interval clipped to [0, 100] (the table has the raw interval)
            err = np.minimum(err, np.vstack([means, 100.0 - means]))
            ax.bar(x, means, width, yerr=err, capsize=3, color=color, label=method_label(method))
            for xi, m in zip(x, means):
                if np.isfinite(m):
                    ax.text(xi, m + 0.8, f"{m:.1f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(np.arange(len(tasks)), tasks)
        ax.set_title(PROTOCOL_LABELS[protocol], fontsize=9)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%), best generation length")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{title} (mean and 95% t-interval over n = {', '.join(map(str, n_seeds))} seeds)", fontsize=10)
    return save_figure(fig, stem)


def _band(frames: Sequence[pd.DataFrame], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and standard deviation over runs of ``column`` on the steps all runs share."""
    series = [f.set_index("step")[column] for f in frames]
    joined = pd.concat(series, axis=1, join="inner").sort_index()
    values = joined.to_numpy(dtype=float)
    sd = values.std(axis=1, ddof=1) if values.shape[1] > 1 else np.zeros(len(values))
    return joined.index.to_numpy(), values.mean(axis=1), sd


def training_curves(runs: Mapping[tuple[str, str], Sequence[pd.DataFrame]], stem: str | Path,
                    columns: Sequence[str] = ("reward_mean", "kl"), smooth: int = 1) -> list[Path]:
    """One row per task, one column per metric; ``runs[(task, method)]`` holds one frame (step, metrics) per seed.
    Each seed's curve is smoothed by a trailing rolling mean over ``smooth`` steps before averaging."""
    if smooth < 1:
        raise ValueError(f"smooth must be >= 1, got {smooth}")
    tasks = list(dict.fromkeys(t for t, _ in runs))
    methods = list(dict.fromkeys(m for _, m in runs))
    colors = dict(zip(methods, _colors(len(methods))))
    fig, axes = plt.subplots(len(tasks), len(columns), figsize=(5.0 * len(columns), 3.2 * len(tasks)),
                             squeeze=False)
    for r, task in enumerate(tasks):
        for c, column in enumerate(columns):
            ax = axes[r][c]
            for method in methods:
                frames = runs.get((task, method))
                if not frames:
                    continue
                smoothed = [f.assign(**{column: f[column].rolling(smooth, min_periods=1).mean()}) for f in frames]
                steps, mean, sd = _band(smoothed, column)
                ax.plot(steps, mean, color=colors[method], label=f"{method_label(method)} (n={len(frames)})")
                ax.fill_between(steps, mean - sd, mean + sd, color=colors[method], alpha=0.2, linewidth=0)
            ax.set_title(f"{task}: {column}", fontsize=9)
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    note = f"; rolling mean over {smooth} steps" if smooth > 1 else ""
    fig.suptitle(f"RL training: mean over seeds, band = +-1 s.d.{note}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem)


def step_selection(traces: Sequence[Mapping], stem: str | Path, n_examples: int = 3) -> list[Path]:
    """Figure 2 from ``egspo trace`` files: per task, (a) step entropy H_j of a few trajectories with their selected
    steps marked and the mean over all trajectories, (b) the fraction of trajectories selecting each step, (c) the
    one-step-fill reward r(x_hat(S_j)) per step (mean and the examples) against the final reward r(S_T)."""
    if not traces:
        raise ValueError("step_selection needs at least one trace")
    fig, axes = plt.subplots(len(traces), 3, figsize=(15, 3.4 * len(traces)), squeeze=False)
    for r, trace in enumerate(traces):
        samples = trace["samples"]
        if not samples:
            raise ValueError(f"trace of task {trace.get('task')!r} has no samples")
        T = len(samples[0]["step_entropy"])
        for i, s in enumerate(samples):
            if len(s["step_entropy"]) != T or len(s["onestep_reward"]) != T:
                raise ValueError(f"trace of task {trace['task']!r}, sample {i}: step_entropy / onestep_reward "
                                 f"lengths {len(s['step_entropy'])} / {len(s['onestep_reward'])} != T = {T}")
            if any(not 0 <= j < T for j in s["selected"]):
                raise ValueError(f"trace of task {trace['task']!r}, sample {i}: selected steps {s['selected']} "
                                 f"outside 0..{T - 1}")
        steps = np.arange(T)
        entropy = np.array([s["step_entropy"] for s in samples], dtype=float)
        onestep = np.array([s["onestep_reward"] for s in samples], dtype=float)
        final = np.array([s["final_reward"] for s in samples], dtype=float)
        chosen = np.zeros(T)
        for s in samples:
            chosen[list(s["selected"])] += 1.0
        colors = _colors(n_examples)
        task, k = trace["task"], trace.get("k", len(samples[0]["selected"]))
        ax = axes[r][0]
        ax.plot(steps, entropy.mean(axis=0), color="black", linewidth=2, label=f"mean over {len(samples)}")
        for i in range(min(n_examples, len(samples))):
            s = samples[i]
            ax.plot(steps, s["step_entropy"], color=colors[i], alpha=0.8, linewidth=1, label=f"trajectory {i}")
            sel = list(s["selected"])
            ax.scatter(sel, np.asarray(s["step_entropy"])[sel], color=colors[i], marker="o", s=40,
                       edgecolor="black", zorder=3)
        ax.set_title(f"{task}: step entropy H_j (dots: top-{k} selected)", fontsize=9)
        ax.set_xlabel("denoising step j")
        ax.legend(fontsize=7)
        ax = axes[r][1]
        ax.bar(steps, chosen / len(samples), color="tab:gray")
        ax.set_ylim(0, 1)
        ax.set_title(f"{task}: fraction of trajectories selecting step j", fontsize=9)
        ax.set_xlabel("denoising step j")
        ax = axes[r][2]
        ax.plot(steps, onestep.mean(axis=0), color="black", linewidth=2, label="mean r(x_hat(S_j))")
        ax.axhline(final.mean(), color="tab:red", linestyle="--", label="mean final reward r(S_T)")
        for i in range(min(n_examples, len(samples))):
            ax.plot(steps, onestep[i], color=colors[i], alpha=0.7, linewidth=1)
            ax.scatter([T - 0.5], [final[i]], color=colors[i], marker="*", s=60, zorder=3)
        ax.set_title(f"{task}: one-step-fill reward per step vs final reward (stars)", fontsize=9)
        ax.set_xlabel("denoising step j")
        ax.legend(fontsize=7)
        for a in axes[r]:
            a.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, stem)


def gradcheck_figure(df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Left: relative error |c E g - grad J| / |grad J| of each (selection, K) estimator with no baseline and
    lambda = smallest listed, per remasking / score, at the scale c it is unbiased up to (``rel_error_known_scale``:
    T/K for random K-of-T selection, 1 otherwise; plain ``rel_error`` when the table lacks it). Right: variance E|g|^2 - |E g|^2 against lambda for every
    baseline of the all-steps estimator."""
    required = {"selection", "k", "lam", "baseline", "remasking", "rel_error", "variance"}
    missing = required - set(df.columns)
    if missing:
        raise ValueError(f"gradcheck table lacks columns {sorted(missing)}")
    df = df.copy()
    df["variant"] = df["remasking"] + ("/" + df["score"] if "score" in df else "")
    lam0 = df["lam"].min()
    error = "rel_error_known_scale" if "rel_error_known_scale" in df else "rel_error"
    bias = df[(df["baseline"] == "none") & (df["lam"] == lam0)]
    variants = list(dict.fromkeys(df["variant"]))
    labels = list(dict.fromkeys(zip(bias["selection"], bias["k"])))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.8 / max(1, len(variants))
    for i, (variant, color) in enumerate(zip(variants, _colors(len(variants)))):
        sub = bias[bias["variant"] == variant].set_index(["selection", "k"])
        values = [max(float(sub.loc[key, error]), 1e-17) if key in sub.index else np.nan for key in labels]
        x = np.arange(len(labels)) + (i - (len(variants) - 1) / 2) * width
        ax1.bar(x, values, width, color=color, label=variant)
    ax1.set_xticks(np.arange(len(labels)), [f"{s}\nK={k}" for s, k in labels], fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylabel("relative error of c E[g] vs grad J (log)" if error != "rel_error"
                   else "relative error of E[g] vs grad J (log)")
    ax1.set_title(f"bias of each estimator (baseline none, lambda {lam0:g})"
                  + ("\nafter its known scale c (T/K for random K of T, else 1)" if error != "rel_error" else ""),
                  fontsize=9)
    ax1.legend(fontsize=7)
    ax1.grid(axis="y", alpha=0.3)
    full = df[df["selection"] == "all"]
    styles = ["-", "--", ":", "-."]
    baselines = list(dict.fromkeys(full["baseline"]))
    for j, variant in enumerate(variants):
        for baseline, color in zip(baselines, _colors(len(baselines))):
            sub = full[(full["variant"] == variant) & (full["baseline"] == baseline)].sort_values("lam")
            if not sub.empty:
                ax2.plot(sub["lam"], sub["variance"], styles[j % len(styles)], color=color, marker="o",
                         label=f"{variant}, baseline {baseline}")
    ax2.set_xlabel("lambda")
    ax2.set_ylabel("variance E|g|^2 - |E g|^2")
    ax2.set_title("variance of the all-steps estimator against lambda", fontsize=9)
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, stem)
