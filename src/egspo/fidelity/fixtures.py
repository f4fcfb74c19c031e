"""Reading an authors-reference fixture directory (format: ``authors_reference/README.md`` in the shared data).

A directory holds case pairs ``<case>.json`` (settings, scalars, and under ``"tensors"`` the dtype and shape of every
tensor) + ``<case>.safetensors``, tiny Hugging Face model directories named by the cases (``model_rollout`` ...),
and ``param_layout.json`` (the order of flattened gradients). Every problem is a `FixtureError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
           "int64": torch.int64, "int32": torch.int32, "bool": torch.bool, "uint8": torch.uint8}


class FixtureError(ValueError):
    """A fixture file is missing, unreadable or inconsistent with its declaration."""


@dataclass
class Case:
    """One case pair: ``meta`` (the json) and ``tensors`` (checked against ``meta["tensors"]``)."""

    name: str
    kind: str
    meta: dict
    tensors: dict[str, torch.Tensor]
    json_path: Path

    def get(self, key: str, file_hint: str | None = None):
        """``meta[key]`` or a FixtureError naming the json file and the field."""
        if key not in self.meta:
            raise FixtureError(f"{file_hint or self.json_path}: missing field {key!r}")
        return self.meta[key]

    def tensor(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise FixtureError(f"{self.json_path.with_suffix('.safetensors')}: missing tensor {key!r}")
        return self.tensors[key]


class Fixture:
    """A fixture directory: its cases (by the json's ``"case"`` kind), models and gradient layout."""

    def __init__(self, root) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FixtureError(f"{self.root}: not a directory")
        self._models: dict[str, torch.nn.Module] = {}

    def case_names(self) -> list[str]:
        """Names of the json files that declare a ``"case"``, sorted (``param_layout.json`` is not a case)."""
        names = []
        for path in sorted(self.root.glob("*.json")):
            if isinstance(_read_json(path), dict) and "case" in _read_json(path):
                names.append(path.stem)
        if not names:
            raise FixtureError(f"{self.root}: no <case>.json with a 'case' field")
        return names

    def case(self, name: str) -> Case:
        json_path = self.root / f"{name}.json"
        meta = _read_json(json_path)
        if not isinstance(meta, dict) or not isinstance(meta.get("case"), str):
            raise FixtureError(f"{json_path}: expected a JSON object with a string field 'case'")
        declared = meta.get("tensors")
        if not isinstance(declared, dict):
            raise FixtureError(f"{json_path}: field 'tensors' must map tensor names to {{dtype, shape}}")
        st_path = json_path.with_suffix(".safetensors")
        tensors = _read_safetensors(st_path) if declared else {}
        for key, spec in declared.items():
            if not (isinstance(spec, dict) and spec.get("dtype") in _DTYPES and isinstance(spec.get("shape"), list)):
                raise FixtureError(f"{json_path}: tensors.{key} must have a known 'dtype' and a 'shape' list, "
                                   f"got {spec!r}")
            if key not in tensors:
                raise FixtureError(f"{st_path}: tensor {key!r} declared in {json_path.name} is missing")
            t = tensors[key]
            if t.dtype != _DTYPES[spec["dtype"]] or list(t.shape) != spec["shape"]:
                raise FixtureError(f"{st_path}: tensor {key!r} is {str(t.dtype).replace('torch.', '')} "
                                   f"{list(t.shape)}, {json_path.name} declares {spec['dtype']} {spec['shape']}")
        return Case(name, meta["case"], meta, tensors, json_path)

    def model(self, name: str):
        """The model directory ``name`` in float64 with eager attention, in eval mode (cached)."""
        if name not in self._models:
            from transformers import AutoModelForMaskedLM

            path = self.root / name
            if not (path / "config.json").is_file():
                raise FixtureError(f"{path}: not a model directory (no config.json)")
            previous = torch.get_default_dtype()
            try:
                # float64 default while building: buffers made without a dtype (rotary frequencies) are float64 too
                torch.set_default_dtype(torch.float64)
                model = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float64, attn_implementation="eager")
            except (OSError, ValueError, KeyError) as exc:
                raise FixtureError(f"{path}: cannot load the model ({exc})") from exc
            finally:
                torch.set_default_dtype(previous)
            self._models[name] = model.eval()
        return self._models[name]

    def flat_grad(self, model, loss: torch.Tensor, retain_graph: bool = True) -> torch.Tensor:
        """``d loss / d params`` flattened in ``param_layout.json`` order (a parameter with no gradient gives 0)."""
        layout_path = self.root / "param_layout.json"
        layout = _read_json(layout_path)
        named = dict(model.named_parameters())
        entries = layout.get("params") if isinstance(layout, dict) else None
        if not isinstance(entries, list):
            raise FixtureError(f"{layout_path}: expected an object with a 'params' list")
        params = []
        for entry in entries:
            name = entry.get("name") if isinstance(entry, dict) else None
            shape = entry.get("shape") if isinstance(entry, dict) else None
            if name not in named or list(named[name].shape) != shape:
                raise FixtureError(f"{layout_path}: parameter {name!r} (shape {shape}) does not match the model's "
                                   "named_parameters()")
            params.append(named[name])
        grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
        flat = [torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1) for p, g in zip(params, grads)]
        return torch.cat(flat)


def _read_json(path: Path):
    if not path.is_file():
        raise FixtureError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FixtureError(f"{path}: not readable JSON ({exc})") from exc


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FixtureError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise FixtureError(f"{path}: not a readable safetensors file ({exc})") from exc
