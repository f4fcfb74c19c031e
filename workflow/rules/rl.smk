# Stage 3: RL post-training of each (task, method, seed) from the model before RL.
# The declared output is the LAST checkpoint only: earlier checkpoints are not outputs, so Snakemake never deletes
# them, and a restarted or requeued job (`egspo rl` on the same directory) resumes from the newest one.


def rl_flags(wildcards):
    settings = method_settings(wildcards.method)
    if int(wildcards.last) != settings["max_steps"]:
        raise WorkflowError(f"rl output step_{wildcards.last} of method {wildcards.method!r} is not its final "
                            f"checkpoint step_{settings['max_steps']} (max_steps)")
    return flags(settings)


rule rl:
    input:
        train=data_path("{task}", "train"),
        model=lambda wc: start_model_inputs(wc.task, wc.seed),
    output:
        directory(f"{W}/rl/{{task}}/{{method}}/seed{{seed}}/checkpoints/step_{{last}}"),
    params:
        model=lambda wc: start_model(wc.task, wc.seed),
        out=lambda wc: rl_dir(wc.task, wc.method, wc.seed),
        flags=rl_flags,
        model_flags=model_flags("rl"),
    log:
        f"{LOGS}/rl/{{task}}/{{method}}/seed{{seed}}_step{{last}}.log",
    threads: res("rl", "threads")
    resources:
        mem_mb=res("rl", "mem_mb"),
        runtime=res("rl", "runtime"),
        gpu=res("rl", "gpu"),
    shell:
        "{EGSPO} rl --model {params.model} --task {wildcards.task} --train {input.train} --out {params.out} "
        "--seed {wildcards.seed} --style {STYLE} {params.flags} {params.model_flags} > {log} 2>&1"
