# Stage 4: greedy evaluation, one job per (task, method, seed) covering all its checkpoints x generation lengths x
# splits (one `egspo eval` process: each model loaded once); the model before RL is method `sft` (or `base` without
# SFT) with its single checkpoint. Also the trajectories behind Figure 2 and the exact gradient check.
#
# A rule's outputs are a fixed list, and the checkpoint list depends on the method and the task, so they are grouped
# by it: rule `eval_start` for the model before RL, rule `eval` for every RL method saving on the shared `rl`
# schedule (all of them unless a method overrides max_steps / save_every), rule `eval_{method}` for each other one;
# tasks with their own RL schedule (`task_settings`) get rules of their own (`eval_countdown`, ...). Every output
# file is declared, so the report rules' inputs (eval_metrics) stay exact.

import re


def method_groups(task):
    """[(rule name, methods, checkpoint names)] on `task`, covering START and every key of 'methods': the methods
    saving on the task's shared schedule (`rl`, with `task_settings.<task>.rl` over it) share rule `eval`."""
    base = deep_merge(C["rl"], task_settings(task, "rl"))
    shared = None
    if "max_steps" in base and "save_every" in base:
        shared = [f"step_{n}" for n in saved_steps(base)]
    groups = [("eval_start", [START], [START])]
    on_shared = [m for m in C["methods"] if checkpoints(m, task) == shared]
    if on_shared:
        groups += checkpoint_parts("eval", on_shared, shared)
    for m in C["methods"]:
        if m not in on_shared:
            groups += checkpoint_parts(f"eval_{m}", [m], checkpoints(m, task))
    return groups


def checkpoint_parts(name, methods, ckpts):
    """One group per `eval.checkpoints_per_job` consecutive checkpoints (all in one when null): on a cluster an
    evaluation job per checkpoint fits a Slurm time limit that a job over every checkpoint would not."""
    size = C["eval"].get("checkpoints_per_job") or len(ckpts)
    parts = [ckpts[i:i + size] for i in range(0, len(ckpts), size)]
    if len(parts) == 1:
        return [(name, methods, ckpts)]
    return [(f"{name}_part{i + 1}", methods, part) for i, part in enumerate(parts)]


def eval_outputs(method, ckpts, splits):
    """Every generations / metrics file of one (task, method, seed) job, `{task}` and `{seed}` left as wildcards."""
    return [eval_stem("{task}", method, "{seed}", ckpt, length, split) + ext
            for ckpt in ckpts for length in C["eval"]["gen_lengths"] for split in splits
            for ext in (".jsonl", ".metrics.json")]


def eval_rule_specs():
    """[(rule name, methods, tasks, checkpoint names, splits)]: tasks grouped by the evaluation splits they have
    (HumanEval: test only) and by their RL save schedules, methods by their checkpoints within a group. A group with
    fewer splits than configured gets a `_<splits>` suffix, a group of tasks with their own `task_settings.<task>.rl`
    a `_<tasks>` suffix; the group with every split and the shared schedule gets none."""
    groups = {}
    for task in TASKS:
        schedule = tuple(tuple(checkpoints(m, task)) for m in C["methods"])
        groups.setdefault((tuple(eval_splits(task)), schedule), []).append(task)
    specs = []
    for (splits, _), tasks in groups.items():
        suffix = "" if list(splits) == list(C["eval"]["splits"]) else "_" + "_".join(splits)
        if all(task_settings(t, "rl") for t in tasks):
            suffix += "_" + "_".join(tasks)
        specs += [(name + suffix, methods, tasks, ckpts, list(splits))
                  for name, methods, ckpts in method_groups(tasks[0])]
    return specs


def eval_model_inputs(wc):
    """What the evaluated models come from: the run's final checkpoint (the rl rule's output) or the start model."""
    if wc.method == START:
        return start_model_inputs(wc.task, wc.seed)
    return [final_checkpoint(wc.task, wc.method, wc.seed)]


def eval_model_flags(wc, ckpts):
    """`--model NAME=DIR` for the checkpoints `ckpts` of (task, method, seed) that one job evaluates."""
    if wc.method == START:
        pairs = [(START, start_model(wc.task, wc.seed))]
    else:
        pairs = [(c, f"{rl_dir(wc.task, wc.method, wc.seed)}/checkpoints/{c}") for c in ckpts]
    return " ".join(f"--model {shlex.quote(f'{name}={path}')}" for name, path in pairs)


