# The effective configuration and the names every rule file uses, bound from egspo.workflow (plain Python with
# unit tests in tests/test_workflow_plan.py). No algorithm or planning code here.

import os
import sys

from egspo.workflow.checks import check_config
from egspo.workflow.plan import Plan
from egspo.workflow.rules import eval_rules, inherited_set_resources
from egspo.workflow.shell import Launcher, egspo_executable, flags, model_load_flags

PLAN = Plan.from_raw(config)
check_config(PLAN)
C, PATHS, START = PLAN.C, PLAN.paths, PLAN.start
W, R, LOGS, STYLE = PATHS.work, PATHS.results, PATHS.logs, C["style"]
TASKS, SEEDS, RL_TASKS = PLAN.tasks, PLAN.seeds, PLAN.rl_tasks
EGSPO = egspo_executable()
LAUNCHER = Launcher(EGSPO, sys.executable,
                    os.path.join(workflow.basedir, C.get("accelerate_config", "configs/accelerate/ddp.yaml")))
data_path = PATHS.data_path
EVAL_RULES = eval_rules(PLAN)
# A profile's `set-resources` entry for rule `eval` applies to every generated evaluation rule (eval_start,
# eval_countdown, eval_part3, ...) unless it names one; set before any rule is defined.
workflow.resource_settings.overwrite_resources = inherited_set_resources(
    workflow.resource_settings.overwrite_resources, EVAL_RULES)


wildcard_constraints:
    task="[a-z][a-z0-9]*",
    method="[a-z][a-z0-9_]*",
    seed="[0-9]+",
    ckpt="sft|base|step_[0-9]+",
    length="[0-9]+",
    split="train|validation|test",
    last="[0-9]+",
