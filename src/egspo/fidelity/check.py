"""`egspo fidelity check DIR`: recompute every case of an authors-reference fixture directory in authors mode.

Prints one line per (case, quantity) with the max absolute and relative error (`egspo.fidelity.compare`) and exits 0
only if every quantity is within the tolerance (1e-6 relative, float64). Cases are found by the ``"case"`` field of
each ``<name>.json``; a kind this version does not know is an error, so no case is skipped silently.
"""

from __future__ import annotations

import argparse
import sys

import torch

from egspo.fidelity.compare import TOLERANCE, Comparison
from egspo.fidelity.fixtures import Fixture, FixtureError


def _checkers() -> dict:
    from egspo.fidelity.d1_case import check_d1_loss
    from egspo.fidelity.sampler_cases import check_sampler, check_selection_variants
    from egspo.fidelity.update_cases import check_egspo_update, check_schedule

    return {"sampler": check_sampler, "selection_variants": check_selection_variants,
            "egspo_update": check_egspo_update, "schedule": check_schedule, "d1_loss": check_d1_loss}


def check_directory(root, tolerance: float = TOLERANCE, cases: list[str] | None = None) -> list[Comparison]:
    """Every comparison of every case (or of ``cases``) in ``root``; FixtureError on a bad file."""
    fx = Fixture(root)
    checkers = _checkers()
    results = []
    for name in cases or fx.case_names():
        case = fx.case(name)
        if case.kind not in checkers:
            raise FixtureError(f"{case.json_path}: unknown case kind {case.kind!r}; known: {sorted(checkers)}")
        for comparison in checkers[case.kind](fx, case):
            comparison.ok = comparison.max_rel <= tolerance
            results.append(comparison)
    return results


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="recompute every case of a fixture directory in authors mode")
    check.add_argument("directory", help="fixture directory (format: authors_reference/README.md)")
    check.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest relative error that passes")
    check.add_argument("--case", action="append", dest="cases", help="only this case (repeatable)")


def run(args) -> int:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    try:
        results = check_directory(args.directory, args.tolerance, args.cases)
    except FixtureError as exc:
        print(f"egspo fidelity check: bad fixture: {exc}", file=sys.stderr)
        return 2
    for comparison in results:
        print(comparison.line())
    failed = [c for c in results if not c.ok]
    print(f"{len(results) - len(failed)} of {len(results)} quantities within {args.tolerance:g} relative"
          + (f"; {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0
