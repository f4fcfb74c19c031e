"""Saving a model directory atomically (fill ``OUT.tmp``, then rename over ``OUT``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Write a directory atomically: fill ``OUT.tmp`` inside the block, then it replaces ``OUT`` (an existing
    ``OUT`` is moved aside and deleted only after the new one is in place). On error ``OUT`` is untouched."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_model(model: nn.Module, out_dir: str | os.PathLike, tokenizer: Any = None, *,
               extra_files: dict[str, str] | None = None) -> Path:
    """Atomically save a model (plain HF dir, or an adapter dir for a peft model) with its tokenizer and optional
    extra text files (name -> content) into ``out_dir``."""
    with atomic_output_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for fname, content in (extra_files or {}).items():
            (tmp / fname).write_text(content, encoding="utf-8")
    return Path(out_dir)
