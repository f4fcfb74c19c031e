# Stage 1: train / validation / test rows of a task, and the tiny model (built once, shared by every run).

from egspo.workflow.plan import FULL_SPLIT_TASKS, PARTIAL_SPLITS, TINY_MODEL_KEYS
from egspo.workflow.shell import data_flags


rule data:
    """train / validation / test of a task that has all three (one job: the validation rows carved from train)."""
    output:
        train=data_path("{task}", "train"),
        validation=data_path("{task}", "validation"),
        test=data_path("{task}", "test"),
    params:
        out_dir=lambda wc: PATHS.data_dir(wc.task),
        flags=lambda wc: data_flags(C["data"], wc.task),
    log:
        f"{LOGS}/data/{{task}}.log",
    wildcard_constraints:
        task="|".join(FULL_SPLIT_TASKS),
    threads: PLAN.resource("data", "threads")
    resources:
        **PLAN.resources("data"),
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "{EGSPO} data --task {wildcards.task} --out-dir {params.out_dir} {params.flags} > {log} 2>&1"


rule data_split:
    """One split of a task that lacks some (HumanEval: test; KodCode: train, validation); same flags as `data`."""
    output:
        data_path("{task}", "{split}"),
    params:
        out_dir=lambda wc: PATHS.data_dir(wc.task),
        flags=lambda wc: data_flags(C["data"], wc.task),
    log:
        f"{LOGS}/data/{{task}}_{{split}}.log",
    wildcard_constraints:
        task="|".join(PARTIAL_SPLITS),
    threads: PLAN.resource("data", "threads")
    resources:
        **PLAN.resources("data"),
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "{EGSPO} data --task {wildcards.task} --splits {wildcards.split} --out-dir {params.out_dir} {params.flags} "
        "> {log} 2>&1"


rule build_model:
    output:
        directory(PATHS.init_model),
    params:
        flags=flags({k: C["model"][k] for k in TINY_MODEL_KEYS if k in C["model"]}),
    log:
        PATHS.log("build_model"),
    threads: PLAN.resource("build_model", "threads")
    resources:
        **PLAN.resources("build_model"),
    shell:
        "export OMP_NUM_THREADS={threads}; {EGSPO} build-model --out {output} {params.flags} > {log} 2>&1"
