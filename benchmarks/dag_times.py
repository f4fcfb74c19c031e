"""Where a Snakemake run's time went: wall seconds per rule (and per RL method and task) from the run's own log.

    python benchmarks/dag_times.py .snakemake/log/<the run>.snakemake.log

Each job's time is from its start stamp to its `Finished jobid` stamp (the log's one-second resolution), so the
sum over jobs is job-seconds: on a 2-core run with two jobs at a time, about twice the wall time they overlap in.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from datetime import datetime

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def parse(lines) -> list[dict]:
    """[{rule, wildcards, seconds}] of every job the log saw start and finish."""
    stamp, started, jobs, current = None, {}, [], None
    for line in lines:
        line = line.rstrip("\n")
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := START.match(line):
            current = {"rule": m.group(1), "start": stamp, "wildcards": {}}
        elif current is not None and (m := JOBID.match(line)):
            started[m.group(1)] = current
        elif current is not None and (m := WILDCARDS.match(line)):
            current["wildcards"] = dict(pair.split("=", 1) for pair in m.group(1).split(", "))
        elif m := FINISHED.match(line):
            job = started.pop(m.group(1), None)
            if job is not None:
                jobs.append({"rule": job["rule"], "wildcards": job["wildcards"],
                             "seconds": (stamp - job["start"]).total_seconds()})
    return jobs


def table(groups: dict, title: str) -> str:
    total = sum(sum(v) for v in groups.values()) or 1.0
    rows = [f"| {title} | jobs | job-seconds | share | mean s/job |", "|---|---|---|---|---|"]
    for key, secs in sorted(groups.items(), key=lambda kv: -sum(kv[1])):
        rows.append(f"| {key} | {len(secs)} | {sum(secs):.0f} | {100 * sum(secs) / total:.1f} % | "
                    f"{sum(secs) / len(secs):.1f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="a .snakemake/log/*.snakemake.log file")
    args = parser.parse_args(argv)
    with open(args.log) as fh:
        jobs = parse(fh)
    if not jobs:
        print(f"{args.log}: no finished jobs found", file=sys.stderr)
        return 1
    by_rule, by_run = defaultdict(list), defaultdict(list)
    for job in jobs:
        by_rule[job["rule"]].append(job["seconds"])
        if job["rule"] == "rl" or job["rule"].startswith("eval"):
            wc = job["wildcards"]
            by_run[f"{job['rule'].split('_')[0]} {wc.get('task', '?')} {wc.get('method', '?')}"].append(job["seconds"])
    print(table(by_rule, "rule"))
    print()
    print(table(by_run, "stage, task, method"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
