# Stage 4: greedy evaluation of every (task, method, seed, checkpoint, generation length, split), the model before
# RL included as method `sft` (or `base` without SFT); and the trajectories behind Figure 2.


def eval_model(wc):
    """Path of the evaluated model: the model before RL, or an RL checkpoint directory."""
    if wc.method == START:
        if wc.ckpt != START:
            raise WorkflowError(f"method {START!r} has the single checkpoint {START!r}, not {wc.ckpt!r}")
        return start_model(wc.task, wc.seed)
    if wc.ckpt not in checkpoints(wc.method):
        raise WorkflowError(f"checkpoint {wc.ckpt!r} of method {wc.method!r} is not saved by its settings "
                            f"(saved: {', '.join(checkpoints(wc.method))})")
    return f"{rl_dir(wc.task, wc.method, wc.seed)}/checkpoints/{wc.ckpt}"


def eval_model_inputs(wc):
    """What the evaluated model comes from: the run's final checkpoint (the rl rule's output) or the start model."""
    if wc.method == START:
        return start_model_inputs(wc.task, wc.seed)
    return [final_checkpoint(wc.task, wc.method, wc.seed)]


rule eval:
    input:
        data=lambda wc: data_path(wc.task, wc.split),
        model=eval_model_inputs,
    output:
        generations=eval_stem("{task}", "{method}", "{seed}", "{ckpt}", "{length}", "{split}") + ".jsonl",
        metrics=eval_stem("{task}", "{method}", "{seed}", "{ckpt}", "{length}", "{split}") + ".metrics.json",
    params:
        model=eval_model,
        steps=lambda wc: eval_steps(int(wc.length)),
        block_length=C["eval"]["block_length"],
        batch_size=C["eval"]["batch_size"],
    log:
        f"{LOGS}/eval/{{task}}/{{method}}/seed{{seed}}/{{ckpt}}/len{{length}}_{{split}}.log",
    threads: res("eval", "threads")
    resources:
        mem_mb=res("eval", "mem_mb"),
        runtime=res("eval", "runtime"),
        gpu=res("eval", "gpu"),
    shell:
        "{EGSPO} eval --model {params.model} --task {wildcards.task} --data {input.data} "
        "--gen-length {wildcards.length} --steps {params.steps} --block-length {params.block_length} "
        "--batch-size {params.batch_size} --style {STYLE} --out {output.generations} --metrics {output.metrics} "
        "--tag method={wildcards.method} --tag seed={wildcards.seed} "
        "--tag ckpt={wildcards.ckpt} --tag split={wildcards.split} > {log} 2>&1"


def trace_settings():
    return method_settings(C["trace"]["method"])


rule trace:
    input:
        data=lambda wc: data_path(wc.task, C["trace"]["split"]),
        model=lambda wc: final_checkpoint(wc.task, C["trace"]["method"], C["trace"]["seed"]),
    output:
        f"{W}/trace/{{task}}.json",
    params:
        flags=lambda wc: flags({"n": C["trace"]["n"], "k": trace_settings()["k"],
                                "gen_length": trace_settings()["gen_length"], "steps": trace_settings()["steps"],
                                "block_length": trace_settings()["block_length"],
                                "temperature": trace_settings()["temperature"], "seed": C["trace"]["seed"]}),
    log:
        f"{LOGS}/trace/{{task}}.log",
    threads: res("trace", "threads")
    resources:
        mem_mb=res("trace", "mem_mb"),
        runtime=res("trace", "runtime"),
        gpu=res("trace", "gpu"),
    shell:
        "{EGSPO} trace --model {input.model} --task {wildcards.task} --data {input.data} --out {output} "
        "{params.flags} > {log} 2>&1"


rule gradcheck:
    output:
        f"{W}/gradcheck/gradcheck.csv",
    params:
        flags=flags(C["gradcheck"]),
    log:
        f"{LOGS}/gradcheck.log",
    threads: res("gradcheck", "threads")
    resources:
        mem_mb=res("gradcheck", "mem_mb"),
        runtime=res("gradcheck", "runtime"),
        gpu=res("gradcheck", "gpu"),
    shell:
        "{EGSPO} gradcheck --out {output} {params.flags} > {log} 2>&1"
