"""A small float64 ModernBERT masked LM shared by the core tests (eager attention, which applies the mask)."""

import torch
from transformers import ModernBertConfig, ModernBertForMaskedLM

MASK = 1


def tiny_bert(seed: int = 0, *, vocab: int = 16, hidden: int = 32, layers: int = 2, intermediate: int = 48,
              scale: float = 6.0) -> ModernBertForMaskedLM:
    """Random weights from ``seed``; the matrices are multiplied by ``scale`` so the distributions are far from
    uniform. Pad 0, mask 1, bos 2, eos 3."""
    cfg = ModernBertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=intermediate, max_position_embeddings=64, pad_token_id=0, mask_token_id=MASK,
        bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3, attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = ModernBertForMaskedLM(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return model
