# Ablations, their own targets (not in `rule all`):
#   snakemake --cores all --profile profiles/local ablate_reward      # one-step greedy vs rollout M=4 vs none
#   snakemake --cores all --profile profiles/local ablate_selection   # entropy vs uniform vs random vs all steps
# Each compares its methods with the model before RL, under both checkpoint protocols.

ABLATIONS = tuple(C["ablations"])


def ablation_methods(name):
    return [START] + [m for m in C["ablations"][name]["methods"] if m != START]


rule report_ablation:
    input:
        lambda wc: eval_metrics(ablation_methods(wc.ablation)),
    output:
        csv=f"{R}/tables/ablation_{{ablation}}.csv",
        md=f"{R}/tables/ablation_{{ablation}}.md",
        gains_csv=f"{R}/tables/ablation_{{ablation}}_gains.csv",
        gains_md=f"{R}/tables/ablation_{{ablation}}_gains.md",
        png=report(f"{R}/figures/ablation_{{ablation}}.png", caption="../report/ablation.rst", category="Ablations"),
        pdf=f"{R}/figures/ablation_{{ablation}}.pdf",
    params:
        grid=lambda wc: accuracy_flags(ablation_methods(wc.ablation)),
    log:
        f"{LOGS}/report/ablation_{{ablation}}.log",
    wildcard_constraints:
        ablation="|".join(ABLATIONS),
    threads: res("report", "threads")
    resources:
        mem_mb=res("report", "mem_mb"),
        runtime=res("report", "runtime"),
        gpu=res("report", "gpu"),
    shell:
        "{EGSPO} report accuracy {params.grid} --reference {START} "
        "--table {R}/tables/ablation_{wildcards.ablation} --gains {R}/tables/ablation_{wildcards.ablation}_gains "
        "--figure {R}/figures/ablation_{wildcards.ablation} --title 'Ablation: {wildcards.ablation}' > {log} 2>&1"


rule ablate_reward:
    input:
        results("tables/ablation_reward", ["csv", "md"]) + results("figures/ablation_reward", ["png", "pdf"]),


rule ablate_selection:
    input:
        results("tables/ablation_selection", ["csv", "md"]) + results("figures/ablation_selection", ["png", "pdf"]),
