"""Where task rows come from: the Hugging Face hub (``datasets.load_dataset``), files fetched by URL and cached, and
local files in the original schemas. Shared by the task modules; no task logic here."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from egspo.utils.files import atomic_write_bytes, iter_jsonl_objects

Row = dict[str, Any]
SPLITS = ("train", "validation", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


def cache_dir() -> Path:
    """``$EGSPO_CACHE``, else ``$HF_HOME/egspo``, else ``~/.cache/egspo``."""
    if os.environ.get("EGSPO_CACHE"):
        return Path(os.environ["EGSPO_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "egspo"
    return Path.home() / ".cache" / "egspo"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_url(url: str, filename: str, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """The cached copy of ``url`` (downloaded once into :func:`cache_dir`), checked against ``sha256`` if given.

    Raises RuntimeError with the URL and the cache path when the file cannot be fetched (e.g. offline)."""
    target = cache_dir() / filename
    if target.is_file() and (sha256 is None or _sha256(target) == sha256):
        return target
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RuntimeError(
            f"could not download {url} ({exc}); this needs network access once. Place the file at {target} "
            f"or pass the path of a local copy as the data source"
        ) from exc
    got = hashlib.sha256(data).hexdigest()
    if sha256 is not None and got != sha256:
        raise RuntimeError(f"{url}: sha256 {got} does not match the pinned {sha256}; refusing a changed file")
    atomic_write_bytes(target, data)
    return target


def read_task_rows(path: str | os.PathLike, task, for_prompt: bool = True) -> list[Row]:
    """The rows of a JSONL file written by ``egspo data``, each checked by ``task.check_row`` (a
    :class:`~egspo.tasks.base.Task`), so a bad row (not UTF-8, not JSON, a missing or malformed field) stops the
    command before any model work with the file, the line and the field named. A missing or empty file is an
    error too."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    rows = [task.check_row(row, f"{path}: line {lineno}", for_prompt) for lineno, row in iter_jsonl_objects(path)]
    if not rows:
        raise ValueError(f"data file {str(path)!r} has no rows")
    return rows


def read_table(path: str | os.PathLike) -> list[Row]:
    """Rows of a local file in its original schema: ``.csv`` (every value a string, so ``0140...`` keeps its zeros),
    ``.jsonl`` / ``.json`` (one object per line, or one JSON list), ``.parquet``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return [dict(r) for r in csv.DictReader(f)]
        if suffix in (".jsonl", ".json"):
            with open(path, encoding="utf-8") as f:
                first = next((c for c in iter(lambda: f.read(1), "") if not c.isspace()), "")
            if first != "[":
                return [row for _, row in iter_jsonl_objects(path)]
            rows = json.loads(path.read_text(encoding="utf-8"))
            if not all(isinstance(r, dict) for r in rows):
                raise ValueError(f"{path}: every row must be a JSON object")
            return rows
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if suffix == ".parquet":
        import datasets

        return [dict(r) for r in datasets.load_dataset("parquet", data_files=str(path), split="train")]
    raise ValueError(f"data file {str(path)!r}: unsupported extension {suffix!r} (use .csv, .jsonl, .json, .parquet)")


def hub_rows(hub_id: str, config: str | None, split: str) -> list[Row]:
    """Rows of ``split`` of a Hugging Face dataset, through ``datasets.load_dataset``."""
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, DatasetNotFoundError)
        raise RuntimeError(
            f"could not load split {split!r} of {hub_id!r} (config {config!r}) with datasets.load_dataset: {exc}. "
            f"This needs the hub (or its cache); pass a local file in the original schema as the source instead"
        ) from exc
    return [dict(r) for r in ds]


def carve_validation(rows: list[Row], n_validation: int, seed: int = 0) -> tuple[list[Row], list[Row]]:
    """Split ``rows`` into (train, validation): ``n_validation`` rows drawn with ``random.Random(seed)``, disjoint
    from the remaining train rows, both kept in their original order."""
    if not 0 <= n_validation <= len(rows):
        raise ValueError(f"n_validation must be in [0, {len(rows)}], got {n_validation}")
    picked = set(random.Random(seed).sample(range(len(rows)), n_validation))
    train = [r for i, r in enumerate(rows) if i not in picked]
    validation = [r for i, r in enumerate(rows) if i in picked]
    return train, validation


def is_path_source(source: str) -> bool:
    return source not in ("hub", "tiny")


def split_rows(task: str, split: str, source: str, *, test: tuple[str, str | None], train: tuple[str, str | None],
               n_validation: int, seed: int = 0) -> list[Row]:
    """Rows of ``split`` for a task whose hub data has a test split and a train split (no validation split):
    ``source`` a local file in the original schema is read as is; otherwise ``test`` (hub id, config) gives the test
    split, and train / validation are carved from ``train`` (hub id, config) with :func:`carve_validation`."""
    check_split(split)
    if source == "tiny":
        raise ValueError(f"{task} has no tiny-preset generator (the tiny preset uses sudoku and countdown)")
    if is_path_source(source):
        return read_table(source)
    if split == "test":
        return hub_rows(*test, "test")
    train_rows, validation_rows = carve_validation(hub_rows(*train, "train"), n_validation, seed)
    return train_rows if split == "train" else validation_rows

