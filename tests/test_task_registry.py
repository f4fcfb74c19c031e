"""egspo.tasks.register_task: a task of one's own, as an object or "module:attribute", reachable through get_task;
bad names and specs are refused with the reason."""

from __future__ import annotations

import pytest

import egspo.tasks as tasks
from conftest import TOY, ToyTask


@pytest.fixture(autouse=True)
def _restore_registry(monkeypatch):
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))


def test_register_an_object_and_a_module_attribute():
    tasks.register_task("toy", TOY)
    assert tasks.get_task("toy") is TOY and "toy" in tasks.registered_tasks()
    tasks.register_task("toy_by_path", "conftest:TOY")  # imported on first use
    assert tasks.get_task("toy_by_path") is TOY
    assert "toy" not in tasks.TASK_NAMES  # the built-in names stay as they are


def test_toy_task_fixture_registers_for_one_test(toy_task):
    assert tasks.get_task("toy") is toy_task and isinstance(toy_task, ToyTask)


def test_replacing_needs_replace_true():
    with pytest.raises(ValueError, match="task 'sudoku' is already registered .*replace=True"):
        tasks.register_task("sudoku", TOY)
    tasks.register_task("sudoku", TOY, replace=True)
    assert tasks.get_task("sudoku") is TOY


@pytest.mark.parametrize("name, spec, error, message", [
    ("Toy", TOY, ValueError, "lower-case identifier, got 'Toy'"),
    ("my-task", TOY, ValueError, "lower-case identifier, got 'my-task'"),
    ("toy", "conftest.TOY", ValueError, "is not of the form 'package.module:attribute'"),
    ("toy", "conftest:", ValueError, "is not of the form"),
    ("toy", 42, TypeError, "expected a Task or 'module:attribute', got int"),
])
def test_bad_registrations_are_refused(name, spec, error, message):
    with pytest.raises(error, match=message):
        tasks.register_task(name, spec)


def test_a_spec_that_is_not_a_task_fails_on_use():
    tasks.register_task("not_a_task", "conftest:SHARED_DATA")
    with pytest.raises(TypeError, match="task 'not_a_task': conftest:SHARED_DATA is a .*Path, not an egspo.tasks"):
        tasks.get_task("not_a_task")
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: sudoku"):
        tasks.get_task("nope")
