"""Durable checkpoints (egspo.rl.checkpointing, egspo.utils.files): every file is fsynced before the rename that
publishes it; a resume skips a checkpoint whose files do not load (a truncated model.safetensors, an empty
trainer_state.pt), names it, and falls back to the previous complete one, or says there is none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from egspo.rl import checkpointing as ckpt
from egspo.utils import files
from conftest import tiny_bert


def _save(run: Path, step: int, model) -> Path:
    return ckpt.save_checkpoint(run, step, model, None, {"iteration": step, "rng": []})


@pytest.fixture()
def run_with_three(tmp_path) -> Path:
    model = tiny_bert(seed=0, hidden=16, layers=1, intermediate=16)
    for step in (1, 2, 3):
        _save(tmp_path, step, model)
    return tmp_path


def test_all_complete_checkpoints_load_and_the_newest_is_chosen(run_with_three, capsys):
    assert ckpt.latest_loadable_checkpoint(run_with_three) == (3, ckpt.checkpoint_path(run_with_three, 3))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"egspo rl: resuming from {ckpt.checkpoint_path(run_with_three, 3)} (iteration 3)"]


def test_truncated_weights_fall_back_to_the_previous_checkpoint(run_with_three, capsys):
    weights = ckpt.checkpoint_path(run_with_three, 3) / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert ckpt.latest_loadable_checkpoint(run_with_three) == (2, ckpt.checkpoint_path(run_with_three, 2))
    err = capsys.readouterr().err
    assert f"warning: checkpoint {ckpt.checkpoint_path(run_with_three, 3)} cannot be loaded ({weights}:" in err
    assert f"resuming from {ckpt.checkpoint_path(run_with_three, 2)} (iteration 2)" in err


def test_empty_trainer_state_and_truncated_header_fall_back_twice(run_with_three, capsys):
    state = ckpt.checkpoint_path(run_with_three, 3) / ckpt.STATE_FILE
    state.write_bytes(b"")
    weights = ckpt.checkpoint_path(run_with_three, 2) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5])  # not even the 8-byte header length
    assert ckpt.latest_loadable_checkpoint(run_with_three) == (1, ckpt.checkpoint_path(run_with_three, 1))
    err = capsys.readouterr().err
    assert f"({state}: EOFError" in err and f"({weights}: " in err


def test_no_loadable_checkpoint_says_so_and_starts_over(run_with_three, tmp_path_factory, capsys):
    for step in (1, 2, 3):
        (ckpt.checkpoint_path(run_with_three, step) / ckpt.STATE_FILE).write_bytes(b"\0" * 10)
    assert ckpt.latest_loadable_checkpoint(run_with_three) is None
    assert (f"none of the 3 checkpoints in {ckpt.checkpoint_root(run_with_three)} can be loaded; starting from the "
            "beginning") in capsys.readouterr().err
    empty = tmp_path_factory.mktemp("empty")
    assert ckpt.latest_loadable_checkpoint(empty) is None
    assert f"starting from the beginning (no checkpoint in {empty / 'checkpoints'})" in capsys.readouterr().err


def test_missing_weights_are_reported(run_with_three):
    (ckpt.checkpoint_path(run_with_three, 3) / "model.safetensors").unlink()
    assert "no model weights" in ckpt.checkpoint_problem(ckpt.checkpoint_path(run_with_three, 3))
    assert ckpt.checkpoint_problem(ckpt.checkpoint_path(run_with_three, 2)) is None


def test_a_damaged_newest_checkpoint_is_replaced_when_training_reaches_it_again(run_with_three):
    path = ckpt.checkpoint_path(run_with_three, 3)
    (path / ckpt.STATE_FILE).write_bytes(b"")
    _save(run_with_three, 3, tiny_bert(seed=1, hidden=16, layers=1, intermediate=16))
    assert ckpt.checkpoint_problem(path) is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["step_1", "step_2", "step_3"]


def _record_io(monkeypatch) -> list[tuple[str, str]]:
    """Log of (operation, path) for fsync and os.replace calls."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_atomic_file_write_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = _record_io(monkeypatch)
    target = tmp_path / "metrics.json"
    files.atomic_write_text(target, "{}\n")
    kinds = [(op, Path(p).name.startswith(".metrics.json.") if op == "fsync" and p != str(tmp_path) else p)
             for op, p in events]
    assert kinds == [("fsync", True), ("replace", str(target)), ("fsync", str(tmp_path))]
    assert target.read_text() == "{}\n"


def test_checkpoint_save_fsyncs_every_file_and_folder_before_publishing(tmp_path, monkeypatch):
    model = tiny_bert(seed=0, hidden=16, layers=1, intermediate=16)
    events = _record_io(monkeypatch)
    path = _save(tmp_path, 4, model)
    publish = events.index(("replace", str(path)))
    synced = {Path(p).name for op, p in events[:publish] if op == "fsync"}
    assert {"model.safetensors", "config.json", ckpt.STATE_FILE, "step_4.tmp"} <= synced
    assert ("fsync", str(path.parent)) in events[publish:]
    assert torch.load(path / ckpt.STATE_FILE, weights_only=False)["iteration"] == 4


def test_rl_resumes_past_a_damaged_newest_checkpoint_as_if_uninterrupted(tmp_path, toy_task, capsys):
    """The trainer's resume goes through latest_loadable_checkpoint: with step_2's weights truncated it restarts
    from step_1, rewrites step_2, and ends with the weights of a run that was never interrupted."""
    from safetensors.torch import load_file

    from egspo.models.tiny import build_tiny_model
    from egspo.rl.trainer import RLTrainer
    from test_trainer import make_config

    model = build_tiny_model(tmp_path / "model", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32,
                             max_len=64, seed=0)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(f'{{"prompt": "q{i}:", "target": "a{i}", "value": {i % 3}}}\n' for i in range(6)))
    straight, split = tmp_path / "straight", tmp_path / "split"
    RLTrainer(make_config(model, train, straight, max_steps=2)).train()
    RLTrainer(make_config(model, train, split, max_steps=2)).train()
    damaged = ckpt.checkpoint_path(split, 2) / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    capsys.readouterr()
    resumed = RLTrainer(make_config(model, train, split, max_steps=2))
    err = capsys.readouterr().err
    assert f"checkpoint {ckpt.checkpoint_path(split, 2)} cannot be loaded ({damaged}:" in err
    assert f"resuming from {ckpt.checkpoint_path(split, 1)} (iteration 1)" in err
    assert resumed.iteration == 1
    resumed.train()
    a, b = load_file(ckpt.checkpoint_path(straight, 2) / "model.safetensors"), load_file(damaged)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
