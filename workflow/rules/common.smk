# Shared helpers of the workflow: the effective configuration, paths, flags and the experiment grid.
# No algorithm code here: every rule calls one `egspo` subcommand with flags built from the config.

import copy
import itertools
import os
import sys
import shlex

from snakemake.exceptions import WorkflowError

RESERVED_COMMON_KEYS = ("preset", "presets")


def deep_merge(base, override):
    """`override` merged into a copy of `base`: mappings merge key by key, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def effective_config(raw):
    """The selected preset with every top-level override key deep-merged over it."""
    name = raw["preset"]
    if name not in raw["presets"]:
        raise WorkflowError(f"config key 'preset': {name!r} is not a block of 'presets' "
                            f"(have: {', '.join(sorted(raw['presets']))})")
    overrides = {k: v for k, v in raw.items() if k not in RESERVED_COMMON_KEYS}
    return deep_merge(raw["presets"][name], overrides)


C = effective_config(config)
W = C["work_dir"].rstrip("/")
R = C["results_dir"].rstrip("/")
TASKS = list(C["tasks"])
SEEDS = list(C["seeds"])
SPLITS = ("train", "validation", "test")
# Splits a task's data has, where not all three (mirrors the loaders of egspo.tasks: HumanEval is test-only,
# KodCode is training data without a test split). Every other task has train, validation and test.
PARTIAL_SPLITS = {"humaneval": ("test",), "kodcode": ("train", "validation")}


def task_splits(task):
    """The splits `egspo data` can write for `task`."""
    return PARTIAL_SPLITS.get(task, SPLITS)


def train_task(task):
    """The task whose train split RL (and SFT) of evaluated task `task` uses (config key 'train_tasks'); a train
    task maps to itself."""
    return C.get("train_tasks", {}).get(task, task)


def eval_splits(task):
    """The configured evaluation splits that `task` has (HumanEval: test only)."""
    return [s for s in C["eval"]["splits"] if s in task_splits(task)]


# RL / SFT runs, one per distinct train task (HumanEval and MBPP share KodCode's in the paper preset).
RL_TASKS = list(dict.fromkeys(train_task(t) for t in TASKS))
# The model before RL, evaluated as a method of its own: the SFT warm start, or the base model without one.
START = "sft" if C["sft"]["enabled"] else "base"


def task_settings(task, section):
    """config key 'task_settings.<train task>.<section>' (`sft` or `rl`): what one task's runs change, for every
    method alike (e.g. a longer warm start and more RL iterations on Countdown); {} when unset."""
    return C.get("task_settings", {}).get(train_task(task), {}).get(section, {})


def method_settings(method, task):
    """RL hyper-parameters of `method` on `task`: the shared `rl` block, the task's `task_settings.<task>.rl` over
    it, and the method's entry over both."""
    if method not in C["methods"]:
        raise WorkflowError(f"method {method!r} is not in config key 'methods' (have: {', '.join(C['methods'])})")
    return deep_merge(deep_merge(C["rl"], task_settings(task, "rl")), C["methods"][method])


def eval_steps(length):
    """Denoising steps for evaluation at generation length L: T = L * eval.steps_per_token."""
    steps = length * C["eval"]["steps_per_token"]
    if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
        raise WorkflowError(f"config key 'eval.steps_per_token' = {C['eval']['steps_per_token']} gives a "
                            f"non-integer step count {steps} at eval.gen_lengths entry {length}")
    return int(round(steps))


def check_schedule(where, gen_length, steps, block_length):
    """L % B == 0 and T a multiple of the number of blocks L / B (each block gets T*B/L steps)."""
    if gen_length % block_length:
        raise WorkflowError(f"{where}: gen_length {gen_length} is not a multiple of block_length {block_length}")
    blocks = gen_length // block_length
    if steps % blocks:
        raise WorkflowError(f"{where}: steps {steps} is not a multiple of the {blocks} blocks "
                            f"(gen_length {gen_length} / block_length {block_length})")


