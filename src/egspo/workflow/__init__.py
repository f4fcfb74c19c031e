"""The Snakemake workflow's logic as plain Python: config merging and checks (config, checks), the one path
layout (paths), step schedules (schedule), the experiment grid (plan), shell-command pieces (shell) and the tables
that generate the evaluation rules (rules). The `.smk` files only bind these to rules that call `egspo`."""
