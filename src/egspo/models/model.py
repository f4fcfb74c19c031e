"""The model layer: the tiny preset's masked-diffusion model, and one loader for every model family.

Everything downstream (sampler, objective, trainer, SFT, evaluation) calls a model as
``model(input_ids=[N, S], attention_mask=[N, S] or None).logits -> [N, S, V]`` where ``logits[:, i]`` is the
denoiser's prediction p_theta(x_i | s) *for position i* (position-aligned). ``load_model`` returns a
:class:`DiffusionLM` that guarantees this for every family:

* ``modernbert`` (the tiny preset): ``ModernBertForMaskedLM`` (bidirectional, rotary, gated MLP), all layers global
  attention, dense logits (``sparse_prediction`` off). Left padding is exact: rotary scores depend only on relative
  positions and padded keys are masked out.
* ``llada`` (``GSAI-ML/LLaDA-8B-Instruct``): ``AutoModel`` with ``trust_remote_code``; ``.logits`` are already
  position-aligned; mask token id 126336 (``<|mdm_mask|>``), fixed by the model, not read from the tokenizer.
  Its block modules are ``q_proj, k_proj, v_proj, attn_out, ff_proj (gate), up_proj, ff_out (down)``; the top-level
  ``transformer.ff_out`` is the LM head, so the LoRA targets are a regex restricted to ``blocks``.
* ``dream`` (``Dream-org/Dream-v0-Instruct-7B``): ``AutoModel`` with ``trust_remote_code``; initialised from an
  autoregressive LM, so ``logits[:, i]`` predicts token i+1. Dream's own sampler realigns them as
  ``cat([logits[:, :1], logits[:, :-1]], dim=1)``, which :class:`DiffusionLM` applies. A padded batch is passed as
  Dream expects it: a 4-D boolean attention mask and ``position_ids = cumsum(mask) - 1``. Mask token from its
  tokenizer (``<|mask|>``).

LoRA uses peft with the authors' defaults (r 128, alpha 64, dropout 0.05) on all attention and MLP projections. The
reference policy pi_ref is the same network with its adapter disabled (:class:`ReferencePolicy`), or an explicit
frozen copy for full fine-tuning.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

# ----------------------------------------------------------------------------------------------------------------
# Model families
# ----------------------------------------------------------------------------------------------------------------

LLADA_MASK_TOKEN_ID = 126336
DEFAULT_LORA: dict[str, Any] = {"r": 128, "alpha": 64, "dropout": 0.05}
_LORA_KEYS = frozenset({"r", "alpha", "dropout", "target_modules"})


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


def _read_json(path: Path) -> dict[str, Any]:
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
        base = _read_json(path / "adapter_config.json").get("base_model_name_or_path")
        if not base:
            raise ValueError(f"adapter dir {path} has no base_model_name_or_path in adapter_config.json")
        return detect_family(base)
    if (path / "config.json").is_file():
        cfg = _read_json(path / "config.json")
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


def _family_by_name(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


# ----------------------------------------------------------------------------------------------------------------
# The position-aligned wrapper
# ----------------------------------------------------------------------------------------------------------------


class DiffusionLM(nn.Module):
    """A loaded model (plain HF or peft-wrapped) whose ``forward(input_ids, attention_mask=None)`` returns
    ``MaskedLMOutput(logits=[N, S, V])`` with ``logits[:, i]`` the prediction for position i.

    ``attention_mask`` ([N, S], True/1 on real tokens) is optional; an all-ones mask is dropped (no padding).
    Unknown attributes (``config``, ``disable_adapter``, ``enable_input_require_grads``...) are looked up on the
    wrapped model, so it can be used where the HF model would be.
    """

    def __init__(self, model: nn.Module, family: ModelFamily):
        super().__init__()
        self.model = model
        self.family = family

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name.startswith("__") or not modules or "model" not in modules:
                raise
            return getattr(modules["model"], name)

    @property
    def is_peft(self) -> bool:
        return is_peft_model(self.model)

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> MaskedLMOutput:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [N, S], got shape {tuple(input_ids.shape)}")
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                                 f"{tuple(input_ids.shape)}")
            mask = attention_mask.bool()
            if bool(mask.all()):
                mask = None
        if self.family.attention == "dream":
            if mask is None:
                out = self.model(input_ids=input_ids, attention_mask="full")
            else:
                # Real queries attend to real keys only (as in Dream's sampler); pad queries also see only real
                # keys, which keeps their (unused) rows finite instead of fully masked.
                attn = mask[:, None, None, :].expand(-1, 1, mask.shape[1], -1)
                position_ids = mask.long().cumsum(-1) - 1
                position_ids = position_ids.masked_fill(~mask, 1)
                out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids)
        else:
            out = self.model(input_ids=input_ids, attention_mask=mask)
        logits = out.logits if hasattr(out, "logits") else out[0]
        if self.family.shift_logits:
            logits = shift_logits_to_positions(logits)
        return MaskedLMOutput(logits=logits)

    def enable_activation_checkpointing(self) -> None:
        """Non-reentrant activation (gradient) checkpointing on the wrapped model: recompute each layer's
        activations in the backward pass instead of keeping them. transformers 5 renamed
        ``gradient_checkpointing_enable`` (kept for older versions) to ``activation_checkpointing_enable``. A peft
        model also gets input embeddings that require grad, so the frozen base passes gradients to the adapters."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if self.is_peft and hasattr(self.model, "enable_input_require_grads"):
            self.model.enable_input_require_grads()

    def save_pretrained(self, out_dir: str | os.PathLike, **kwargs: Any) -> None:
        """The wrapped model's ``save_pretrained``: a model dir, or an adapter dir for a peft model."""
        self.model.save_pretrained(str(out_dir), **kwargs)


