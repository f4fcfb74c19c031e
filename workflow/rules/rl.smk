# Stage 3: RL post-training of each (train task, method, seed) from the model before RL. Evaluated tasks map to train
# tasks through config key `train_tasks` (HumanEval and MBPP share the KodCode run in the paper preset).
# The declared output is the LAST checkpoint only: earlier checkpoints are not outputs, so Snakemake never deletes
# them, and a restarted or requeued job (`egspo rl` on the same directory) resumes from the newest one; a job rerun
# because its settings changed starts over (`--on-settings-change restart` discards checkpoints of other settings).
# With gpu >= 2 (or nodes >= 2) the job runs under `accelerate launch` (egspo.workflow.shell.Launcher).

from egspo.workflow.config import ConfigError
from egspo.workflow.shell import check_processes, rl_args, rl_signature


def rl_command(wc, resources):
    settings = PLAN.method_settings(wc.method, wc.task)
    if int(wc.last) != settings["max_steps"]:
        raise ConfigError(f"rl output step_{wc.last} of method {wc.method!r} is not its final "
                          f"checkpoint step_{settings['max_steps']} (max_steps)")
    gpus, nodes = int(resources.gpu), int(resources.nodes)
    check_processes("rl", gpus, nodes, settings["batch_size"])
    return LAUNCHER.command("rl", gpus, nodes, rl_args(PLAN, wc.task, wc.method, wc.seed))


rule rl:
    input:
        train=data_path("{task}", "train"),
        model=lambda wc: PLAN.start_model_inputs(wc.task, wc.seed),
    output:
        directory(PATHS.checkpoint_dir("{task}", "{method}", "{seed}", "{last}")),
    params:
        # What the run computes, as a plain function of the wildcards: Snakemake cannot evaluate the `command`
        # param (it needs resources) when it decides what to rerun, so without this a changed hyper-parameter would
        # silently keep the old run.
        settings=lambda wc: rl_signature(PLAN, wc.task, wc.method, wc.seed),
        command=rl_command,
    log:
        f"{LOGS}/rl/{{task}}/{{method}}/seed{{seed}}_step{{last}}.log",
    threads: PLAN.resource("rl", "threads")
    resources:
        **PLAN.resources("rl", multi_node=True),
    shell:
        "export OMP_NUM_THREADS={threads}; {params.command} > {log} 2>&1"
