# Stage 4: greedy evaluation, one job per (task, method) covering every seed's checkpoints x generation lengths x
# splits (one `egspo eval` process: the seeds share its start-up, each model is loaded once); the model before RL is
# method `sft` (or `base` without SFT) with its single checkpoint, one job per seed that has its own (one in all when
# every seed shares the warm start); the ablation / sweep variants (methods outside `compare`) are evaluated as
# config key `eval.variants` says (the tiny preset: their final checkpoint at the training length). The rules are
# generated from egspo.workflow.rules.eval_rules (why there are several: see that module); every output file is
# declared, so the report rules' inputs stay exact. Also the trajectories behind Figure 2 and the exact gradient
# check.

import re
import shlex

from egspo.workflow.rules import eval_outputs, job_seeds


def eval_model_inputs(wc):
    """What the evaluated models come from: every seed's final checkpoint (the rl rule's output) or the start model
    (the per-seed rule `eval_start`)."""
    if wc.method == START:
        return PLAN.start_model_inputs(wc.task, wc.seed)
    return [PLAN.final_checkpoint(wc.task, wc.method, s) for s in PLAN.seeds]


def eval_model_flags(wc, ckpts):
    """`--model NAME=DIR` for the checkpoints `ckpts` that one job evaluates: the start model's under the job's own
    out-dir (its seed's folder), an RL method's as `seed<s>/<ckpt>` under the method's folder, tagged with the seed."""
    if wc.method == START:
        return (f"--model {shlex.quote(f'{START}={PLAN.start_model(wc.task, wc.seed)}')} "
                f"--model-tag {shlex.quote(f'{START}:seed={wc.seed}')}")
    out = []
    for seed in PLAN.seeds:
        for c in ckpts:
            name = f"{PATHS.seed_dir(seed)}/{c}"
            out += [f"--model {shlex.quote(f'{name}={PLAN.rl_dir(wc.task, wc.method, seed)}/checkpoints/{c}')}",
                    f"--model-tag {shlex.quote(f'{name}:seed={seed}')}"]
    return " ".join(out)


def eval_out_dir(wc):
    """The start model's seed folder, or an RL method's folder (its seeds' names nest under it)."""
    if wc.method == START:
        return PATHS.eval_dir(wc.task, wc.method, wc.seed)
    return PATHS.eval_method_dir(wc.task, wc.method)


def length_flags(lengths):
    """`--gen-length L... --steps T...` of one evaluation rule (T = L * eval.steps_per_token)."""
    return (f"--gen-length {' '.join(str(n) for n in lengths)} "
            f"--steps {' '.join(str(PLAN.eval_steps(n)) for n in lengths)}")


for _eval in EVAL_RULES:

    rule:
        name:
            _eval.name
        input:
            **{split: (lambda wc, split=split: data_path(wc.task, split)) for split in _eval.splits},
            model=eval_model_inputs,
        output:
            eval_outputs(PLAN, _eval),
        wildcard_constraints:
            method="|".join(re.escape(m) for m in _eval.methods),
            task="|".join(re.escape(t) for t in _eval.tasks),
        params:
            models=lambda wc, ckpts=_eval.ckpts: eval_model_flags(wc, ckpts),
            # Everything that differs between the generated rules is a param bound here: Snakemake evaluates a
            # `shell:` expression again when the job runs, in module scope, where `_eval` is the loop's last rule.
            data=lambda wc, input, splits=_eval.splits: " ".join(f"--data {s}={input[s]}" for s in splits),
            lengths=length_flags(_eval.lengths),
            out_dir=eval_out_dir,
            block_length=C["eval"]["block_length"],
            batch_size=C["eval"]["batch_size"],
        log:
            f"{LOGS}/eval/{{task}}/{{method}}/{'seed{seed}' if _eval.per_seed else 'seeds'}{_eval.log_suffix}.log",
        threads: PLAN.resource("eval", "threads")
        resources:
            # `resources.eval.runtime` is per seed: a job evaluates its checkpoints of every seed of the method
            **{**PLAN.resources("eval"), "runtime": PLAN.resource("eval", "runtime") * len(job_seeds(PLAN, _eval))},
        shell:
            "export OMP_NUM_THREADS={threads}; {EGSPO} eval --task {wildcards.task} {params.models} {params.data} "
            "{params.lengths} --block-length {params.block_length} --batch-size {params.batch_size} "
            "--style {STYLE} " + model_load_flags(C["model"]) + " --out-dir {params.out_dir} "
            "--tag method={wildcards.method} > {log} 2>&1"


def trace_flags(task):
    settings = PLAN.method_settings(C["trace"]["method"], task)
    return flags({"n": C["trace"]["n"], "seed": C["trace"]["seed"],
                  **{k: settings[k] for k in ("k", "gen_length", "steps", "block_length", "temperature")}})


rule trace:
    input:
        data=lambda wc: data_path(wc.task, C["trace"]["split"]),
        model=lambda wc: PLAN.final_checkpoint(wc.task, C["trace"]["method"], C["trace"]["seed"]),
    output:
        PATHS.trace_path("{task}"),
    params:
        flags=lambda wc: trace_flags(wc.task),
    log:
        f"{LOGS}/trace/{{task}}.log",
    threads: PLAN.resource("trace", "threads")
    resources:
        **PLAN.resources("trace"),
    shell:
        "export OMP_NUM_THREADS={threads}; {EGSPO} trace --model {input.model} --task {wildcards.task} "
        "--data {input.data} --style {STYLE} --out {output} {params.flags} " + model_load_flags(C["model"])
        + " > {log} 2>&1"


rule gradcheck:
    output:
        PATHS.gradcheck_csv,
    params:
        flags=flags(C["gradcheck"]),
    log:
        PATHS.log("gradcheck"),
    threads: PLAN.resource("gradcheck", "threads")
    resources:
        **PLAN.resources("gradcheck"),
    shell:
        "export OMP_NUM_THREADS={threads}; {EGSPO} gradcheck --out {output} {params.flags} > {log} 2>&1"