def shift_logits_to_positions(logits: torch.Tensor) -> torch.Tensor:
    """AR-initialised dLLMs (Dream): ``logits[:, i]`` predicts token i+1. Returns position-aligned logits
    ``out[:, i] = logits[:, i-1]`` for i >= 1 and ``out[:, 0] = logits[:, 0]`` (position 0 is never predicted)."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def is_peft_model(model: nn.Module) -> bool:
    """True for a peft ``PeftModel`` (or a :class:`DiffusionLM` around one)."""
    from peft import PeftModel

    if isinstance(model, DiffusionLM):
        model = model.model
    return isinstance(model, PeftModel)


# ----------------------------------------------------------------------------------------------------------------
# The tiny model and tokenizer
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
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
        path = _read_json(local / "adapter_config.json")["base_model_name_or_path"]
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


def lora_config(lora: dict[str, Any], family: ModelFamily):
    """peft ``LoraConfig`` from ``{r, alpha, dropout, target_modules}`` (missing keys: r 128, alpha 64,
    dropout 0.05, the family's projections)."""
    from peft import LoraConfig

    unknown = set(lora) - _LORA_KEYS
    if unknown:
        raise ValueError(f"unknown lora keys {sorted(unknown)}; allowed: {sorted(_LORA_KEYS)}")
    spec = {**DEFAULT_LORA, **lora}
    if not isinstance(spec["r"], int) or spec["r"] < 1:
        raise ValueError(f"lora r must be a positive integer, got {spec['r']!r}")
    if not spec["alpha"] > 0:
        raise ValueError(f"lora alpha must be > 0, got {spec['alpha']!r}")
    if not 0.0 <= spec["dropout"] < 1.0:
        raise ValueError(f"lora dropout must be in [0, 1), got {spec['dropout']!r}")
    targets = spec.get("target_modules") or family.lora_target_modules
    if not targets:
        raise ValueError(f"family {family.name!r} has no default LoRA targets: set lora['target_modules']")
    if not isinstance(targets, str):
        targets = list(targets)
    return LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                      target_modules=targets, bias="none")


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
        base_name = str(base) if base is not None else _read_json(adapter_dir / "adapter_config.json").get(
            "base_model_name_or_path") or ""
        if not base_name:
            raise ValueError(f"adapter dir {adapter_dir} names no base model; pass base=")
    fam = _family_by_name(family) if family else detect_family(base_name)
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


