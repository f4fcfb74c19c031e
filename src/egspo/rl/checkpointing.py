"""RL checkpoints: ``OUT/checkpoints/step_{N}/`` = the model (``save_pretrained``: a full HF dir, or only the LoRA
adapter for a peft model) + tokenizer + ``trainer_state.pt``, written atomically and durably (filled in
``step_{N}.tmp``, every file fsynced, then renamed), so a directory named ``step_{N}`` is always complete.

A resume starts from :func:`latest_loadable_checkpoint`: the newest checkpoint whose files all load (a truncated
``model.safetensors`` or an empty ``trainer_state.pt``, e.g. from a disk that lost its cache, is reported by path and
skipped for the previous one). One line on stderr says which checkpoint the run resumes from.

``trainer_state.pt`` holds the iteration count N, the optimizer and scheduler states, the prompt-order position and
the random states of every process (torch CPU / CUDA, python ``random``, numpy and the trainer's sampling
generator), indexed by rank.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egspo.rl.run_layout import STEP_DIR as _STEP_DIR, checkpoint_path, checkpoint_root  # noqa: F401 (re-exported)
from egspo.utils.files import atomic_output_dir, atomic_write_text

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


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why checkpoint dir ``path`` cannot be resumed from, or None: ``trainer_state.pt`` must unpickle to a dict with
    an ``iteration``; the dir must hold model weights, and every ``*.safetensors`` file must have a complete header
    and data section (``safetensors.safe_open`` checks that the file covers every tensor's bytes)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        state = load_trainer_state(path)
    except Exception as exc:  # torch.load raises EOFError, RuntimeError, UnpicklingError, ... on a damaged file
        return f"{path / STATE_FILE}: {type(exc).__name__}: {exc}"
    if not isinstance(state, dict) or "iteration" not in state:
        return f"{path / STATE_FILE}: not a trainer state (no 'iteration')"
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not any(path.glob("*.bin")):
        return f"{path}: no model weights (*.safetensors or *.bin)"
    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # SafetensorError (truncated header / data), OSError
            return f"{file}: {type(exc).__name__}: {exc}"
    return None


def _log(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(f"egspo rl: {message}", file=sys.stderr, flush=True)


def latest_loadable_checkpoint(out_dir: str | os.PathLike) -> tuple[int, Path] | None:
    """``(N, path)`` of the newest complete checkpoint that loads (:func:`checkpoint_problem`); each newer one that
    does not is reported on stderr by path and skipped. None (also reported) when there is no loadable one: the run
    starts from the beginning, and later saves replace the damaged directories."""
    found = complete_checkpoints(out_dir)
    for step, path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            _log(f"resuming from {path} (iteration {step})")
            return step, path
        _log(f"warning: checkpoint {path} cannot be loaded ({problem}); falling back to the previous one")
    if found:
        _log(f"warning: none of the {len(found)} checkpoints in {checkpoint_root(out_dir)} can be loaded; "
             f"starting from the beginning")
    else:
        _log(f"starting from the beginning (no checkpoint in {checkpoint_root(out_dir)})")
    return None


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
    "checkpoint_problem",
    "latest_checkpoint",
    "latest_loadable_checkpoint",
    "load_trainer_state",
    "restore_rng_state",
    "save_checkpoint",
    "truncate_metrics",
]
