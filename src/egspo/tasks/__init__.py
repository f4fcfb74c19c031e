"""Task registry: ``get_task(name)`` returns the benchmark object (modules are imported on first use);
``register_task(name, task)`` adds a task of your own, as a Task instance or "module:attribute"."""

from __future__ import annotations

import importlib

from egspo.tasks.base import Row, Task

# name -> "module:attribute" of a Task instance (imported on first use), or the instance itself
_REGISTRY: dict[str, str | Task] = {
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
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}")
    entry = _REGISTRY[name]
    if isinstance(entry, Task):
        return entry
    module_name, attr = entry.split(":")
    task = getattr(importlib.import_module(module_name), attr)
    if not isinstance(task, Task):
        raise TypeError(f"task {name!r}: {entry} is a {type(task).__name__}, not an egspo.tasks.base.Task")
    return task


def register_task(name: str, task: str | Task, *, replace: bool = False) -> None:
    """Make `task` available as `get_task(name)` (and to every command that takes `--task`): a Task instance, or
    "package.module:attribute" naming one (imported on first use). Replacing a registered name needs replace=True."""
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"task name must be a lower-case identifier, got {name!r}")
    if isinstance(task, str):
        module_name, sep, attr = task.partition(":")
        if not sep or not module_name or not attr or ":" in attr:
            raise ValueError(f"task {name!r}: {task!r} is not of the form 'package.module:attribute'")
    elif not isinstance(task, Task):
        raise TypeError(f"task {name!r}: expected a Task or 'module:attribute', got {type(task).__name__}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"task {name!r} is already registered ({_REGISTRY[name]!r}); pass replace=True to replace it")
    _REGISTRY[name] = task


def registered_tasks() -> tuple[str, ...]:
    """Every task name `get_task` knows now: the built-in TASK_NAMES and any registered since."""
    return tuple(_REGISTRY)


__all__ = ["Row", "Task", "TASK_NAMES", "get_task", "register_task", "registered_tasks"]
