"""RL checkpoints: ``OUT/checkpoints/step_{N}/`` = the model (``save_pretrained``: a full HF dir, or only the LoRA
adapter for a peft model) + tokenizer + ``trainer_state.pt``, written atomically (filled in ``step_{N}.tmp`` and
renamed), so a directory named ``step_{N}`` is always complete.

``trainer_state.pt`` holds the iteration count N, the optimizer and scheduler states, the prompt-order position and
the random states of every process (torch CPU / CUDA, python ``random``, numpy and the trainer's sampling
generator), indexed by rank.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egspo.rl.run_layout import STEP_DIR as _STEP_DIR, checkpoint_path, checkpoint_root  # noqa: F401 (re-exported)
from egspo.utils.files import atomic_write_text

STATE_FILE = "trainer_state.pt"


def complete_checkpoints(out_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(N, path)`` of every complete checkpoint (a ``step_N`` dir holding ``trainer_state.pt``), ascending N."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(out_dir: str | os.PathLike) -> tuple[int, Path] | None:
    found = complete_checkpoints(out_dir)
    return found[-1] if found else None


def capture_rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """Random states of this process: torch (CPU and, if present, every CUDA device), python, numpy, and
    ``generator`` (the trainer's own sampling generator)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "generator": generator.get_state() if generator is not None else None,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if generator is not None:
        if state.get("generator") is None:
            raise ValueError("the checkpoint has no sampling-generator state to restore")
        generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: str | os.PathLike, step: int, model, tokenizer, trainer_state: dict[str, Any]) -> Path:
    """Write ``step_{step}/`` atomically (model or adapter, tokenizer, ``trainer_state.pt``). Call on one process."""
    from egspo.models.saving import atomic_output_dir

    target = checkpoint_path(out_dir, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output_dir(target) as tmp:
        model.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        torch.save(trainer_state, tmp / STATE_FILE)
    return target


def load_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.pt`` of checkpoint dir ``path``. (``weights_only=False``: the file holds python/numpy
    RNG states; it is only ever read from checkpoints this trainer wrote.)"""
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)


def truncate_metrics(path: str | os.PathLike, last_step: int) -> int:
    """Keep only the rows of the JSONL file ``path`` with ``step <= last_step`` (rewritten atomically); returns the
    number of rows kept. A missing file counts as empty. A trailing partial line (a crash mid-write) is dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(row.get("step", -1)) <= last_step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return len(kept)


__all__ = [
    "STATE_FILE",
    "capture_rng_state",
    "checkpoint_path",
    "checkpoint_root",
    "complete_checkpoints",
    "latest_checkpoint",
    "load_trainer_state",
    "restore_rng_state",
    "save_checkpoint",
    "truncate_metrics",
]
