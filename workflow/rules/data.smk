# Stage 1: train / validation / test rows of a task, and the tiny model (built once, shared by every run).


FULL_TASKS = [t for t in ("sudoku", "countdown", "gsm8k", "math500", "mbpp") if t not in PARTIAL_SPLITS]


rule data:
    """train / validation / test of a task that has all three (one job: the validation rows carved from train)."""
    output:
        train=data_path("{task}", "train"),
        validation=data_path("{task}", "validation"),
        test=data_path("{task}", "test"),
    params:
        out_dir=lambda wc: f"{W}/data/{wc.task}",
        flags=flags(C["data"]),
    log:
        f"{LOGS}/data/{{task}}.log",
    wildcard_constraints:
        task="|".join(FULL_TASKS),
    threads: res("data", "threads")
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=res("data", "runtime"),
        gpu=res("data", "gpu"),
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "{EGSPO} data --task {wildcards.task} --out-dir {params.out_dir} {params.flags} > {log} 2>&1"


rule data_split:
    """One split of a task that lacks some (HumanEval: test; KodCode: train, validation); same flags as `data`."""
    output:
        data_path("{task}", "{split}"),
    params:
        out_dir=lambda wc: f"{W}/data/{wc.task}",
        flags=flags(C["data"]),
    log:
        f"{LOGS}/data/{{task}}_{{split}}.log",
    wildcard_constraints:
        task="|".join(PARTIAL_SPLITS),
    threads: res("data", "threads")
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=res("data", "runtime"),
        gpu=res("data", "gpu"),
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "{EGSPO} data --task {wildcards.task} --splits {wildcards.split} --out-dir {params.out_dir} {params.flags} "
        "> {log} 2>&1"


rule build_model:
    output:
        directory(INIT_MODEL),
    params:
        flags=flags({k: C["model"][k] for k in TINY_MODEL_KEYS if k in C["model"]}),
    log:
        f"{LOGS}/build_model.log",
    threads: res("build_model", "threads")
    resources:
        mem_mb=res("build_model", "mem_mb"),
        runtime=res("build_model", "runtime"),
        gpu=res("build_model", "gpu"),
    shell:
        "export OMP_NUM_THREADS={threads}; {EGSPO} build-model --out {output} {params.flags} > {log} 2>&1"
