"""Names inside an RL run directory, without torch (the workflow imports them when it plans the DAG):
``OUT/checkpoints/step_{N}/`` is the checkpoint after N optimizer steps."""

from __future__ import annotations

import os
import re
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_name(step: int) -> str:
    """``step_{N}``: the directory name of the checkpoint after N optimizer steps."""
    return f"step_{int(step)}"


def checkpoint_root(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR


def checkpoint_path(out_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_root(out_dir) / checkpoint_name(step)