def check_config():
    """Cross-field rules the JSON schema cannot express; each error names the key."""
    for (method, entry), task in itertools.product(C["methods"].items(), RL_TASKS):
        if "algorithm" not in entry:
            raise WorkflowError(f"config key 'methods.{method}': missing 'algorithm' (egspo or diffu_grpo)")
        s = method_settings(method, task)
        where = f"config key 'methods.{method}' (merged over 'rl' and 'task_settings.{task}.rl')"
        check_schedule(where, s["gen_length"], s["steps"], s["block_length"])
        if s["k"] > s["steps"]:
            raise WorkflowError(f"{where}: k = {s['k']} exceeds its steps T = {s['steps']}")
        if s["selection"] == "all" and s["k"] != s["steps"]:
            raise WorkflowError(f"{where}: k = {s['k']}: selection 'all' needs k = steps = {s['steps']}")
        if s["save_every"] > s["max_steps"]:
            raise WorkflowError(f"{where}: save_every = {s['save_every']} exceeds max_steps = {s['max_steps']}")
    if C["sft"].get("data"):
        per_task = [t for t, entry in C.get("task_settings", {}).items() if "sft" in entry]
        if per_task:
            raise WorkflowError(f"config key 'task_settings.{per_task[0]}.sft': with 'sft.data' set every task "
                                f"shares one warm start, so SFT settings cannot differ per task")
    for length in C["eval"]["gen_lengths"]:
        check_schedule(f"config key 'eval.gen_lengths' entry {length}", length, eval_steps(length),
                       C["eval"]["block_length"])
    for i, method in enumerate(C["compare"]):
        if method != START and method not in C["methods"]:
            raise WorkflowError(f"config key 'compare' entry {method!r} is neither {START!r} (the model before "
                                f"RL) nor a key of 'methods'")
    if START not in C["compare"]:
        raise WorkflowError(f"config key 'compare' must contain {START!r}: the tables report RL minus {START}")
    for name, ablation in C["ablations"].items():
        for method in ablation["methods"]:
            if method not in C["methods"]:
                raise WorkflowError(f"config key 'ablations.{name}.methods' entry {method!r} is not a key of "
                                    f"'methods'")
    if C["trace"]["method"] not in C["methods"]:
        raise WorkflowError(f"config key 'trace.method' = {C['trace']['method']!r} is not a key of 'methods'")
    for task in TASKS:
        if "train" not in task_splits(train_task(task)):
            raise WorkflowError(f"task {task!r} has no train split: set config key 'train_tasks.{task}' to the task "
                                f"its RL run trains on (e.g. kodcode)")
    if C["model"]["kind"] == "tiny" and C["data"]["source"] == "hub":
        raise WorkflowError("config key 'data.source' = 'hub' needs a pretrained model (model.kind), "
                            "the tiny model's tokenizer only covers the tiny tasks' alphabet")


check_config()


