"""``egspo merge``: fold a LoRA adapter checkpoint into its base model and save a plain HF model directory.

W' = W + (alpha / r) * B A for every adapted module (peft's ``merge_and_unload``); the result loads with the
base's Auto class and ``from_pretrained`` alone, no peft needed. The tokenizer is taken from the adapter dir when it
has one, else from the base.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from egspo.models.diffusion_lm import DiffusionLM
from egspo.models.loading import load_model, load_tokenizer
from egspo.models.saving import save_model


def merge_adapter(adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                  base: str | os.PathLike | None = None, dtype: str = "float32") -> Path:
    """Load base + adapter, merge, and atomically save the merged model + tokenizer to ``out_dir``."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"--adapter {adapter_dir}: no adapter_config.json (not a peft adapter dir)")
    model = load_model(adapter_dir, base=base, dtype=dtype, is_trainable=False)
    merged = DiffusionLM(model.model.merge_and_unload(), model.family)
    tokenizer = load_tokenizer(adapter_dir) if base is None or _has_tokenizer(adapter_dir) else load_tokenizer(base)
    return save_model(merged, out_dir, tokenizer)


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", required=True, help="LoRA adapter dir (a checkpoint)")
    parser.add_argument("--out", required=True, help="output HF model dir (written atomically)")
    parser.add_argument("--base", help="base model dir / hub id (default: the adapter's base_model_name_or_path)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))


def run(args: argparse.Namespace) -> int:
    out = merge_adapter(args.adapter, args.out, base=args.base, dtype=args.dtype)
    print(f"wrote {out}")
    return 0


__all__ = ["merge_adapter"]
