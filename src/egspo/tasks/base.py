"""What every benchmark module provides: data, prompt, training reward and evaluation grader.

A *row* is one dataset example as a plain dict in the task's original schema (plus the fields our loaders add);
a *completion* is the generated text (the assistant turn only). Rewards are floats and never raise on any text;
graders return a dict with at least ``correct`` (bool) and ``reward`` (float).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]


class Task(ABC):
    """One benchmark. Subclasses set ``name`` and ``required_fields`` and implement the abstract methods."""

    name: str = ""
    #: dataset fields that ``reward``/``grade`` read; ``egspo grade`` checks them per row.
    required_fields: tuple[str, ...] = ()

    # ---- data -------------------------------------------------------------------------------------------
    @abstractmethod
    def load(self, split: str, source: str = "hub", **kwargs: Any) -> list[Row]:
        """Rows of ``split`` ("train" / "validation" / "test"). ``source="hub"`` is the paper's real loader
        (``datasets.load_dataset`` or a cached URL); ``source="tiny"`` generates the tiny preset's data locally;
        a path to a local file in the original schema is also accepted."""

    #: fields a prompt is built from (checked by :meth:`check_row` when rows are loaded for generation)
    prompt_fields: tuple[str, ...] = ()

    def check_row(self, row: Row, where: str, for_prompt: bool = True) -> Row:
        """``row`` ready for use (normalised where the task has several schemas), or ValueError naming ``where``
        (file and line) and the field: every required field (and, ``for_prompt``, every prompt field) present.
        Tasks with structured fields (a Sudoku grid, Countdown numbers) check their form too."""
        for field in (*self.required_fields, *(self.prompt_fields if for_prompt else ())):
            if field not in row:
                raise ValueError(f"{where}: missing field {field!r}")
        return row

    # ---- prompts ------------------------------------------------------------------------------------------
    @abstractmethod
    def prompt(self, row: Row, style: str = "d1", tokenizer: Any = None) -> str:
        """Prompt text for ``row``. ``style="d1"``: the d1 family's zero-shot prompt with reasoning/answer tags,
        the tokenizer's chat template applied when it has one. ``style="tiny"``: the compact tiny-preset prompt."""

    def target(self, row: Row, style: str = "tiny") -> str:
        """A reference completion for supervised warm starts (``<answer>...</answer>`` in the tiny style)."""
        raise NotImplementedError(f"task {self.name!r} has no reference completions")

    # ---- scoring ------------------------------------------------------------------------------------------
    @abstractmethod
    def reward(self, completion: str, row: Row) -> float:
        """Training reward (the d1 family's composition). Never raises."""

    @abstractmethod
    def grade(self, completion: str, row: Row) -> dict[str, Any]:
        """Evaluation: ``{"correct": bool, "reward": float, ...}`` (extra task metrics allowed)."""

    def reward_batch(self, completions: Sequence[str], rows: Sequence[Row]) -> list[float]:
        return [self.reward(c, r) for c, r in zip(completions, rows, strict=True)]

    def grade_batch(self, completions: Sequence[str], rows: Sequence[Row]) -> list[dict[str, Any]]:
        return [self.grade(c, r) for c, r in zip(completions, rows, strict=True)]