# ---- flags -----------------------------------------------------------------------------------------------------
def flags(options):
    """Command-line flags from a mapping: {"max_steps": 5, "quiet": True, "k": [1, 2]} -> "--max-steps 5 --quiet
    --k 1,2" (lists comma-joined, as the egspo parsers take them). None and False are left out; values are
    shell-quoted."""
    parts = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts.append(f"{flag} {shlex.quote(','.join(str(v) for v in value))}")
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def model_flags(command):
    """Loading and LoRA flags of a pretrained model (paper preset) for `egspo sft` / `egspo rl`; none for the tiny
    model, whose directory says it all. LoRA targets are passed only when configured (else the family default of
    egspo.models.families: every attention and MLP projection)."""
    m = C["model"]
    if command not in ("sft", "rl"):
        raise WorkflowError(f"model_flags: command must be sft or rl, got {command!r}")
    if m["kind"] == "tiny":
        return ""
    options = {"dtype": m.get("dtype")}
    if command == "rl":
        options["trust_remote_code"] = m.get("trust_remote_code")
        options["load_in_4bit"] = m.get("quantize_4bit")
    else:
        options["quantize_4bit"] = m.get("quantize_4bit")
    lora = m.get("lora")
    if lora:
        options.update({"lora_r": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"]})
        if lora.get("target_modules"):
            options["lora_targets"] = ",".join(lora["target_modules"])
    return flags(options)


def model_load_flags():
    """`--dtype` / `--trust-remote-code` of `egspo eval` and `egspo trace` for the configured model (none for the
    tiny model, which loads in float32 without remote code)."""
    m = C["model"]
    if m["kind"] == "tiny":
        return ""
    options = {"dtype": m.get("dtype")}
    if m.get("trust_remote_code") is not None:
        options["trust_remote_code"] = "true" if m["trust_remote_code"] else "false"
    return flags(options)


# ---- launching sft / rl ------------------------------------------------------------------------------------------
PYTHON = shlex.quote(sys.executable)
ACCELERATE_CONFIG = os.path.join(workflow.basedir, C.get("accelerate_config", "configs/accelerate/ddp.yaml"))
# Rendezvous port of a multi-process job: distinct per Slurm job so two jobs on one node do not collide.
RDZV_PORT = "$((29500 + ${SLURM_JOB_ID:-0} % 20000))"


def launch_command(rule_name, resources, args):
    """The shell command of an sft / rl job: `egspo <args>` on one device; with `gpu` >= 2 GPUs on one node
    `accelerate launch --num_processes gpu` (one process per GPU, configs/accelerate/*.yaml); with `nodes` >= 2
    one `accelerate launch` per node started by `srun`, each told its node rank ($SLURM_NODEID) and the first node
    as rendezvous host. Slurm variables are defaulted or checked with a message (Snakemake runs `set -u`)."""
    gpus, nodes = int(resources.gpu), int(getattr(resources, "nodes", 1) or 1)
    if gpus < 2 and nodes < 2:
        return f"{EGSPO} {args}"
    if gpus < 1:
        raise WorkflowError(f"config key 'resources.{rule_name}.nodes' = {nodes} needs gpu >= 1 per node")
    accelerate = (f"{PYTHON} -m accelerate.commands.launch --config_file {shlex.quote(ACCELERATE_CONFIG)} "
                  f"--num_processes {gpus * nodes} --num_machines {nodes}")
    if nodes < 2:
        return f"{accelerate} --main_process_port {RDZV_PORT} -m egspo.cli {args}"
    per_node = (f"{accelerate} --machine_rank $SLURM_NODEID --main_process_ip $EGSPO_HEAD_NODE "
                f"--main_process_port $EGSPO_PORT -m egspo.cli {args}")
    return ("export EGSPO_HEAD_NODE=$(scontrol show hostnames "
            "\"${SLURM_JOB_NODELIST:?a multi-node job needs a Slurm allocation}\" | head -n 1); "
            f"export EGSPO_PORT={RDZV_PORT}; "
            f"srun --nodes={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c {shlex.quote(per_node)}")


def check_processes(rule_name, resources, batch_size):
    """An rl job's prompts per iteration must split evenly over its processes (gpu * nodes)."""
    processes = max(int(resources.gpu), 1) * int(getattr(resources, "nodes", 1) or 1)
    if batch_size % processes:
        raise WorkflowError(f"rl batch_size {batch_size} (prompts per iteration) is not divisible by the "
                            f"{processes} processes of rule {rule_name!r} (resources gpu x nodes; the Slurm profile "
                            f"may override gpu): choose a divisor of the batch size as the GPU count")


TINY_MODEL_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_len", "seed")


def res(rule_name, key, default=None):
    """config key 'resources.<rule>.<key>' (`default` where the key is optional, e.g. nodes)."""
    value = C["resources"][rule_name].get(key, default)
    if value is None:
        raise WorkflowError(f"config key 'resources.{rule_name}.{key}' is missing")
    return value


def resources_of(rule_name):
    """mem_mb / runtime (minutes) / gpu of a rule, from config key 'resources.<rule>'."""
    r = C["resources"][rule_name]
    return {"mem_mb": r["mem_mb"], "runtime": r["runtime"], "gpu": r["gpu"]}


# ---- paths -----------------------------------------------------------------------------------------------------
def data_path(task, split):
    return f"{W}/data/{task}/{split}.jsonl"


INIT_MODEL = f"{W}/models/init"


def base_model():
    """The model SFT starts from (or RL, without SFT): the built tiny model or the pretrained path / hub id."""
    return INIT_MODEL if C["model"]["kind"] == "tiny" else C["model"]["path"]


def base_model_inputs():
    return [INIT_MODEL] if C["model"]["kind"] == "tiny" else []


def sft_task(task):
    """Name of the SFT run of `task`: its train task, or `s1k` for the one shared warm start on `sft.data`."""
    return "s1k" if C["sft"].get("data") else train_task(task)


def sft_settings(run):
    """SFT settings of SFT run `run` (a train task, or `s1k`): `sft` with `task_settings.<run>.sft` merged over it."""
    return deep_merge(C["sft"], task_settings(run, "sft"))


def sft_seed(run, seed):
    """Seed of the warm start of SFT run `run` that RL seed `seed` starts from: its `seed` setting when set (one warm
    start per train task, shared by every RL seed, as the paper's runs share one base model), else `seed` (one warm
    start per seed)."""
    shared = sft_settings(run).get("seed")
    return seed if shared is None else shared


def sft_dir(task, seed):
    run = sft_task(task)
    return f"{W}/sft/{run}/seed{sft_seed(run, seed)}"


def start_eval_seed(task):
    """The seed label under which the model before RL of `task` is evaluated ONCE when every RL seed shares it: the
    shared warm start's SFT seed, or the first seed for the base model (no SFT); None with one warm start per seed.
    The report pairs that one evaluation with every RL seed (`egspo report accuracy --shared-seed`)."""
    if not C["sft"]["enabled"]:
        return SEEDS[0]
    return sft_settings(sft_task(task)).get("seed")


def start_model(task, seed):
    """The model before RL for (task, seed): the SFT output, or the base model when SFT is off."""
    return sft_dir(task, seed) if C["sft"]["enabled"] else base_model()


def start_model_inputs(task, seed):
    return [sft_dir(task, seed)] if C["sft"]["enabled"] else base_model_inputs()


def rl_dir(task, method, seed):
    """Run directory of `task`'s RL: the run of its train task (HumanEval and MBPP share KodCode's)."""
    return f"{W}/rl/{train_task(task)}/{method}/seed{seed}"


def saved_steps(settings):
    """Optimizer steps at which `egspo rl` with RL settings `settings` saves: every save_every and at max_steps;
    the last N if `eval.last_checkpoints` is set."""
    steps = list(range(settings["save_every"], settings["max_steps"] + 1, settings["save_every"]))
    if not steps or steps[-1] != settings["max_steps"]:
        steps.append(settings["max_steps"])
    last = C["eval"]["last_checkpoints"]
    return steps[-last:] if last else steps


def final_checkpoint(task, method, seed):
    """The rl rule's declared output: the last checkpoint (earlier ones are not outputs, so a restarted job keeps
    them and resumes)."""
    return f"{rl_dir(task, method, seed)}/checkpoints/step_{method_settings(method, task)['max_steps']}"


def checkpoints(method, task):
    """Checkpoint names evaluated for a method on a task: the start model has one, an RL run one per saved step."""
    if method == START:
        return [START]
    return [f"step_{n}" for n in saved_steps(method_settings(method, task))]


def eval_stem(task, method, seed, ckpt, length, split):
    return f"{W}/eval/{task}/{method}/seed{seed}/{ckpt}/len{length}/{split}"


def eval_metrics(methods, tasks=None, seeds=None, splits=None):
    """Every evaluation metrics file of the grid: tasks x methods x seeds x checkpoints x lengths x splits."""
    out = []
    for task in tasks or TASKS:
        for method in methods:
            shared = start_eval_seed(task) if method == START else None
            for seed in [shared] if shared is not None else seeds or SEEDS:
                for ckpt in checkpoints(method, task):
                    for length in C["eval"]["gen_lengths"]:
                        for split in splits or eval_splits(task):
                            out.append(eval_stem(task, method, seed, ckpt, length, split) + ".metrics.json")
    return out


def rl_metrics_files(methods):
    """(train task, method, seed, metrics.jsonl) of every RL run among `methods` (the start model has none)."""
    return [(t, m, s, f"{rl_dir(t, m, s)}/metrics.jsonl")
            for t in RL_TASKS for m in methods if m != START for s in SEEDS]


def results(stem, exts):
    return [f"{R}/{stem}.{ext}" for ext in exts]


wildcard_constraints:
    task="[a-z][a-z0-9]*",
    method="[a-z][a-z0-9_]*",
    seed="[0-9]+",
    ckpt="sft|base|step_[0-9]+",
    length="[0-9]+",
    split="train|validation|test",
    last="[0-9]+",


# The `egspo` entry point beside the Python running Snakemake (so a venv need not be activated), else from PATH.
_EGSPO_BESIDE = os.path.join(os.path.dirname(sys.executable), "egspo")
EGSPO = shlex.quote(_EGSPO_BESIDE) if os.access(_EGSPO_BESIDE, os.X_OK) else "egspo"
STYLE = C["style"]
LOGS = f"{W}/logs"