EVAL_LENGTHS = " ".join(str(n) for n in C["eval"]["gen_lengths"])
EVAL_STEPS = " ".join(str(eval_steps(n)) for n in C["eval"]["gen_lengths"])

EVAL_RULE_SPECS = eval_rule_specs()
EVAL_RULES = [name for name, *_ in EVAL_RULE_SPECS]


def inherit_eval_set_resources(names):
    """Every generated evaluation rule takes the `--set-resources` (profile `set-resources`) entry of rule `eval`
    unless it has one of its own, so a profile need not know the generated names. Must run before the rules are
    defined: Snakemake applies these overrides when a rule is created."""
    overrides = getattr(workflow.resource_settings, "_parsed_overwrite_resources", None)
    if overrides is None or "eval" not in overrides:
        return
    for name in names:
        overrides.setdefault(name, overrides["eval"])


inherit_eval_set_resources(EVAL_RULES)

for _rule_name, _methods, _tasks, _ckpts, _splits in EVAL_RULE_SPECS:

    rule:
        name:
            _rule_name
        input:
            **{split: (lambda wc, split=split: data_path(wc.task, split)) for split in _splits},
            model=eval_model_inputs,
        output:
            eval_outputs("{method}", _ckpts, _splits),
        wildcard_constraints:
            method="|".join(re.escape(m) for m in _methods),
            task="|".join(re.escape(t) for t in _tasks),
        params:
            models=lambda wc, ckpts=_ckpts: eval_model_flags(wc, ckpts),
            out_dir=lambda wc: f"{W}/eval/{wc.task}/{wc.method}/seed{wc.seed}",
            block_length=C["eval"]["block_length"],
            batch_size=C["eval"]["batch_size"],
        log:
            f"{LOGS}/eval/{{task}}/{{method}}/seed{{seed}}"
            + ("" if len(_ckpts) == len(checkpoints(_methods[0], _tasks[0]))
               else f"_{_ckpts[0]}" if len(_ckpts) == 1 else f"_{_ckpts[0]}-{_ckpts[-1]}") + ".log",
        threads: res("eval", "threads")
        resources:
            mem_mb=res("eval", "mem_mb"),
            runtime=res("eval", "runtime"),
            gpu=res("eval", "gpu"),
        shell:
            "export OMP_NUM_THREADS={threads}; {EGSPO} eval --task {wildcards.task} {params.models} "
            + " ".join(f"--data {split}={{input.{split}}}" for split in _splits) + " --gen-length " + EVAL_LENGTHS +
            " --steps " + EVAL_STEPS + " --block-length {params.block_length} --batch-size {params.batch_size} "
            "--style {STYLE} " + model_load_flags() + " --out-dir {params.out_dir} --tag method={wildcards.method} --tag seed={wildcards.seed} "
            "> {log} 2>&1"


def trace_settings(task):
    return method_settings(C["trace"]["method"], task)


rule trace:
    input:
        data=lambda wc: data_path(wc.task, C["trace"]["split"]),
        model=lambda wc: final_checkpoint(wc.task, C["trace"]["method"], C["trace"]["seed"]),
    output:
        f"{W}/trace/{{task}}.json",
    params:
        flags=lambda wc: flags({"n": C["trace"]["n"], "seed": C["trace"]["seed"],
                                **{k: trace_settings(wc.task)[k]
                                   for k in ("k", "gen_length", "steps", "block_length", "temperature")}}),
    log:
        f"{LOGS}/trace/{{task}}.log",
    threads: res("trace", "threads")
    resources:
        mem_mb=res("trace", "mem_mb"),
        runtime=res("trace", "runtime"),
        gpu=res("trace", "gpu"),
    shell:
        "export OMP_NUM_THREADS={threads}; {EGSPO} trace --model {input.model} --task {wildcards.task} --data {input.data} --style {STYLE} "
        "--out {output} {params.flags} " + model_load_flags() + " > {log} 2>&1"


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
        "export OMP_NUM_THREADS={threads}; {EGSPO} gradcheck --out {output} {params.flags} > {log} 2>&1"
