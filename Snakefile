# EGSPO / EGSPO-SA pipeline: data -> build-model -> SFT -> RL -> eval -> report (tables and figures in results/).
#   snakemake --cores all --profile profiles/local                   # the default run (tiny preset)
#   snakemake --cores all --profile profiles/local ablate_reward     # ablations are their own targets
# The rules live in workflow/rules/; each calls one `egspo` subcommand. The logic behind them (config merging and
# checks, the path layout, schedules, the generated evaluation rules) is plain Python in egspo.workflow. config.yaml
# is validated against workflow/schemas/config.schema.yaml, then by egspo.workflow.checks, before any job starts.

import copy
import os
import sys

from snakemake.utils import min_version, validate

from egspo.workflow.config import coerce_cli_scalars
from egspo.workflow.variants import placement

min_version("9.0")

# Pinned CPU numerics (egspo.utils.numerics: AVX2 kernels in PyTorch, MKL and oneDNN, OMP/MKL threads) in this
# process's environment, which every job inherits: local jobs, and Slurm jobs (sbatch exports it; their own
# Snakemake parses this file again). Each `egspo` command also pins itself. EGSPO_NUMERICS=native switches it off.
from egspo.utils import numerics

numerics.pin_environment()


configfile: os.path.join(workflow.basedir, "config.yaml")


# `--config` values arrive as strings ('0', '2e-4'): typed before validation
coerce_cli_scalars(config)
validate(config, "workflow/schemas/config.schema.yaml", set_default=False)
# a --config override that changes what is computed runs in directories of its own (egspo.workflow.variants)
PLACEMENT = placement(coerce_cli_scalars(copy.deepcopy(dict(workflow.config_settings.config))),
                      config["presets"][config["preset"]])
config["work_dir"], config["results_dir"] = PLACEMENT.work_dir, PLACEMENT.results_dir
if PLACEMENT.note:
    print(PLACEMENT.note, file=sys.stderr)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/rl.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ablations.smk"


rule all:
    input:
        DEFAULT_RESULTS,
        DEFAULT_WORK,
        EVIDENCE if C.get("evidence_in_all") else [],
