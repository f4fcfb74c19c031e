"""Targeted reruns never clobber the default run. A `snakemake --config ...` override that changes what is computed
writes to directories derived from the override, unless it names them itself (`work_dir=...`, `results_dir=...`):

- overrides that only select part of the grid (`tasks`, `seeds`, `compare`, new method names under `methods`)
  compute nothing new: they share the work directory and get their own results directory;
- any other override (`rl`, `sft`, `eval`, changed `methods` entries, ...) gets both its own work and results
  directories, so no run of the default configuration is redone in place.

The derived name is the overridden keys plus 8 hex digits of the override's SHA-256, e.g. `work/variants/rl-3f2a9c1b`:
the same override always maps to the same directories, so a rerun resumes there. A `--configfile` is a
configuration of one's own, not an override: it names its own directories."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

# keys that say where to write (never part of a variant's identity) or which preset to start from
PLACEMENT_KEYS = ("preset", "work_dir", "results_dir")
# keys that only select which part of the grid runs and is reported
SELECTION_KEYS = ("tasks", "seeds", "compare", "evidence_in_all")


@dataclass(frozen=True)
class Placement:
    work_dir: str
    results_dir: str
    note: str  # one line for the user ("" for the default run)


def variant_name(overrides: dict) -> str:
    """`<key>[-<key>...]-<8 hex>`: the overridden top-level keys and a hash of the whole override."""
    digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return "-".join(sorted(overrides)) + "-" + digest


def only_selects(overrides: dict, preset: dict) -> bool:
    """True when `overrides` adds no computation of its own: grid selection, and only new method names."""
    for key, value in overrides.items():
        if key == "methods":
            if not isinstance(value, dict) or any(name in preset.get("methods", {}) for name in value):
                return False
        elif key not in SELECTION_KEYS:
            return False
    return True


def placement(cli_overrides: dict, preset: dict) -> Placement:
    """Where a run with `--config` values `cli_overrides` writes, given its preset block `preset` (the selected
    entry of `presets`, with the default `work_dir` / `results_dir`)."""
    work, results = cli_overrides.get("work_dir"), cli_overrides.get("results_dir")
    overrides = {k: v for k, v in cli_overrides.items() if k not in PLACEMENT_KEYS}
    base_work, base_results = preset["work_dir"].rstrip("/"), preset["results_dir"].rstrip("/")
    if not overrides:
        return Placement(work or base_work, results or base_results, "")
    name = variant_name(overrides)
    shared = only_selects(overrides, preset)
    work = work or (base_work if shared else f"{base_work}/variants/{name}")
    results = results or f"{base_results}/variants/{name}"
    return Placement(work, results,
                     f"egspo: --config overrides {', '.join(sorted(overrides))}: work in {work}, results in {results} "
                     f"(the default run's directories are left alone; set work_dir= / results_dir= to name them)")
