# Ablations and sweeps: part of `rule all` where config key `evidence_in_all` is true (the tiny preset), else only
# their own targets (the paper preset: GPU hours, docs/cluster.md):
#   snakemake --cores all --profile profiles/local ablate_reward      # one-step greedy vs rollout M=4 vs none
#   snakemake --cores all --profile profiles/local ablate_selection   # entropy vs uniform vs random vs all steps
#   snakemake --cores all --profile profiles/local ablate_fidelity    # principled vs the authors' code exactly
#   snakemake --cores all --profile profiles/local sweep_k sweep_lambda
#   snakemake --cores all --profile profiles/local paper_evidence     # every ablation and sweep
# Each ablation compares its methods with the model before RL, under both checkpoint protocols; each sweep plots
# accuracy against its setting (config key `sweeps.<name>`: methods, the setting, the tasks it runs on).


def ablation_tasks(name):
    """The tasks of ablation `name` (config key `ablations.<name>.tasks`, default every task) among this run's."""
    wanted = C["ablations"][name].get("tasks", TASKS)
    return [t for t in TASKS if t in wanted]


rule report_ablation:
    input:
        lambda wc: PLAN.eval_metrics(PLAN.ablation_methods(wc.ablation), tasks=ablation_tasks(wc.ablation)),
    output:
        csv=shown(f"{R}/tables/ablation_{{ablation}}.csv", "ablation_table", "Ablations"),
        md=f"{R}/tables/ablation_{{ablation}}.md",
        gains_csv=shown(f"{R}/tables/ablation_{{ablation}}_gains.csv", "ablation_gains_table", "Ablations"),
        gains_md=f"{R}/tables/ablation_{{ablation}}_gains.md",
        png=shown(f"{R}/figures/ablation_{{ablation}}.png", "ablation", "Ablations"),
        pdf=f"{R}/figures/ablation_{{ablation}}.pdf",
    params:
        grid=lambda wc: accuracy_flags(PLAN, PLAN.ablation_methods(wc.ablation), ablation_tasks(wc.ablation),
                                       evidence=True),
    log:
        f"{LOGS}/report/ablation_{{ablation}}.log",
    wildcard_constraints:
        ablation="|".join(C["ablations"]),
    threads: PLAN.resource("report", "threads")
    resources:
        **PLAN.resources("report"),
    shell:
        "{EGSPO} report accuracy {params.grid} --reference {START} "
        "--table {R}/tables/ablation_{wildcards.ablation} --gains {R}/tables/ablation_{wildcards.ablation}_gains "
        "--figure {R}/figures/ablation_{wildcards.ablation} --title 'Ablation: {wildcards.ablation}' > {log} 2>&1"


rule ablate_reward:
    input:
        PATHS.results_files("tables/ablation_reward", ["csv", "md"])
        + PATHS.results_files("figures/ablation_reward", ["png", "pdf"])
        # its work too, so a fresh clone (results/ committed) reruns it
        + PLAN.eval_metrics(PLAN.ablation_methods("reward"), tasks=ablation_tasks("reward")),


def configured(section, name):
    """Config key `<section>.<name>`, or an error naming it (a preset need not define every ablation or sweep;
    the targets below look theirs up only when asked for)."""
    if name not in C.get(section, {}):
        raise ValueError(f"config key '{section}.{name}' is not set in preset {config['preset']!r}: "
                         f"add it (see the tiny preset) to run this target")
    return C[section][name]


rule ablate_fidelity:
    """Principled semantics vs the authors' code exactly (issue 11's switch), both tasks."""
    input:
        lambda wc: configured("ablations", "fidelity") and (
            PATHS.results_files("tables/ablation_fidelity", ["csv", "md"])
            + PATHS.results_files("figures/ablation_fidelity", ["png", "pdf"])
            # its work too, so a fresh clone (results/ committed) reruns it
            + PLAN.eval_metrics(PLAN.ablation_methods("fidelity"), tasks=ablation_tasks("fidelity"))),


rule ablate_selection:
    input:
        PATHS.results_files("tables/ablation_selection", ["csv", "md"])
        + PATHS.results_files("figures/ablation_selection", ["png", "pdf"])
        # its work too, so a fresh clone (results/ committed) reruns it
        + PLAN.eval_metrics(PLAN.ablation_methods("selection"), tasks=ablation_tasks("selection")),


import shlex

SWEEPS = C.get("sweeps", {})


def sweep_tasks(name):
    """The tasks of sweep `name` (config key `sweeps.<name>.tasks`, default every task) among this run's tasks."""
    wanted = SWEEPS[name].get("tasks", TASKS)
    return [t for t in TASKS if t in wanted]


