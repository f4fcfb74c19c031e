# Ablations, their own targets (not in `rule all`):
#   snakemake --cores all --profile profiles/local ablate_reward      # one-step greedy vs rollout M=4 vs none
#   snakemake --cores all --profile profiles/local ablate_selection   # entropy vs uniform vs random vs all steps
# Each compares its methods with the model before RL, under both checkpoint protocols.


rule report_ablation:
    input:
        lambda wc: PLAN.eval_metrics(PLAN.ablation_methods(wc.ablation)),
    output:
        csv=shown(f"{R}/tables/ablation_{{ablation}}.csv", "ablation_table", "Ablations"),
        md=f"{R}/tables/ablation_{{ablation}}.md",
        gains_csv=shown(f"{R}/tables/ablation_{{ablation}}_gains.csv", "ablation_gains_table", "Ablations"),
        gains_md=f"{R}/tables/ablation_{{ablation}}_gains.md",
        png=shown(f"{R}/figures/ablation_{{ablation}}.png", "ablation", "Ablations"),
        pdf=f"{R}/figures/ablation_{{ablation}}.pdf",
    params:
        grid=lambda wc: accuracy_flags(PLAN, PLAN.ablation_methods(wc.ablation)),
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
        + PATHS.results_files("figures/ablation_reward", ["png", "pdf"]),


rule ablate_selection:
    input:
        PATHS.results_files("tables/ablation_selection", ["csv", "md"])
        + PATHS.results_files("figures/ablation_selection", ["png", "pdf"]),
