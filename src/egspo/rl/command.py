"""`egspo rl`: the command-line flags (derived from `RLConfig`'s fields, ``-`` for ``_``) and the call that trains."""

from __future__ import annotations

import argparse

from egspo.rl.config import RLConfig
from egspo.settings import add_arguments


def configure(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser, RLConfig)


def run(args: argparse.Namespace) -> int:
    from egspo.rl.trainer import RLTrainer

    config = RLConfig.from_namespace(args)
    RLTrainer(config).train()
    return 0


__all__ = ["configure", "run"]
