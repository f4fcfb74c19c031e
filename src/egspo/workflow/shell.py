"""Shell-command pieces of the workflow's jobs: config mappings as `egspo` flags, model loading flags, the
`egspo rl` / `egspo sft` arguments of a run, how a job launches on 1 or more GPUs / nodes, and the evaluation grid
flags of `egspo report accuracy`."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from dataclasses import dataclass

from egspo.rl.config import RLConfig
from egspo.sft.config import SFTConfig
from egspo.workflow.config import ConfigError
from egspo.workflow.plan import Plan

# Rendezvous port of a multi-process job: distinct per Slurm job so two jobs on one node do not collide.
RDZV_PORT = "$((29500 + ${SLURM_JOB_ID:-0} % 20000))"


def flags(options: dict) -> str:
    """{"max_steps": 5, "quiet": True, "k": [1, 2]} -> "--max-steps 5 --quiet --k 1,2" (lists comma-joined, as the
    egspo parsers take them). None and False are left out; values are shell-quoted."""
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


def data_flags(data: dict, task: str) -> str:
    """Flags of `egspo data` for one task (config key 'data'): the shared keys, and ``--authors-test-draw N`` where
    ``data.authors_test_draw`` names the task (the authors' evaluation subsample, e.g. Sudoku 256 of 500)."""
    shared = {k: v for k, v in data.items() if k != "authors_test_draw"}
    return flags({**shared, "authors_test_draw": (data.get("authors_test_draw") or {}).get(task)})


def setting_flags(options: dict, config_class: type) -> str:
    """:func:`flags` of a stage's settings (``config_class`` its dataclass), except that a false boolean whose
    default is not false is written out as ``--flag false``: an optional override such as ``attend_to_pads``
    (unset = its fidelity mode's value) set to false must reach the command, where leaving it out would mean
    'unset'."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    explicit = [k for k, v in options.items() if v is False and defaults.get(k, False) is not False]
    rest = flags({k: v for k, v in options.items() if k not in explicit})
    return " ".join([rest, *(f"--{k.replace('_', '-')} false" for k in explicit)]).strip()


def model_flags(model: dict, command: str) -> str:
    """Loading and LoRA flags of a pretrained model (config key 'model') for `egspo sft` / `egspo rl`; none for the
    tiny model, whose directory says it all. LoRA targets are passed only when configured (else the family default
    of egspo.models.families: every attention and MLP projection)."""
    if command not in ("sft", "rl"):
        raise ValueError(f"model_flags: command must be sft or rl, got {command!r}")
    if model["kind"] == "tiny":
        return ""
    options = {"dtype": model.get("dtype")}
    if command == "rl":
        options["trust_remote_code"] = model.get("trust_remote_code")
        options["load_in_4bit"] = model.get("quantize_4bit")
    else:
        options["quantize_4bit"] = model.get("quantize_4bit")
    lora = model.get("lora")
    if lora:
        options.update({"lora_r": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"]})
        if lora.get("target_modules"):
            options["lora_targets"] = ",".join(lora["target_modules"])
    return flags(options)


def model_load_flags(model: dict) -> str:
    """`--dtype` / `--trust-remote-code` of `egspo eval` and `egspo trace` (none for the tiny model)."""
    if model["kind"] == "tiny":
        return ""
    options = {"dtype": model.get("dtype")}
    if model.get("trust_remote_code") is not None:
        options["trust_remote_code"] = "true" if model["trust_remote_code"] else "false"
    return flags(options)


def egspo_executable(python: str = sys.executable) -> str:
    """The `egspo` entry point beside the Python running Snakemake (so a venv need not be activated), else PATH's."""
    beside = os.path.join(os.path.dirname(python), "egspo")
    return shlex.quote(beside) if os.access(beside, os.X_OK) else "egspo"


@dataclass(frozen=True)
class Launcher:
    """How an sft / rl job starts: `egspo <args>` on one device; with gpus >= 2 on one node `accelerate launch
    --num_processes gpus`; with nodes >= 2 one `accelerate launch` per node started by `srun`, each told its node
    rank ($SLURM_NODEID) and the first node as rendezvous host. Slurm variables are defaulted or checked with a
    message (Snakemake runs `set -u`)."""

    egspo: str
    python: str
    accelerate_config: str

    def command(self, rule_name: str, gpus: int, nodes: int, args: str) -> str:
        if gpus < 2 and nodes < 2:
            return f"{self.egspo} {args}"
        if gpus < 1:
            raise ConfigError(f"config key 'resources.{rule_name}.nodes' = {nodes} needs gpu >= 1 per node")
        accelerate = (f"{shlex.quote(self.python)} -m accelerate.commands.launch --config_file "
                      f"{shlex.quote(self.accelerate_config)} --num_processes {gpus * nodes} --num_machines {nodes}")
        if nodes < 2:
            return f"{accelerate} --main_process_port {RDZV_PORT} -m egspo.cli {args}"
        per_node = (f"{accelerate} --machine_rank $SLURM_NODEID --main_process_ip $EGSPO_HEAD_NODE "
                    f"--main_process_port $EGSPO_PORT -m egspo.cli {args}")
        return ("export EGSPO_HEAD_NODE=$(scontrol show hostnames "
                "\"${SLURM_JOB_NODELIST:?a multi-node job needs a Slurm allocation}\" | head -n 1); "
                f"export EGSPO_PORT={RDZV_PORT}; "
                f"srun --nodes={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c {shlex.quote(per_node)}")


def check_processes(rule_name: str, gpus: int, nodes: int, batch_size: int) -> None:
    """An rl job's prompts per iteration must split evenly over its processes (gpu * nodes)."""
    processes = max(gpus, 1) * nodes
    if batch_size % processes:
        raise ConfigError(f"rl batch_size {batch_size} (prompts per iteration) is not divisible by the {processes} "
                          f"processes of rule {rule_name!r} (resources gpu x nodes; the Slurm profile may override "
                          f"gpu): choose a divisor of the batch size as the GPU count")


def rl_args(plan: Plan, task: str, method: str, seed: int | str) -> str:
    """Arguments of `egspo rl` for run (train task, method, seed)."""
    settings = plan.method_settings(method, task)
    return (f"rl --model {plan.start_model(task, seed)} --task {task} --train {plan.paths.data_path(task, 'train')} "
            f"--out {plan.rl_dir(task, method, seed)} --seed {seed} --style {plan.C['style']} "
            f"{setting_flags(settings, RLConfig)} "
            f"--on-settings-change restart {model_flags(plan.C['model'], 'rl')}")


def rl_signature(plan: Plan, task: str, method: str, seed: int | str) -> str:
    """What an rl job computes, as a plain function of its wildcards (Snakemake's rerun trigger on params)."""
    return (f"{plan.start_model(task, seed)} {plan.paths.data_path(task, 'train')} {plan.C['style']} "
            f"{setting_flags(plan.method_settings(method, task), RLConfig)} {model_flags(plan.C['model'], 'rl')}")


def sft_args(plan: Plan, run: str, seed: int | str) -> str:
    """Arguments of `egspo sft` for SFT run `run` (a train task, or `s1k`)."""
    options = {k: v for k, v in plan.sft_settings(run).items() if k not in ("enabled", "data", "seed")}
    if run == "s1k":
        data = f"--format s1k --train {shlex.quote(plan.C['sft']['data'])}"
    else:
        data = f"--task {run} --train {plan.paths.data_path(run, 'train')}"
    return (f"sft --model {plan.base_model()} {data} --out {plan.paths.sft_dir(run, seed)} --seed {seed} "
            f"--style {plan.C['style']} {setting_flags(options, SFTConfig)} {model_flags(plan.C['model'], 'sft')}")


def accuracy_flags(plan: Plan, methods: list[str], tasks: list[str] | None = None, evidence: bool = False) -> str:
    """The evaluation grid of `methods` for `egspo report accuracy` (files are found from it): the configured
    splits, `--task-splits` for a task that has fewer (HumanEval: test only), `--task-lengths` for a task evaluated
    at fewer generation lengths than the others and `--shared-seed` for a model before
    RL evaluated once for every RL seed. `evidence` (an ablation or sweep, when config key 'eval.variants' is set):
    the variants' lengths, and every method at the checkpoints a variant is evaluated at (its final ones), so all
    compared methods have trained for the same iterations."""
    C, start = plan.C, plan.start
    tasks = tasks or plan.tasks
    of_task = {t: plan.lengths(t, variant=evidence) for t in tasks}
    lengths = sorted(set().union(*of_task.values()))
    fewer_lengths = [f"{t}={','.join(map(str, ls))}" for t, ls in of_task.items() if ls != lengths]
    ckpts = " ".join(f"{t}:{m}={','.join(plan.checkpoints(m, t, variant=evidence or None))}"
                     for t in tasks for m in methods)
    fewer = [f"{t}={','.join(plan.eval_splits(t))}" for t in tasks if plan.eval_splits(t) != list(C["eval"]["splits"])]
    shared = [f"{t}:{start}={plan.start_eval_seed(t)}" for t in tasks
              if start in methods and plan.start_eval_seed(t) is not None]
    return (f"--eval-dir {plan.paths.eval_root} --tasks {' '.join(tasks)} --methods {' '.join(methods)} "
            f"--seeds {' '.join(map(str, plan.seeds))} --lengths {' '.join(map(str, lengths))} "
            f"--splits {' '.join(C['eval']['splits'])} --checkpoints {ckpts}"
            + (f" --task-splits {' '.join(fewer)}" if fewer else "")
            + (f" --task-lengths {' '.join(fewer_lengths)}" if fewer_lengths else "")
            + (f" --shared-seed {' '.join(shared)}" if shared else ""))