# ----------------------------------------------------------------------------------------------------------------
# Reference policy
# ----------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def reference_logits_context(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, ``model`` computes the reference policy pi_ref: its LoRA adapter is disabled (peft's
    ``disable_adapter``). A model without an adapter has no built-in reference: use a frozen copy
    (:func:`frozen_copy`, :class:`ReferencePolicy`)."""
    inner = model.model if isinstance(model, DiffusionLM) else model
    if not is_peft_model(inner):
        raise ValueError("reference_logits_context needs a LoRA (peft) model; for full fine-tuning pass a frozen "
                         "copy of the initial policy to ReferencePolicy(frozen=...)")
    with inner.disable_adapter():
        yield model


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with ``requires_grad=False`` (the reference for full fine-tuning)."""
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


class ReferencePolicy:
    """pi_ref as a callable: ``ref(input_ids, attention_mask) -> logits [N, S, V]`` under ``torch.no_grad``.

    ``ReferencePolicy(policy)`` for a LoRA policy: the same weights with the adapter disabled (no second copy).
    ``ReferencePolicy(frozen=model)``: an explicit frozen model (full fine-tuning).
    """

    def __init__(self, policy: nn.Module | None = None, *, frozen: nn.Module | None = None):
        if (policy is None) == (frozen is None):
            raise ValueError("ReferencePolicy needs exactly one of policy (a LoRA model) or frozen (a frozen copy)")
        if policy is not None and not is_peft_model(policy):
            raise ValueError("ReferencePolicy(policy) needs a LoRA (peft) policy; without an adapter pass "
                             "frozen=frozen_copy(initial_policy)")
        if frozen is not None and any(p.requires_grad for p in frozen.parameters()):
            raise ValueError("ReferencePolicy(frozen=...) has trainable parameters; use frozen_copy(model)")
        self.policy = policy
        self.frozen = frozen

    @property
    def uses_adapter(self) -> bool:
        return self.policy is not None

    @contextlib.contextmanager
    def context(self) -> Iterator[nn.Module]:
        """Yields the module that computes pi_ref (the policy with its adapter off, or the frozen copy)."""
        if self.policy is not None:
            with reference_logits_context(self.policy) as m:
                yield m
        else:
            yield self.frozen

    @torch.no_grad()
    def logits(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        with self.context() as m:
            return m(input_ids=input_ids, attention_mask=attention_mask).logits

    __call__ = logits


# ----------------------------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# `egspo build-model`
# ----------------------------------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output HF directory (model + tokenizer)")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--intermediate-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=128, help="longest prompt + completion in tokens")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    out = build_tiny_model(args.out, hidden_size=args.hidden_size, num_layers=args.num_layers,
                           num_heads=args.num_heads, intermediate_size=args.intermediate_size,
                           max_len=args.max_len, seed=args.seed)
    n_params = sum(p.numel() for p in load_model(out).parameters())
    print(f"wrote {out} ({n_params:,} parameters)")
    return 0


__all__ = [
    "DEFAULT_LORA", "FAMILIES", "LLADA_MASK_TOKEN_ID", "DiffusionLM", "ModelFamily", "ReferencePolicy",
    "atomic_output_dir", "build_tiny_model", "detect_family", "frozen_copy", "is_peft_model", "load_model",
    "load_tokenizer", "lora_config", "mask_token_id", "reference_logits_context", "save_model",
    "shift_logits_to_positions", "tiny_config", "torch_dtype",
]
