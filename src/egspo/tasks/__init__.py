"""Task registry: ``get_task(name)`` returns the benchmark object; modules are imported on first use."""

from __future__ import annotations

import importlib

from egspo.tasks.base import Row, Task

# name -> "module:attribute" of a Task instance
_REGISTRY: dict[str, str] = {
    "sudoku": "egspo.tasks.sudoku:TASK",
    "countdown": "egspo.tasks.countdown:TASK",
    "gsm8k": "egspo.tasks.gsm8k:TASK",
    "math500": "egspo.tasks.math500:TASK",
    "humaneval": "egspo.tasks.humaneval:TASK",
    "mbpp": "egspo.tasks.mbpp:TASK",
    "kodcode": "egspo.tasks.kodcode:TASK",
}

TASK_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_task(name: str) -> Task:
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    module_name, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), attr)


__all__ = ["Row", "Task", "TASK_NAMES", "get_task"]
