"""Loading: one loader for every model family (plain, with a fresh LoRA adapter, a saved adapter dir, or 4-bit
quantized), the tokenizer, and the [MASK] id."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from egspo.models.diffusion_lm import DiffusionLM
from egspo.models.families import FAMILIES, detect_family, family_by_name, read_json_config
from egspo.models.lora import lora_config

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32" | "bfloat16" | "float16"`` (or a ``torch.dtype``) as a ``torch.dtype``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def load_tokenizer(path: str | os.PathLike, *, trust_remote_code: bool | None = None):
    """``AutoTokenizer.from_pretrained`` of a model dir, adapter dir (its own tokenizer files, else its base's) or
    hub id; ``trust_remote_code=None`` uses the family default (Dream's tokenizer is remote code)."""
    from transformers import AutoTokenizer

    path = str(path)
    local = Path(path)
    if (local / "adapter_config.json").is_file() and not any(
            (local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        path = read_json_config(local / "adapter_config.json")["base_model_name_or_path"]
    if trust_remote_code is None:
        trust_remote_code = detect_family(path).trust_remote_code
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def mask_token_id(tokenizer_or_config: Any) -> int:
    """The [MASK] id: LLaDA's fixed 126336 when the object belongs to LLaDA (by ``model_type``, hub id, or the
    config.json of the local dir it was loaded from), else the object's ``mask_token_id`` (a tokenizer, a config,
    or a :class:`DiffusionLM`'s config)."""
    obj = tokenizer_or_config
    if isinstance(obj, DiffusionLM):
        if obj.family.fixed_mask_token_id is not None:
            return obj.family.fixed_mask_token_id
        obj = obj.config
    model_type = str(getattr(obj, "model_type", "")).lower()
    name = str(getattr(obj, "name_or_path", "") or getattr(obj, "_name_or_path", "")).lower().rstrip("/")
    for fam in FAMILIES.values():
        if fam.fixed_mask_token_id is not None and (model_type in fam.model_types or name in fam.hub_ids):
            return fam.fixed_mask_token_id
    raw_name = str(getattr(obj, "name_or_path", "") or getattr(obj, "_name_or_path", ""))
    if raw_name and Path(raw_name).is_dir():  # a local copy (e.g. of LLaDA): its config.json names the family
        try:
            fixed = detect_family(raw_name).fixed_mask_token_id
        except ValueError:
            fixed = None
        if fixed is not None:
            return fixed
    mid = getattr(obj, "mask_token_id", None)
    if mid is None:
        raise ValueError(f"{type(obj).__name__} (name_or_path={name!r}) has no mask token id; pass the model's "
                         "tokenizer, or a LLaDA/Dream tokenizer or config")
    return int(mid)


def load_model(path_or_hub_id: str | os.PathLike, *, dtype: str | torch.dtype = "float32",
               lora: dict[str, Any] | None = None, quantize_4bit: bool = False,
               trust_remote_code: bool | None = None, device: str | torch.device | None = None,
               base: str | os.PathLike | None = None, is_trainable: bool = True,
               family: str | None = None) -> DiffusionLM:
    """Load a model dir / hub id (optionally adding a fresh LoRA adapter) or a saved adapter dir (its base from
    ``adapter_config.json``, or ``base``) into a :class:`DiffusionLM`.

    dtype: "float32" | "bfloat16" | "float16". quantize_4bit: bitsandbytes NF4 weights (compute in ``dtype``),
    needs bitsandbytes and a GPU. trust_remote_code: None = the family's default (True for LLaDA / Dream).
    is_trainable: adapter dirs load with trainable LoRA weights (resume) or frozen (evaluation).
    """
    import transformers

    name = str(path_or_hub_id)
    adapter_dir = Path(name) if (Path(name) / "adapter_config.json").is_file() else None
    if adapter_dir is not None and lora is not None:
        raise ValueError(f"{name} is already a LoRA adapter dir; pass lora=None to load it")
    if base is not None and adapter_dir is None:
        raise ValueError(f"base={base!r} given but {name} is not an adapter dir")
    base_name = name
    if adapter_dir is not None:
        base_name = str(base) if base is not None else read_json_config(adapter_dir / "adapter_config.json").get(
            "base_model_name_or_path") or ""
        if not base_name:
            raise ValueError(f"adapter dir {adapter_dir} names no base model; pass base=")
    fam = family_by_name(family) if family else detect_family(base_name)
    remote = fam.trust_remote_code if trust_remote_code is None else bool(trust_remote_code)
    torch_dt = torch_dtype(dtype)

    kwargs: dict[str, Any] = {"dtype": torch_dt, "trust_remote_code": remote}
    if quantize_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError("quantize_4bit=True needs bitsandbytes: pip install 'egspo[quant]' (GPU only)")
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dt,
            bnb_4bit_use_double_quant=True)
        if device is None:
            if not torch.cuda.is_available():
                raise ValueError("quantize_4bit=True needs a CUDA device")
            device = torch.device("cuda", torch.cuda.current_device())
        kwargs["device_map"] = {"": device}
    auto_cls = getattr(transformers, fam.auto_class)
    model = auto_cls.from_pretrained(base_name, **kwargs)

    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    elif lora is not None:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if quantize_4bit:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, lora_config(lora, fam))
    if device is not None and not quantize_4bit:
        model = model.to(device)
    return DiffusionLM(model, fam)
