# EGSPO / EGSPO-SA pipeline: data -> build-model -> SFT -> RL -> eval -> report (tables and figures in results/).
#   snakemake --cores all --profile profiles/local                   # the default run (tiny preset)
#   snakemake --cores all --profile profiles/local ablate_reward     # ablations are their own targets
# The rules live in workflow/rules/; each calls one `egspo` subcommand. config.yaml is validated against
# workflow/schemas/config.schema.yaml before any job starts.

import os

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/config.smk"


coerce_cli_scalars(config)
validate(config, "workflow/schemas/config.schema.yaml", set_default=False)


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
