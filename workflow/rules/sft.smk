# Stage 2: the masked-diffusion SFT warm start of each train task and seed, from the base model (or one shared warm
# start on s1K-style data when `sft.data` is a path: run name `s1k`).


def sft_args(wc):
    """Arguments of `egspo sft` for run {wc.task} (a train task, or `s1k`)."""
    options = {k: v for k, v in sft_settings(wc.task).items() if k not in ("enabled", "data", "seed")}
    if wc.task == "s1k":
        data = f"--format s1k --train {shlex.quote(C['sft']['data'])}"
    else:
        data = f"--task {wc.task} --train {data_path(wc.task, 'train')}"
    return (f"sft --model {base_model()} {data} --out {sft_dir_of_run(wc.task, wc.seed)} --seed {wc.seed} "
            f"--style {STYLE} {flags(options)} {model_flags('sft')}")


def sft_dir_of_run(run, seed):
    return f"{W}/sft/{run}/seed{seed}"


def sft_train_input(wc):
    return [C["sft"]["data"]] if wc.task == "s1k" else [data_path(wc.task, "train")]


rule sft:
    input:
        train=sft_train_input,
        model=base_model_inputs(),
    output:
        directory(sft_dir_of_run("{task}", "{seed}")),
    params:
        settings=lambda wc: sft_args(wc),  # evaluable when Snakemake decides reruns (see rl.smk)
        command=lambda wc, resources: launch_command("sft", resources, sft_args(wc)),
    log:
        f"{LOGS}/sft/{{task}}/seed{{seed}}.log",
    threads: res("sft", "threads")
    resources:
        mem_mb=res("sft", "mem_mb"),
        runtime=res("sft", "runtime"),
        gpu=res("sft", "gpu"),
        nodes=res("sft", "nodes", 1),
    shell:
        "export OMP_NUM_THREADS={threads}; {params.command} > {log} 2>&1"
