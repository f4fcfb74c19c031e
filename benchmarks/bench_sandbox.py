"""Sandbox throughput: programs graded per second.

    .venv/bin/python benchmarks/bench_sandbox.py [--workers 1 2 4] [--n 100] [--mbpp ../shared/data/mbpp_sample.jsonl]

Workloads: trivial passing programs (script mode; one assert test), a pytest-mode program (the KodCode path), and the
MBPP sample's reference solutions graded through ``egspo.tasks.mbpp`` (skipped when the file is absent). Prints one
JSON object per (workload, workers) with programs/s and the isolation mode; numbers depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from egspo.sandbox.runner import Program, isolation_mode, run_many

DEFAULT_MBPP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mbpp_sample.jsonl"


def _measure(name: str, programs: list[Program], workers: int, **limits) -> dict:
    t0 = time.perf_counter()
    results = run_many(programs, max_workers=workers, **limits)
    elapsed = time.perf_counter() - t0
    passed = sum(r.passed for r in results)
    return {"workload": name, "workers": workers, "programs": len(programs), "passed": passed,
            "seconds": round(elapsed, 3), "programs_per_s": round(len(programs) / elapsed, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--n", type=int, default=100, help="programs per trivial workload")
    parser.add_argument("--mbpp", type=Path, default=DEFAULT_MBPP)
    args = parser.parse_args(argv)
    if args.n < 1 or any(w < 1 for w in args.workers):
        parser.error("--n and --workers must be positive")
    mode = isolation_mode()
    print(json.dumps({"isolation": mode, "cpus": os.cpu_count(), "python": sys.version.split()[0]}))
    workloads = {
        "trivial_script": [Program("x = sum(range(100))\n") for _ in range(args.n)],
        "trivial_asserts": [Program("def f(x):\n    return x + 1\n", tests=("assert f(1) == 2",))
                            for _ in range(args.n)],
        "trivial_pytest": [Program("def f(x):\n    return x + 1\n",
                                   test_module="from solution import f\n\ndef test_f():\n    assert f(1) == 2\n")
                           for _ in range(max(1, args.n // 4))],
    }
    for workers in args.workers:
        for name, programs in workloads.items():
            row = _measure(name, programs, workers, timeout_s=30.0)
            assert row["passed"] == row["programs"], row
            print(json.dumps(row))
        if args.mbpp.is_file():
            from egspo.tasks import get_task

            task = get_task("mbpp")
            rows = task.load("test", source=str(args.mbpp))
            programs = [task.program(r["code"], r) for r in rows]
            row = _measure("mbpp_sample_references", programs, workers, timeout_s=30.0)
            print(json.dumps(row))
        else:
            print(json.dumps({"workload": "mbpp_sample_references", "skipped": f"{args.mbpp} not found"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
