"""How much of each RL and evaluation job of a finished run was model compute, and how much the rest (process
start-up, imports, model loading, grading, writing, Snakemake's own scheduling).

    python benchmarks/job_overhead.py RUN_DIR            # RUN_DIR: where `make run` ran (has .snakemake/log, work/)

Job-seconds come from the run's Snakemake log (benchmarks/dag_times.py); compute from the files the jobs wrote: an RL
run's `metrics.jsonl` (sampling + stepwise-advantage + update seconds of every iteration) and an evaluation's
`*.metrics.json` (`generation_s` of every model x length x split). Everything is measured in the same run, two jobs at
a time on two cores, so the compute seconds include the same contention as the job-seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dag_times import parse  # noqa: E402

RL_TIME_FIELDS = ("time_sampling_s", "time_advantage_s", "time_update_s")


def rl_compute(work: Path, wc: dict) -> float:
    """Seconds of the RL run's iterations (the last record of each step, as a resumed run may repeat one)."""
    steps = {}
    for line in (work / "rl" / wc["task"] / wc["method"] / f"seed{wc['seed']}" / "metrics.jsonl").open():
        row = json.loads(line)
        steps[row["step"]] = sum(row.get(k, 0.0) for k in RL_TIME_FIELDS)
    return sum(steps.values())


def eval_compute(work: Path, wc: dict) -> float:
    """Seconds of greedy generation of every metrics file the evaluation job wrote."""
    folder = work / "eval" / wc["task"] / wc["method"]
    if "seed" in wc:
        folder = folder / f"seed{wc['seed']}"
    return sum(json.loads(p.read_text())["generation_s"] for p in folder.rglob("*.metrics.json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    logs = sorted((args.run_dir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        raise SystemExit(f"no Snakemake log under {args.run_dir}/.snakemake/log")
    jobs = parse(line for log in logs for line in log.open())
    work = args.run_dir / "work"
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for job in jobs:
        kind = "rl" if job["rule"] == "rl" else "eval" if job["rule"].startswith("eval") else None
        if kind is None:
            continue
        compute = rl_compute(work, job["wildcards"]) if kind == "rl" else eval_compute(work, job["wildcards"])
        groups[kind].append((job["seconds"], compute))
    print("| jobs | count | job-seconds | model compute s | rest s | rest per job s |")
    print("|---|---|---|---|---|---|")
    for kind, rows in groups.items():
        total, compute = sum(r[0] for r in rows), sum(r[1] for r in rows)
        print(f"| {kind} | {len(rows)} | {total:.0f} | {compute:.0f} | {total - compute:.0f} | "
              f"{(total - compute) / len(rows):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
