"""Model families: what differs between LLaDA, Dream, the tiny ModernBERT and other masked LMs, and how a model
directory, adapter directory, hub id or config is mapped to its family.

* ``modernbert`` (the tiny preset): ``ModernBertForMaskedLM``, position-aligned logits.
* ``llada`` (``GSAI-ML/LLaDA-8B-Instruct``): ``AutoModel`` with ``trust_remote_code``; mask token id 126336
  (``<|mdm_mask|>``), fixed by the model. Its block modules are ``q_proj, k_proj, v_proj, attn_out, ff_proj (gate),
  up_proj, ff_out (down)``; the top-level ``transformer.ff_out`` is the LM head, so the LoRA targets are a regex
  restricted to ``blocks``.
* ``dream`` (``Dream-org/Dream-v0-Instruct-7B``): ``AutoModel`` with ``trust_remote_code``; AR-initialised, so
  ``logits[:, i]`` predicts token i+1 (``shift_logits``) and a padded batch needs a 4-D mask + position ids.
* ``masked_lm``: any other transformers ``*ForMaskedLM`` (LoRA targets must be given).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LLADA_MASK_TOKEN_ID = 126336


@dataclass(frozen=True)
class ModelFamily:
    """What differs between model families, and nothing else."""

    name: str
    auto_class: str                        # transformers Auto class that loads it
    model_types: tuple[str, ...]           # config.model_type values (lower case)
    hub_ids: tuple[str, ...]               # known hub ids (lower case match)
    trust_remote_code: bool                # needs the repo's own modeling code
    lora_target_modules: tuple[str, ...] | str | None  # peft target_modules (names or one regex)
    fixed_mask_token_id: int | None = None  # the mask id when the model fixes it (LLaDA)
    shift_logits: bool = False             # logits[:, i] predicts token i+1 (AR-initialised models)
    attention: str = "2d"                  # "2d": HF [N, S] mask; "dream": 4-D bool mask + position ids


FAMILIES: dict[str, ModelFamily] = {
    "modernbert": ModelFamily(
        name="modernbert", auto_class="AutoModelForMaskedLM", model_types=("modernbert",), hub_ids=(),
        trust_remote_code=False, lora_target_modules=("Wqkv", "Wo", "Wi"),  # attn qkv, attn out + MLP out, MLP in
    ),
    "llada": ModelFamily(
        name="llada", auto_class="AutoModel", model_types=("llada",),
        hub_ids=("gsai-ml/llada-8b-instruct", "gsai-ml/llada-8b-base", "gsai-ml/llada-1.5"),
        trust_remote_code=True,
        lora_target_modules=r".*blocks\.\d+\.(q_proj|k_proj|v_proj|attn_out|ff_proj|up_proj|ff_out)",
        fixed_mask_token_id=LLADA_MASK_TOKEN_ID,
    ),
    "dream": ModelFamily(
        name="dream", auto_class="AutoModel", model_types=("dream",),
        hub_ids=("dream-org/dream-v0-instruct-7b", "dream-org/dream-v0-base-7b"),
        trust_remote_code=True,
        lora_target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        shift_logits=True, attention="dream",
    ),
    # any other transformers masked LM (BERT-style): position-aligned logits; LoRA targets must be given
    "masked_lm": ModelFamily(
        name="masked_lm", auto_class="AutoModelForMaskedLM", model_types=(), hub_ids=(),
        trust_remote_code=False, lora_target_modules=None,
    ),
}


def read_json_config(path: Path) -> dict[str, Any]:
    """A model directory's ``config.json`` / ``adapter_config.json`` as a dict."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def detect_family(path_or_hub_id: str | os.PathLike, config: Any = None) -> ModelFamily:
    """The family of a model dir, hub id, adapter dir or config (``config.model_type``)."""
    if config is not None:
        model_type = str(getattr(config, "model_type", "")).lower()
        for fam in FAMILIES.values():
            if model_type in fam.model_types:
                return fam
    name = str(path_or_hub_id)
    for fam in FAMILIES.values():
        if name.lower().rstrip("/") in fam.hub_ids:
            return fam
    path = Path(name)
    if (path / "adapter_config.json").is_file():
        base = read_json_config(path / "adapter_config.json").get("base_model_name_or_path")
        if not base:
            raise ValueError(f"adapter dir {path} has no base_model_name_or_path in adapter_config.json")
        return detect_family(base)
    if (path / "config.json").is_file():
        cfg = read_json_config(path / "config.json")
        model_type = str(cfg.get("model_type", "")).lower()
        for fam in FAMILIES.values():
            if model_type in fam.model_types:
                return fam
        if any(str(a).endswith("ForMaskedLM") for a in cfg.get("architectures") or ()):
            return FAMILIES["masked_lm"]
        raise ValueError(f"unknown model family in {path}/config.json: model_type={model_type!r}; "
                         f"known: {', '.join(t for f in FAMILIES.values() for t in f.model_types)} or a *ForMaskedLM")
    known = ", ".join(h for f in FAMILIES.values() for h in f.hub_ids)
    raise ValueError(f"model {name!r}: not a local model / adapter directory (no config.json or "
                     f"adapter_config.json) and not a known hub id ({known})")


def family_by_name(name: str) -> ModelFamily:
    """The family called ``name`` (a key of :data:`FAMILIES`)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]
