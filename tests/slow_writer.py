"""A stand-in `egspo` command for the lock tests: ``python tests/slow_writer.py --out FILE --seconds S`` runs through
``egspo.cli.main`` (the real handler and output locks) as command ``slow-write``, announces on stdout that it holds
the lock, waits ``S`` seconds (the time a real stage would spend on model work) and then writes ``FILE``."""

from __future__ import annotations

import argparse
import sys
import time


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, required=True)


def run(args: argparse.Namespace) -> int:
    from egspo.utils.files import atomic_write_text

    print("holding the lock", flush=True)
    time.sleep(args.seconds)
    atomic_write_text(args.out, "done\n")
    return 0


if __name__ == "__main__":
    from egspo import cli

    sys.modules["slow_writer"] = sys.modules[__name__]
    cli.COMMANDS["slow-write"] = ("slow_writer", "write --out after --seconds")
    cli.WRITES["slow-write"] = lambda a: [a.out]
    sys.exit(cli.main(["slow-write", *sys.argv[1:]]))
