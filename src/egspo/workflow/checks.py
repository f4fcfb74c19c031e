"""Cross-field rules of a configuration that its JSON schema cannot express, checked before any job starts; each
error names the config key."""

from __future__ import annotations

import itertools

from egspo.settings import validate_rl, validate_sft
from egspo.workflow.config import ConfigError
from egspo.workflow.plan import Plan, task_splits
from egspo.workflow.schedule import check_block_schedule


def check_methods(plan: Plan) -> None:
    """Every method on every train task: an algorithm, the settings checks `egspo rl` runs (egspo.settings.validate_rl:
    types, ranges, the sampler's block schedule, k <= T, ...), and a save interval within max_steps."""
    for (method, entry), task in itertools.product(plan.C["methods"].items(), plan.rl_tasks):
        if "algorithm" not in entry:
            raise ConfigError(f"config key 'methods.{method}': missing 'algorithm' (egspo or diffu_grpo)")
        s = plan.method_settings(method, task)
        where = f"config key 'methods.{method}' (merged over 'rl' and 'task_settings.{task}.rl')"
        try:
            validate_rl(s, where=where)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if s["save_every"] > s["max_steps"]:
            raise ConfigError(f"{where}: save_every = {s['save_every']} exceeds max_steps = {s['max_steps']}")


def check_references(plan: Plan) -> None:
    """Names that must refer to something: compared / ablated / traced methods, train tasks."""
    C, start = plan.C, plan.start
    for method in C["compare"]:
        if method != start and method not in C["methods"]:
            raise ConfigError(f"config key 'compare' entry {method!r} is neither {start!r} (the model before RL) "
                              f"nor a key of 'methods'")
    if start not in C["compare"]:
        raise ConfigError(f"config key 'compare' must contain {start!r}: the tables report RL minus {start}")
    for name, ablation in C["ablations"].items():
        for method in ablation["methods"]:
            if method not in C["methods"]:
                raise ConfigError(f"config key 'ablations.{name}.methods' entry {method!r} is not a key of 'methods'")
    if C["trace"]["method"] not in C["methods"]:
        raise ConfigError(f"config key 'trace.method' = {C['trace']['method']!r} is not a key of 'methods'")
    for task in plan.tasks:
        if "train" not in task_splits(plan.train_task(task)):
            raise ConfigError(f"task {task!r} has no train split: set config key 'train_tasks.{task}' to the task "
                              f"its RL run trains on (e.g. kodcode)")


def check_sft(plan: Plan) -> None:
    """Every SFT run's merged settings pass the checks `egspo sft` runs (egspo.settings.validate_sft)."""
    if not plan.C["sft"]["enabled"]:
        return
    for run in sorted({plan.sft_task(task) for task in plan.tasks}):
        settings = {k: v for k, v in plan.sft_settings(run).items() if k not in ("enabled", "data", "seed")}
        try:
            validate_sft(settings, where=f"config key 'sft' (merged with 'task_settings.{run}.sft')")
        except ValueError as err:
            raise ConfigError(str(err)) from None


def check_task_settings(plan: Plan) -> None:
    """Per-task sections: `sft` / `rl` only under a train task (an evaluated task training on another one's data
    would silently ignore them), each task's own lengths valid, and the variants' lengths among every task's."""
    C = plan.C
    for task, entry in C.get("task_settings", {}).items():
        if plan.train_task(task) != task and {"sft", "rl"} & set(entry):
            raise ConfigError(f"config key 'task_settings.{task}': {task} trains on {plan.train_task(task)}'s data "
                              f"(train_tasks), so its sft / rl settings belong under "
                              f"'task_settings.{plan.train_task(task)}'")
        for length in entry.get("eval", {}).get("gen_lengths", []):
            check_block_schedule(f"config key 'task_settings.{task}.eval.gen_lengths' entry {length}", length,
                                 plan.eval_steps(length), C["eval"]["block_length"])
    variant_lengths = plan.variant_eval().get("gen_lengths", [])
    for task in plan.tasks:
        if not set(variant_lengths) <= set(plan.task_lengths(task)):
            where = ("'eval.gen_lengths'" if plan.task_lengths(task) == list(C["eval"]["gen_lengths"])
                     else f"'task_settings.{task}.eval.gen_lengths'")
            raise ConfigError(f"config key 'eval.variants.gen_lengths' {variant_lengths} must be among {where} "
                              f"{plan.task_lengths(task)}: ablation and sweep tables compare the variants with the "
                              f"compared methods and the model before RL at those lengths")


def check_config(plan: Plan) -> None:
    """Every cross-field rule of `plan`'s configuration; raises ConfigError naming the key."""
    C = plan.C
    check_methods(plan)
    check_sft(plan)
    if C["sft"].get("data"):
        per_task = [t for t, entry in C.get("task_settings", {}).items() if "sft" in entry]
        if per_task:
            raise ConfigError(f"config key 'task_settings.{per_task[0]}.sft': with 'sft.data' set every task "
                              f"shares one warm start, so SFT settings cannot differ per task")
    for length in C["eval"]["gen_lengths"]:
        check_block_schedule(f"config key 'eval.gen_lengths' entry {length}", length, plan.eval_steps(length),
                             C["eval"]["block_length"])
    check_task_settings(plan)
    check_references(plan)
    if C["data"].get("authors_test_draw") and C["data"].get("n_test") is not None:
        raise ConfigError("config key 'data.authors_test_draw': 'data.n_test' also chooses the test rows; set one")
    if C["model"]["kind"] == "tiny" and C["data"]["source"] == "hub":
        raise ConfigError("config key 'data.source' = 'hub' needs a pretrained model (model.kind), "
                          "the tiny model's tokenizer only covers the tiny tasks' alphabet")
