# Stage 2: the masked-diffusion SFT warm start of each train task and seed, from the base model (or one shared warm
# start on s1K-style data when `sft.data` is a path: run name `s1k`).

from egspo.workflow.shell import sft_args


def sft_train_input(wc):
    return [C["sft"]["data"]] if wc.task == "s1k" else [data_path(wc.task, "train")]


rule sft:
    input:
        train=sft_train_input,
        model=PLAN.base_model_inputs(),
    output:
        directory(PATHS.sft_dir("{task}", "{seed}")),
    params:
        settings=lambda wc: sft_args(PLAN, wc.task, wc.seed),  # evaluable when Snakemake decides reruns (rl.smk)
        command=lambda wc, resources: LAUNCHER.command("sft", int(resources.gpu), int(resources.nodes),
                                                       sft_args(PLAN, wc.task, wc.seed)),
    log:
        f"{LOGS}/sft/{{task}}/seed{{seed}}.log",
    threads: PLAN.resource("sft", "threads")
    resources:
        **PLAN.resources("sft", multi_node=True),
    shell:
        "export OMP_NUM_THREADS={threads}; {params.command} > {log} 2>&1"
