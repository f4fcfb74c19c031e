# Stage 5: tables (CSV + Markdown) and figures (PNG + PDF) under results/. `snakemake --report results/report.html`
# collects every table (CSV) and figure (PNG) with its caption in workflow/report/ and the workflow description
# workflow/report/workflow.rst.

from egspo.workflow.shell import accuracy_flags

CAPTIONS = "../report"


def shown(path, caption, category):
    """`path` registered for `snakemake --report` with caption workflow/report/<caption>.rst."""
    return report(path, caption=f"{CAPTIONS}/{caption}.rst", category=category)


MAIN_TABLES = (PATHS.results_files("tables/main", ["csv", "md"]) + PATHS.results_files("tables/gains", ["csv", "md"])
               + PATHS.results_files("tables/pairs", ["csv", "md"]) + [f"{R}/tables/per_seed.csv"]
               + [f"{R}/environment.json"])
# method-vs-method pairs (a - b) of config key `pairs` whose two methods are both compared in this run
PAIRS = [f"{a}-{b}" for a, b in C.get("pairs", []) if a in C["compare"] and b in C["compare"]]
FIG1 = PATHS.results_files("figures/fig1_overview", ["png", "pdf"])
CURVES = PATHS.results_files("figures/training_curves", ["png", "pdf"])
FIG2 = PATHS.results_files("figures/fig2_step_selection", ["png", "pdf"])
GRADCHECK_TABLE = PATHS.results_files("tables/gradcheck", ["csv", "md"])
COMPUTE_TABLE = PATHS.results_files("tables/compute", ["csv", "md"])
GRADCHECK_FIG = PATHS.results_files("figures/gradcheck", ["png", "pdf"])
RL_COMPARE = [m for m in C["compare"] if m != START]
# every table and figure of the default run (`rule all`)
DEFAULT_RESULTS = MAIN_TABLES + FIG1 + CURVES + FIG2 + GRADCHECK_TABLE + GRADCHECK_FIG + COMPUTE_TABLE
# the final checkpoint of every compared RL run (what the training curves read)
RL_FINALS = PLAN.rl_finals(RL_COMPARE)
# What results/ is made from. Targets of `all` too: results/ is committed, and without these a fresh clone would see
# up-to-date results with nothing missing and run no job; with them it reruns the work and then the report.
DEFAULT_WORK = (PLAN.eval_metrics(C["compare"]) + RL_FINALS + [PATHS.trace_path(t) for t in TASKS]
                + [PATHS.gradcheck_csv])


rule report_main:
    input:
        PLAN.eval_metrics(C["compare"]),
    output:
        main_csv=shown(f"{R}/tables/main.csv", "main_table", "Tables"),
        main_md=f"{R}/tables/main.md",
        gains_csv=shown(f"{R}/tables/gains.csv", "gains_table", "Tables"),
        gains_md=f"{R}/tables/gains.md",
        pairs_csv=shown(f"{R}/tables/pairs.csv", "pairs_table", "Tables"),
        pairs_md=f"{R}/tables/pairs.md",
        per_seed=shown(f"{R}/tables/per_seed.csv", "per_seed", "Tables"),
        fig_png=shown(f"{R}/figures/fig1_overview.png", "fig1_overview", "Figures"),
        fig_pdf=f"{R}/figures/fig1_overview.pdf",
        # versions, Python, the pinned instruction set and the processor the tables were made with
        environment=f"{R}/environment.json",
    params:
        grid=accuracy_flags(PLAN, C["compare"]),
        pairs=" ".join(PAIRS),
    log:
        f"{LOGS}/report/main.log",
    threads: PLAN.resource("report", "threads")
    resources:
        **PLAN.resources("report"),
    shell:
        "{EGSPO} report accuracy {params.grid} --reference {START} --paper-reference "
        "--table {R}/tables/main --gains {R}/tables/gains --figure {R}/figures/fig1_overview "
        "--per-seed {R}/tables/per_seed.csv --pairs {params.pairs} --pairs-table {R}/tables/pairs "
        "--environment {output.environment} --title 'Main results' > {log} 2>&1"


