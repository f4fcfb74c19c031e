# Stage 3: RL post-training of each (train task, method, seed) from the model before RL. Evaluated tasks map to train
# tasks through config key `train_tasks` (HumanEval and MBPP share the KodCode run in the paper preset).
# The declared output is the LAST checkpoint only: earlier checkpoints are not outputs, so Snakemake never deletes
# them, and a restarted or requeued job (`egspo rl` on the same directory) resumes from the newest one; a job rerun
# because its settings changed starts over (`--on-settings-change restart` discards checkpoints of other settings).
# With gpu >= 2 (or nodes >= 2) the job runs under `accelerate launch` (see launch_command in common.smk).


def rl_args(wc, resources):
    settings = method_settings(wc.method, wc.task)
    if int(wc.last) != settings["max_steps"]:
        raise WorkflowError(f"rl output step_{wc.last} of method {wc.method!r} is not its final "
                            f"checkpoint step_{settings['max_steps']} (max_steps)")
    check_processes("rl", resources, settings["batch_size"])
    return (f"rl --model {start_model(wc.task, wc.seed)} --task {wc.task} --train {data_path(wc.task, 'train')} "
            f"--out {rl_dir(wc.task, wc.method, wc.seed)} --seed {wc.seed} --style {STYLE} {flags(settings)} "
            f"--on-settings-change restart "
            f"{model_flags('rl')}")


def rl_settings_signature(wc):
    return (f"{start_model(wc.task, wc.seed)} {data_path(wc.task, 'train')} {STYLE} "
            f"{flags(method_settings(wc.method, wc.task))} {model_flags('rl')}")


rule rl:
    input:
        train=data_path("{task}", "train"),
        model=lambda wc: start_model_inputs(wc.task, wc.seed),
    output:
        directory(f"{W}/rl/{{task}}/{{method}}/seed{{seed}}/checkpoints/step_{{last}}"),
    params:
        # What the run computes, as a plain function of the wildcards: Snakemake cannot evaluate the `command`
        # param (it needs resources) when it decides what to rerun, so without this a changed hyper-parameter would
        # silently keep the old run.
        settings=lambda wc: rl_settings_signature(wc),
        command=lambda wc, resources: launch_command("rl", resources, rl_args(wc, resources)),
    log:
        f"{LOGS}/rl/{{task}}/{{method}}/seed{{seed}}_step{{last}}.log",
    threads: res("rl", "threads")
    resources:
        mem_mb=res("rl", "mem_mb"),
        runtime=res("rl", "runtime"),
        gpu=res("rl", "gpu"),
        nodes=res("rl", "nodes", 1),
    shell:
        "export OMP_NUM_THREADS={threads}; {params.command} > {log} 2>&1"
