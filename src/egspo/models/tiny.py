"""The tiny preset's masked-diffusion model (a randomly initialised ModernBERT masked LM + the character tokenizer)
and ``egspo build-model``, which writes it as one Hugging Face directory."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from egspo.models.saving import atomic_output_dir


def tiny_config(vocab_size: int, *, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                intermediate_size: int = 256, max_len: int = 128, pad_token_id: int = 0,
                eos_token_id: int | None = None, mask_token_id: int | None = None):
    """ModernBERT config for the tiny preset: every layer global attention (no sliding window), SiLU-gated MLP
    (SwiGLU, as LLaDA), rotary theta 10 000, no dropout, dense MLM logits, tied input / output embeddings; the
    tokenizer's pad / eos / mask ids recorded in the config."""
    from transformers import ModernBertConfig

    for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers), ("num_heads", num_heads),
                        ("intermediate_size", intermediate_size), ("max_len", max_len), ("vocab_size", vocab_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
    if (hidden_size // num_heads) % 2:
        raise ValueError(f"head dim hidden_size/num_heads = {hidden_size // num_heads} must be even (rotary)")
    return ModernBertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, hidden_activation="silu",
        max_position_embeddings=max_len, layer_types=["full_attention"] * num_layers,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
        local_attention=2 * max_len,  # unused (no sliding layers); kept >= the sequence length regardless
        pad_token_id=pad_token_id, eos_token_id=eos_token_id, mask_token_id=mask_token_id, bos_token_id=None,
        cls_token_id=None, sep_token_id=None, sparse_prediction=False, attention_dropout=0.0, embedding_dropout=0.0,
        mlp_dropout=0.0, tie_word_embeddings=True,
    )


def build_tiny_model(out_dir: str | os.PathLike, *, hidden_size: int = 128, num_layers: int = 4, num_heads: int = 4,
                     intermediate_size: int = 256, max_len: int = 128, seed: int = 0) -> Path:
    """Randomly initialised ``ModernBertForMaskedLM`` + the character tokenizer, saved (atomically) as one HF
    directory that ``AutoModelForMaskedLM`` / ``AutoTokenizer.from_pretrained`` load. Same seed, same weights."""
    from transformers import ModernBertForMaskedLM

    from egspo.models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer(max_len)
    config = tiny_config(len(tokenizer), hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                         intermediate_size=intermediate_size, max_len=max_len,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         mask_token_id=tokenizer.mask_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ModernBertForMaskedLM(config)
    out = Path(out_dir)
    with atomic_output_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    """``egspo build-model`` flags."""
    parser.add_argument("--out", required=True, help="output HF directory (model + tokenizer)")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--intermediate-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=128, help="longest prompt + completion in tokens")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """``egspo build-model``: write the tiny model dir and print its parameter count."""
    from egspo.models.loading import load_model

    out = build_tiny_model(args.out, hidden_size=args.hidden_size, num_layers=args.num_layers,
                           num_heads=args.num_heads, intermediate_size=args.intermediate_size,
                           max_len=args.max_len, seed=args.seed)
    n_params = sum(p.numel() for p in load_model(out).parameters())
    print(f"wrote {out} ({n_params:,} parameters)")
    return 0