rule report_curves:
    input:
        RL_FINALS,
    output:
        png=shown(f"{R}/figures/training_curves.png", "training_curves", "Figures"),
        pdf=f"{R}/figures/training_curves.pdf",
    params:
        methods=" ".join(RL_COMPARE),
        tasks=" ".join(RL_TASKS),  # RL runs are per train task (kodcode, not humaneval / mbpp)
        seeds=" ".join(map(str, SEEDS)),
    log:
        f"{LOGS}/report/training_curves.log",
    threads: PLAN.resource("report", "threads")
    resources:
        **PLAN.resources("report"),
    shell:
        "{EGSPO} report curves --rl-dir {PATHS.rl_root} --tasks {params.tasks} --methods {params.methods} "
        "--seeds {params.seeds} --smooth 5 --figure {R}/figures/training_curves > {log} 2>&1"


def compute_flags(methods, rl_tasks=None):
    """`egspo report compute` grid flags for the RL runs of `methods` on `rl_tasks` (default every train task;
    time ratio against diffu-GRPO if run)."""
    methods = [m for m in methods if m != START]
    reference = " --reference diffu_grpo" if "diffu_grpo" in methods else ""
    tasks = list(dict.fromkeys(rl_tasks or RL_TASKS))
    return (f"--rl-dir {PATHS.rl_root} --tasks {' '.join(tasks)} --methods {' '.join(methods)} "
            f"--seeds {' '.join(map(str, SEEDS))}{reference}")


rule report_compute:
    input:
        RL_FINALS,
    output:
        csv=shown(f"{R}/tables/compute.csv", "compute_table", "Tables"),
        md=f"{R}/tables/compute.md",
    params:
        grid=compute_flags(C["compare"]),
    log:
        f"{LOGS}/report/compute.log",
    threads: PLAN.resource("report", "threads")
    resources:
        **PLAN.resources("report"),
    shell:
        "{EGSPO} report compute {params.grid} --table {R}/tables/compute > {log} 2>&1"


rule report_fig2:
    input:
        [PATHS.trace_path(t) for t in TASKS],
    output:
        png=shown(f"{R}/figures/fig2_step_selection.png", "fig2_step_selection", "Figures"),
        pdf=f"{R}/figures/fig2_step_selection.pdf",
    log:
        f"{LOGS}/report/fig2_step_selection.log",
    threads: PLAN.resource("report", "threads")
    resources:
        **PLAN.resources("report"),
    shell:
        "{EGSPO} report trace --traces {input} --figure {R}/figures/fig2_step_selection > {log} 2>&1"


rule report_gradcheck:
    input:
        PATHS.gradcheck_csv,
    output:
        csv=shown(f"{R}/tables/gradcheck.csv", "gradcheck_table", "Tables"),
        md=f"{R}/tables/gradcheck.md",
        png=shown(f"{R}/figures/gradcheck.png", "gradcheck", "Figures"),
        pdf=f"{R}/figures/gradcheck.pdf",
    log:
        f"{LOGS}/report/gradcheck.log",
    threads: PLAN.resource("report", "threads")
    resources:
        **PLAN.resources("report"),
    shell:
        "{EGSPO} report gradcheck --csv {input} --table {R}/tables/gradcheck --figure {R}/figures/gradcheck "
        "> {log} 2>&1"


rule evaluate_all:
    """Every evaluation of the configured grid, no report: with a narrowed grid from --config, a targeted rerun
    that leaves results/ alone."""
    input:
        PLAN.eval_metrics(C["compare"]),


rule compare_methods:
    """The method comparison alone (main table, paired differences, Figure 1, training curves): with a variant
    method in `compare`, a targeted rerun in its own results directory (egspo.workflow.variants). Its work is a
    target too, so on a fresh clone (results/ committed, work/ absent) it recomputes instead of doing nothing."""
    input:
        MAIN_TABLES + FIG1 + CURVES + PLAN.eval_metrics(C["compare"]) + RL_FINALS,
