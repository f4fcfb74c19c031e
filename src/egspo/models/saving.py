"""Saving a model directory atomically and durably (:func:`egspo.utils.files.atomic_output_dir`: fill ``OUT.tmp``,
fsync, then rename over ``OUT``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from egspo.utils.files import atomic_output_dir


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


__all__ = ["atomic_output_dir", "save_model"]
