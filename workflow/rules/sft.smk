# Stage 2: the masked-diffusion SFT warm start of each (task, seed), from the base model.


rule sft:
    input:
        train=data_path("{task}", "train"),
        model=base_model_inputs(),
    output:
        directory(sft_dir("{task}", "{seed}")),
    params:
        model=base_model(),
        flags=flags({k: v for k, v in C["sft"].items() if k != "enabled"}),
        model_flags=model_flags("sft"),
    log:
        f"{LOGS}/sft/{{task}}/seed{{seed}}.log",
    threads: res("sft", "threads")
    resources:
        mem_mb=res("sft", "mem_mb"),
        runtime=res("sft", "runtime"),
        gpu=res("sft", "gpu"),
    shell:
        "{EGSPO} sft --model {params.model} --task {wildcards.task} --train {input.train} --out {output} "
        "--seed {wildcards.seed} --style {STYLE} {params.flags} {params.model_flags} > {log} 2>&1"
