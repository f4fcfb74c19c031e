"""The tables that generate the evaluation rules. A Snakemake rule's outputs are a fixed list, and the checkpoint
list depends on the method and the task, so evaluation jobs are grouped by it: rule `eval_start` for the model
before RL, rule `eval` for every RL method saving on the shared `rl` schedule, rule `eval_<method>` for each other
one; tasks with their own RL schedule or generation lengths (`task_settings`) or fewer splits get rules of their
own (`eval_countdown`, `eval_test`, ...); `eval.checkpoints_per_job` cuts a group into `_part<i>` rules."""

from __future__ import annotations

from dataclasses import dataclass

from egspo.workflow.plan import Plan


@dataclass(frozen=True)
class EvalRule:
    """One generated evaluation rule: its jobs are (task, method) of `tasks` x `methods`, each evaluating checkpoints
    `ckpts` of every seed in one process (an RL method's seeds share its imports and start-up), at generation
    lengths `lengths` on `splits`; a `per_seed` rule (the model before RL) has one job per (task, method, seed)."""

    name: str
    methods: tuple[str, ...]
    tasks: tuple[str, ...]
    ckpts: tuple[str, ...]
    splits: tuple[str, ...]
    lengths: tuple[int, ...]
    log_suffix: str  # "" when a job covers all its method's checkpoints, else which ones ("_step_20-step_40")
    per_seed: bool = False


def checkpoint_parts(plan: Plan, name: str, ckpts: list[str]) -> list[tuple[str, list[str]]]:
    """[(rule name, checkpoints)]: one part per `eval.checkpoints_per_job` consecutive checkpoints (all in one when
    null), so a cluster job per checkpoint fits a Slurm time limit that a job over every checkpoint would not."""
    size = plan.C["eval"].get("checkpoints_per_job") or len(ckpts)
    parts = [ckpts[i:i + size] for i in range(0, len(ckpts), size)]
    if len(parts) == 1:
        return [(name, ckpts)]
    return [(f"{name}_part{i + 1}", part) for i, part in enumerate(parts)]


def method_groups(plan: Plan, task: str) -> list[tuple[str, list[str], list[str], list[int]]]:
    """[(rule name, methods, checkpoint names, lengths)] on `task`, covering the model before RL and every key of
    'methods': the methods saving on the task's shared schedule share rule `eval`, the ablation / sweep variants of
    'eval.variants' on it rule `eval_variants`; any other method gets `eval_<method>`."""
    base = plan.task_rl(task)
    groups = [("eval_start", [plan.start], [plan.start], plan.lengths(task))]
    grouped: list[str] = []
    if "max_steps" in base and "save_every" in base:
        for name, variant in (("eval", False), ("eval_variants", True)):
            ckpts, lengths = plan.schedule_checkpoints(base, variant), plan.lengths(task, variant)
            members = [m for m in plan.C["methods"] if plan.is_variant(m) == variant
                       and plan.checkpoints(m, task) == ckpts and plan.eval_lengths(m, task) == lengths]
            if members:
                groups += [(rule, members, part, lengths) for rule, part in checkpoint_parts(plan, name, ckpts)]
                grouped += members
    for m in plan.C["methods"]:
        if m not in grouped:
            parts = checkpoint_parts(plan, f"eval_{m}", plan.checkpoints(m, task))
            groups += [(name, [m], part, plan.eval_lengths(m, task)) for name, part in parts]
    return groups


def own_grid(plan: Plan, task: str) -> bool:
    """Whether `task_settings.<task>` moves the task's RL save schedule off the shared `rl` one (its `rl` section)
    or its generation lengths off 'eval.gen_lengths' (its `eval` section)."""
    return (any(plan.task_rl(task).get(k) != plan.C["rl"].get(k) for k in ("max_steps", "save_every"))
            or plan.task_lengths(task) != list(plan.C["eval"]["gen_lengths"]))


def eval_rules(plan: Plan) -> list[EvalRule]:
    """Every generated evaluation rule: tasks grouped by their evaluation splits, RL save schedules and generation
    lengths, methods by their checkpoints within a group. A group with fewer splits than configured gets a
    `_<splits>` suffix, a group of tasks whose `task_settings.<task>` changes the save schedule or the lengths a
    `_<tasks>` suffix."""
    groups: dict[tuple, list[str]] = {}
    for task in plan.tasks:
        schedule = tuple(tuple(plan.checkpoints(m, task)) for m in plan.C["methods"])
        groups.setdefault((tuple(plan.eval_splits(task)), schedule, tuple(plan.task_lengths(task))), []).append(task)
    rules = []
    for (splits, _, _), tasks in groups.items():
        suffix = "" if list(splits) == list(plan.C["eval"]["splits"]) else "_" + "_".join(splits)
        if all(own_grid(plan, t) for t in tasks):
            suffix += "_" + "_".join(tasks)
        for name, methods, ckpts, lengths in method_groups(plan, tasks[0]):
            every = plan.checkpoints(methods[0], tasks[0])
            log_suffix = ("" if len(ckpts) == len(every)
                          else f"_{ckpts[0]}" if len(ckpts) == 1 else f"_{ckpts[0]}-{ckpts[-1]}")
            rules.append(EvalRule(name + suffix, tuple(methods), tuple(tasks), tuple(ckpts), splits,
                                  tuple(lengths), log_suffix, per_seed=plan.start in methods))
    return rules


def job_seeds(plan: Plan, rule: EvalRule) -> list[str]:
    """The seeds one job of `rule` evaluates: every seed, or the `{seed}` wildcard of a per-seed rule."""
    return ["{seed}"] if rule.per_seed else [str(s) for s in plan.seeds]


def eval_outputs(plan: Plan, rule: EvalRule, method: str = "{method}") -> list[str]:
    """Every generations / metrics file of one job of `rule`, `{task}` (and `{seed}` of a per-seed rule) left as
    wildcards."""
    return [plan.paths.eval_stem("{task}", method, seed, ckpt, length, split) + ext
            for seed in job_seeds(plan, rule) for ckpt in rule.ckpts for length in rule.lengths
            for split in rule.splits for ext in (".jsonl", ".metrics.json")]


def inherited_set_resources(overrides: dict, rules: list[EvalRule], source: str = "eval") -> dict:
    """`--set-resources` (a profile's `set-resources`) with every generated evaluation rule given the entry of rule
    `source` unless it has its own, so a profile need not know the generated names. Assign the result to
    `workflow.resource_settings.overwrite_resources` before any rule is defined (Snakemake applies it by rule name
    when a rule is created, and passes it on to cluster jobs)."""
    merged = dict(overrides)
    if source in overrides:
        for rule in rules:
            merged.setdefault(rule.name, overrides[source])
    return merged