def sweep_points(name):
    """`--sweep METHOD=VALUE` flags: each method's merged value of the swept setting; K of an all-steps method is
    labelled all (T)."""
    spec, points = SWEEPS[name], []
    task = sweep_tasks(name)[0]
    for method in spec["methods"]:
        settings = PLAN.method_settings(method, task)
        if spec["parameter"] not in settings:
            raise ValueError(f"config key 'sweeps.{name}.parameter' {spec['parameter']!r} is not a setting of "
                             f"method {method!r}")
        value = settings[spec["parameter"]]
        label = f"all ({value})" if spec["parameter"] == "k" and settings.get("selection") == "all" else f"{value:g}"
        points.append(shlex.quote(f"{method}={label}"))
    return " ".join(points)


def sweep_outputs(name):
    """The sweep's table and figure and, so that a fresh clone (results/ committed) reruns it, its evaluations."""
    return (PATHS.results_files(f"tables/sweep_{name}", ["csv", "md"])
            + PATHS.results_files(f"figures/sweep_{name}", ["png", "pdf"])
            + PLAN.eval_metrics(SWEEPS[name]["methods"], tasks=sweep_tasks(name)))


rule report_sweep:
    input:
        lambda wc: PLAN.eval_metrics(SWEEPS[wc.sweep]["methods"], tasks=sweep_tasks(wc.sweep)),
    output:
        csv=shown(f"{R}/tables/sweep_{{sweep}}.csv", "sweep_table", "Sweeps"),
        md=f"{R}/tables/sweep_{{sweep}}.md",
        by_length_csv=shown(f"{R}/tables/sweep_{{sweep}}_by_length.csv", "sweep_by_length_table", "Sweeps"),
        by_length_md=f"{R}/tables/sweep_{{sweep}}_by_length.md",
        png=shown(f"{R}/figures/sweep_{{sweep}}.png", "sweep", "Sweeps"),
        pdf=f"{R}/figures/sweep_{{sweep}}.pdf",
    params:
        grid=lambda wc: accuracy_flags(PLAN, SWEEPS[wc.sweep]["methods"], sweep_tasks(wc.sweep), evidence=True),
        points=lambda wc: sweep_points(wc.sweep),
        name=lambda wc: SWEEPS[wc.sweep]["parameter"],
    log:
        f"{LOGS}/report/sweep_{{sweep}}.log",
    wildcard_constraints:
        sweep="|".join(SWEEPS) or "no_sweep_configured",
    threads: PLAN.resource("report", "threads")
    resources:
        **PLAN.resources("report"),
    shell:
        "{EGSPO} report accuracy {params.grid} --table {R}/tables/sweep_{wildcards.sweep}_by_length "
        "--sweep {params.points} --sweep-name {params.name} --sweep-table {R}/tables/sweep_{wildcards.sweep} "
        "--sweep-figure {R}/figures/sweep_{wildcards.sweep} --title 'Sweep: {wildcards.sweep}' > {log} 2>&1"


rule sweep_k:
    input:
        lambda wc: configured("sweeps", "k") and sweep_outputs("k"),


rule sweep_lambda:
    input:
        lambda wc: configured("sweeps", "lambda") and sweep_outputs("lambda"),


# Every ablation and sweep of the configuration (tables, figures and, per ablation, its compute table), with the
# evaluations they read (so a fresh clone, results/ committed, reruns them).
EVIDENCE = ([f for name in C["ablations"] for f in PATHS.results_files(f"tables/ablation_{name}", ["csv", "md"])
             + PATHS.results_files(f"figures/ablation_{name}", ["png", "pdf"])
             + PATHS.results_files(f"tables/ablation_{name}_compute", ["csv", "md"])
             + PLAN.eval_metrics(PLAN.ablation_methods(name), tasks=ablation_tasks(name))]
            + [f for name in SWEEPS for f in sweep_outputs(name)])


rule paper_evidence:
    input:
        EVIDENCE,


rule report_ablation_compute:
    input:
        lambda wc: [f for t in ablation_tasks(wc.ablation) for m in PLAN.ablation_methods(wc.ablation)
                    if m != START for f in [PLAN.final_checkpoint(t, m, s) for s in SEEDS]],
    output:
        csv=shown(f"{R}/tables/ablation_{{ablation}}_compute.csv", "compute_table", "Ablations"),
        md=f"{R}/tables/ablation_{{ablation}}_compute.md",
    params:
        grid=lambda wc: compute_flags(PLAN.ablation_methods(wc.ablation),
                                      [PLAN.train_task(t) for t in ablation_tasks(wc.ablation)]),
    log:
        f"{LOGS}/report/ablation_{{ablation}}_compute.log",
    wildcard_constraints:
        ablation="|".join(C["ablations"]),
    threads: PLAN.resource("report", "threads")
    resources:
        **PLAN.resources("report"),
    shell:
        "{EGSPO} report compute {params.grid} --table {R}/tables/ablation_{wildcards.ablation}_compute > {log} 2>&1"
