# Stage 5: tables (CSV + Markdown) and figures (PNG + PDF) under results/. `snakemake --report` collects the
# figures with the captions in workflow/report/.


def accuracy_flags(methods, tasks=None):
    """The evaluation grid of `methods` for `egspo report accuracy` (files are found from it, not listed): the
    configured splits, and `--task-splits` for a task that has fewer (HumanEval: test only; its validation-chosen
    column is then n/a)."""
    tasks = tasks or TASKS
    ckpts = " ".join(f"{t}:{m}={','.join(checkpoints(m, t))}" for t in tasks for m in methods)
    fewer = [f"{t}={','.join(eval_splits(t))}" for t in tasks if eval_splits(t) != list(C["eval"]["splits"])]
    shared = [f"{t}:{START}={start_eval_seed(t)}" for t in tasks if START in methods and start_eval_seed(t) is not None]
    return (f"--eval-dir {W}/eval --tasks {' '.join(tasks)} --methods {' '.join(methods)} "
            f"--seeds {' '.join(map(str, SEEDS))} --lengths {' '.join(map(str, C['eval']['gen_lengths']))} "
            f"--splits {' '.join(C['eval']['splits'])} --checkpoints {ckpts}"
            + (f" --task-splits {' '.join(fewer)}" if fewer else "")
            + (f" --shared-seed {' '.join(shared)}" if shared else ""))


MAIN_TABLES = results("tables/main", ["csv", "md"]) + results("tables/gains", ["csv", "md"])
FIG1 = results("figures/fig1_overview", ["png", "pdf"])
CURVES = results("figures/training_curves", ["png", "pdf"])
FIG2 = results("figures/fig2_step_selection", ["png", "pdf"])
GRADCHECK_TABLE = results("tables/gradcheck", ["csv", "md"])
GRADCHECK_FIG = results("figures/gradcheck", ["png", "pdf"])
RL_COMPARE = [m for m in C["compare"] if m != START]
# every table and figure of the default run (`rule all`)
DEFAULT_RESULTS = MAIN_TABLES + FIG1 + CURVES + FIG2 + GRADCHECK_TABLE + GRADCHECK_FIG
# the final checkpoint of every compared RL run (what the training curves read)
RL_FINALS = [final_checkpoint(t, m, s) for t in RL_TASKS for m in RL_COMPARE for s in SEEDS]
# What results/ is made from. Targets of `all` too: results/ is committed, and without these a fresh clone would see
# up-to-date results with nothing missing and run no job; with them it reruns the work and then the report.
DEFAULT_WORK = (eval_metrics(C["compare"]) + RL_FINALS + [f"{W}/trace/{t}.json" for t in TASKS]
                + [f"{W}/gradcheck/gradcheck.csv"])


rule report_main:
    input:
        eval_metrics(C["compare"]),
    output:
        main_csv=f"{R}/tables/main.csv",
        main_md=f"{R}/tables/main.md",
        gains_csv=f"{R}/tables/gains.csv",
        gains_md=f"{R}/tables/gains.md",
        fig_png=report(f"{R}/figures/fig1_overview.png", caption="../report/fig1_overview.rst", category="Figures"),
        fig_pdf=f"{R}/figures/fig1_overview.pdf",
    params:
        grid=accuracy_flags(C["compare"]),
    log:
        f"{LOGS}/report/main.log",
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=res("report", "gpu"),
    shell:
        "{EGSPO} report accuracy {params.grid} --reference {START} --paper-reference "
        "--table {R}/tables/main --gains {R}/tables/gains --figure {R}/figures/fig1_overview "
        "--title 'Main results' > {log} 2>&1"


rule report_curves:
    input:
        RL_FINALS,
    output:
        png=report(f"{R}/figures/training_curves.png", caption="../report/training_curves.rst", category="Figures"),
        pdf=f"{R}/figures/training_curves.pdf",
    params:
        methods=" ".join(RL_COMPARE),
        tasks=" ".join(RL_TASKS),  # RL runs are per train task (kodcode, not humaneval / mbpp)
        seeds=" ".join(map(str, SEEDS)),
    log:
        f"{LOGS}/report/training_curves.log",
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=res("report", "gpu"),
    shell:
        "{EGSPO} report curves --rl-dir {W}/rl --tasks {params.tasks} --methods {params.methods} "
        "--seeds {params.seeds} --smooth 5 --figure {R}/figures/training_curves > {log} 2>&1"


rule report_fig2:
    input:
        [f"{W}/trace/{t}.json" for t in TASKS],
    output:
        png=report(f"{R}/figures/fig2_step_selection.png", caption="../report/fig2_step_selection.rst",
                   category="Figures"),
        pdf=f"{R}/figures/fig2_step_selection.pdf",
    log:
        f"{LOGS}/report/fig2_step_selection.log",
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=res("report", "gpu"),
    shell:
        "{EGSPO} report trace --traces {input} --figure {R}/figures/fig2_step_selection > {log} 2>&1"


rule report_gradcheck:
    input:
        f"{W}/gradcheck/gradcheck.csv",
    output:
        csv=f"{R}/tables/gradcheck.csv",
        md=f"{R}/tables/gradcheck.md",
        png=report(f"{R}/figures/gradcheck.png", caption="../report/gradcheck.rst", category="Figures"),
        pdf=f"{R}/figures/gradcheck.pdf",
    log:
        f"{LOGS}/report/gradcheck.log",
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=res("report", "gpu"),
    shell:
        "{EGSPO} report gradcheck --csv {input} --table {R}/tables/gradcheck --figure {R}/figures/gradcheck "
        "> {log} 2>&1"


rule evaluate_all:
    """Every evaluation of the configured grid, no report: with a narrowed grid from --config, a targeted rerun
    that leaves results/ alone."""
    input:
        eval_metrics(C["compare"]),


rule compare_methods:
    """The method comparison alone (main table, paired differences, Figure 1, training curves): with a variant
    method in `compare` and its own `results_dir`, a targeted rerun that leaves the default results alone."""
    input:
        MAIN_TABLES + FIG1 + CURVES,
