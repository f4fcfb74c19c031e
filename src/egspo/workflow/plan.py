"""The experiment grid of one effective configuration: tasks x methods x seeds, which run each model comes from,
the settings each run takes (shared block, then the task's `task_settings`, then the method's entry) and which
checkpoints exist to evaluate. Plain Python over the merged config; the Snakefile only binds it to rules."""

from __future__ import annotations

from egspo.workflow.config import ConfigError, deep_merge, effective_config
from egspo.workflow.paths import Layout
from egspo.workflow.schedule import eval_steps, saved_checkpoints

SPLITS = ("train", "validation", "test")
# Splits a task's data has where not all three (the loaders of egspo.tasks: HumanEval is test-only, KodCode is
# training data without a test split). Every other task has train, validation and test.
PARTIAL_SPLITS = {"humaneval": ("test",), "kodcode": ("train", "validation")}
# Tasks whose `egspo data` writes all three splits in one job.
FULL_SPLIT_TASKS = ("sudoku", "countdown", "gsm8k", "math500", "mbpp")
TINY_MODEL_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_len", "seed")


def task_splits(task: str) -> tuple[str, ...]:
    """The splits `egspo data` can write for `task`."""
    return PARTIAL_SPLITS.get(task, SPLITS)


class Plan:
    """The grid of effective config `C` (a preset with its overrides merged: `Plan.from_raw(config)`)."""

    def __init__(self, C: dict):
        self.C = C
        self.paths = Layout.of(C["work_dir"], C["results_dir"])
        self.tasks = list(C["tasks"])
        self.seeds = list(C["seeds"])
        # RL / SFT runs, one per distinct train task (HumanEval and MBPP share KodCode's in the paper preset)
        self.rl_tasks = list(dict.fromkeys(self.train_task(t) for t in self.tasks))
        # the model before RL, evaluated as a method of its own: the SFT warm start, or the base model without one
        self.start = "sft" if C["sft"]["enabled"] else "base"

    @classmethod
    def from_raw(cls, raw: dict) -> "Plan":
        return cls(effective_config(raw))

    # ---- tasks and settings --------------------------------------------------------------------------------------
    def train_task(self, task: str) -> str:
        """The task whose train split RL (and SFT) of evaluated task `task` uses (config key 'train_tasks')."""
        return self.C.get("train_tasks", {}).get(task, task)

    def eval_splits(self, task: str) -> list[str]:
        """The configured evaluation splits that `task` has (HumanEval: test only)."""
        return [s for s in self.C["eval"]["splits"] if s in task_splits(task)]

    def task_settings(self, task: str, section: str) -> dict:
        """config key 'task_settings.<train task>.<section>' (`sft` or `rl`); {} when unset."""
        return self.C.get("task_settings", {}).get(self.train_task(task), {}).get(section, {})

    def task_rl(self, task: str) -> dict:
        """The shared `rl` block with `task_settings.<task>.rl` over it (every method's schedule unless it has one)."""
        return deep_merge(self.C["rl"], self.task_settings(task, "rl"))

    def method_settings(self, method: str, task: str) -> dict:
        """RL settings of `method` on `task`: `rl`, then `task_settings.<task>.rl`, then `methods.<method>`."""
        if method not in self.C["methods"]:
            raise ConfigError(f"method {method!r} is not in config key 'methods' "
                              f"(have: {', '.join(self.C['methods'])})")
        return deep_merge(self.task_rl(task), self.C["methods"][method])

    def resource(self, group: str, key: str, default=None):
        """config key 'resources.<group>.<key>' (`default` where the key is optional, e.g. nodes)."""
        value = self.C["resources"].get(group, {}).get(key, default)
        if value is None:
            raise ConfigError(f"config key 'resources.{group}.{key}' is missing")
        return value

    def resources(self, group: str, multi_node: bool = False) -> dict:
        """The Snakemake resources of a rule of `group`: mem_mb, runtime (minutes), gpu; nodes for sft / rl."""
        out = {key: self.resource(group, key) for key in ("mem_mb", "runtime", "gpu")}
        if multi_node:
            out["nodes"] = self.resource(group, "nodes", 1)
        return out

    def eval_steps(self, length: int) -> int:
        return eval_steps(length, self.C["eval"]["steps_per_token"])

    # ---- models -------------------------------------------------------------------------------------------------
    def base_model(self) -> str:
        """The model SFT starts from (or RL, without SFT): the built tiny model or the pretrained path / hub id."""
        return self.paths.init_model if self.C["model"]["kind"] == "tiny" else self.C["model"]["path"]

    def base_model_inputs(self) -> list[str]:
        return [self.paths.init_model] if self.C["model"]["kind"] == "tiny" else []

    def sft_task(self, task: str) -> str:
        """Name of the SFT run of `task`: its train task, or `s1k` for the one shared warm start on `sft.data`."""
        return "s1k" if self.C["sft"].get("data") else self.train_task(task)

    def sft_settings(self, run: str) -> dict:
        """`sft` with `task_settings.<run>.sft` merged over it."""
        return deep_merge(self.C["sft"], self.task_settings(run, "sft"))

    def sft_seed(self, run: str, seed: int) -> int:
        """Seed of the warm start that RL seed `seed` starts from: the run's `seed` setting when set (one warm start
        per train task, shared by every RL seed), else `seed` (one warm start per seed)."""
        shared = self.sft_settings(run).get("seed")
        return seed if shared is None else shared

    def sft_dir(self, task: str, seed: int) -> str:
        run = self.sft_task(task)
        return self.paths.sft_dir(run, self.sft_seed(run, seed))

    def start_eval_seed(self, task: str) -> int | None:
        """The seed label under which the model before RL of `task` is evaluated ONCE when every RL seed shares it
        (the shared warm start's SFT seed, or the first seed for the base model); None with a warm start per seed."""
        if not self.C["sft"]["enabled"]:
            return self.seeds[0]
        return self.sft_settings(self.sft_task(task)).get("seed")

    def start_model(self, task: str, seed: int) -> str:
        """The model before RL for (task, seed): the SFT output, or the base model when SFT is off."""
        return self.sft_dir(task, seed) if self.C["sft"]["enabled"] else self.base_model()

    def start_model_inputs(self, task: str, seed: int) -> list[str]:
        return [self.sft_dir(task, seed)] if self.C["sft"]["enabled"] else self.base_model_inputs()

    # ---- RL runs and their checkpoints ---------------------------------------------------------------------------
    def rl_dir(self, task: str, method: str, seed: int | str) -> str:
        """Run directory of `task`'s RL: the run of its train task (HumanEval and MBPP share KodCode's)."""
        return self.paths.rl_dir(self.train_task(task), method, seed)

    def final_checkpoint(self, task: str, method: str, seed: int | str) -> str:
        """The rl rule's declared output: the last checkpoint (earlier ones are not outputs, so a restarted job keeps
        them and resumes)."""
        return self.paths.checkpoint_dir(self.train_task(task), method, seed,
                                         self.method_settings(method, task)["max_steps"])

    def schedule_checkpoints(self, settings: dict, variant: bool = False) -> list[str]:
        """Checkpoint names RL settings `settings` save, the last `eval.last_checkpoints` of them when set (for a
        variant, `eval.variants.last_checkpoints` when that is set)."""
        last = (self.variant_eval().get("last_checkpoints") if variant else None) or self.C["eval"]["last_checkpoints"]
        return saved_checkpoints(settings["max_steps"], settings["save_every"], last)

    def variant_eval(self) -> dict:
        """Config key 'eval.variants' ({} when unset): how ablation / sweep variants are evaluated."""
        return self.C["eval"].get("variants") or {}

    def is_variant(self, method: str) -> bool:
        """Whether `method` is an ablation / sweep variant evaluated the lighter way of config key 'eval.variants':
        an RL method outside `compare`, when that key is set."""
        return bool(self.variant_eval()) and method != self.start and method not in self.C["compare"]

    def task_lengths(self, task: str) -> list[int]:
        """Generation lengths evaluated task `task` is evaluated at: 'task_settings.<task>.eval.gen_lengths' (keyed
        by the evaluated task, not its train task), else 'eval.gen_lengths'."""
        own = self.C.get("task_settings", {}).get(task, {}).get("eval", {})
        return list(own.get("gen_lengths", self.C["eval"]["gen_lengths"]))

    def lengths(self, task: str, variant: bool = False) -> list[int]:
        """Generation lengths of an evaluation on `task`: the task's lengths, or for a variant
        'eval.variants.gen_lengths' (checked to be among them)."""
        full = self.task_lengths(task)
        return list(self.variant_eval().get("gen_lengths", full) if variant else full)

    def eval_lengths(self, method: str, task: str) -> list[int]:
        """Generation lengths `method` is evaluated at on `task`."""
        return self.lengths(task, self.is_variant(method))

    def checkpoints(self, method: str, task: str, variant: bool | None = None) -> list[str]:
        """Checkpoint names evaluated for a method on a task: the start model has one, an RL run one per save (a
        variant only its last 'eval.variants.last_checkpoints'; `variant` overrides whether `method` is one)."""
        if method == self.start:
            return [self.start]
        variant = self.is_variant(method) if variant is None else variant
        return self.schedule_checkpoints(self.method_settings(method, task), variant)

    def eval_metrics(self, methods, tasks=None, seeds=None, splits=None) -> list[str]:
        """Every evaluation metrics file of the grid: tasks x methods x seeds x checkpoints x lengths x splits."""
        out = []
        for task in tasks or self.tasks:
            for method in methods:
                shared = self.start_eval_seed(task) if method == self.start else None
                for seed in [shared] if shared is not None else seeds or self.seeds:
                    for ckpt in self.checkpoints(method, task):
                        for length in self.eval_lengths(method, task):
                            for split in splits or self.eval_splits(task):
                                stem = self.paths.eval_stem(task, method, seed, ckpt, length, split)
                                out.append(stem + ".metrics.json")
        return out

    def rl_finals(self, methods) -> list[str]:
        """The final checkpoint of every RL run among `methods` (the start model has none)."""
        return [self.final_checkpoint(t, m, s) for t in self.rl_tasks for m in methods if m != self.start
                for s in self.seeds]

    def ablation_methods(self, name: str) -> list[str]:
        """The model before RL, then the methods of config key 'ablations.<name>'."""
        return [self.start] + [m for m in self.C["ablations"][name]["methods"] if m != self.start]
