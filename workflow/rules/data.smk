# Stage 1: train / validation / test rows of a task, and the tiny model (built once, shared by every run).


rule data:
    output:
        train=data_path("{task}", "train"),
        validation=data_path("{task}", "validation"),
        test=data_path("{task}", "test"),
    params:
        out_dir=lambda wc: f"{W}/data/{wc.task}",
        flags=flags(C["data"]),
    log:
        f"{LOGS}/data/{{task}}.log",
    threads: res("data", "threads")
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=res("data", "runtime"),
        gpu=res("data", "gpu"),
    shell:
        "{EGSPO} data --task {wildcards.task} --out-dir {params.out_dir} {params.flags} > {log} 2>&1"


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
        "{EGSPO} build-model --out {output} {params.flags} > {log} 2>&1"
