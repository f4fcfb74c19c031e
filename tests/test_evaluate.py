"""`egspo eval`: outputs parse, accuracy and task extras are right on completions whose answers are known, and
batched greedy generation (left-padded prompts) equals one-prompt-at-a-time generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import egspo.evaluate
import egspo.tasks as task_registry
from egspo.cli import main
from egspo.evaluate import default_metrics_path
from egspo.tasks.base import Task
from egspo.tasks.sudoku import TASK as SUDOKU
from egspo.tasks.sudoku import generate_tiny


class LengthTask(Task):
    """Prompts of different lengths (so batches are padded); reward = completion length / 10, correct iff the
    completion starts with 'a'."""

    name = "lengths"

    def load(self, split, source="tiny", **kwargs):
        raise NotImplementedError

    def prompt(self, row, style="tiny", tokenizer=None):
        return row["prompt"]

    def reward(self, completion, row):
        return len(completion) / 10.0

    def grade(self, completion, row):
        return {"correct": completion.startswith("a"), "reward": self.reward(completion, row), "length": len(completion)}


LENGTHS = LengthTask()


@pytest.fixture(autouse=True)
def _register(monkeypatch):
    monkeypatch.setitem(task_registry._REGISTRY, "lengths", f"{__name__}:LENGTHS")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from egspo.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", hidden_size=32, num_layers=2, num_heads=2,
                            intermediate_size=64, max_len=64, seed=1)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_accuracy_and_cell_accuracy_on_known_completions(tiny_model, tmp_path, monkeypatch):
    rows = generate_tiny(seed=0, n_train=0, n_validation=0, n_test=6)["test"]
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    # Rows 0-3 get the solution; rows 4-5 the puzzle with every empty cell filled with '1'.
    completions = [SUDOKU.target(r) for r in rows[:4]] + \
        [f"<answer>{r['Puzzle'].replace('0', '1')}</answer>" for r in rows[4:]]
    seen_prompts = []

    def fake_generate(model, tokenizer, prompt_ids, config, batch_size, generator=None):
        assert config.temperature == 0.0 and config.remasking == "low_confidence"
        assert (config.gen_length, config.steps, config.block_length) == (32, 16, 8)
        seen_prompts.extend(tokenizer.decode(p) for p in prompt_ids)
        return completions

    monkeypatch.setattr(egspo.evaluate, "generate_completions", fake_generate)
    out = tmp_path / "eval" / "test.jsonl"
    assert main(["eval", "--model", str(tiny_model), "--task", "sudoku", "--data", str(data), "--gen-length", "32",
                 "--steps", "16", "--block-length", "8", "--out", str(out), "--style", "tiny",
                 "--tag", "method=sft", "--tag", "seed=0"]) == 0
    assert seen_prompts == [SUDOKU.prompt(r, "tiny") for r in rows]
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["correct"] for w in written] == [True] * 4 + [False] * 2
    assert [w["Puzzle"] for w in written] == [r["Puzzle"] for r in rows]
    assert [w["completion"] for w in written] == completions
    metrics = json.loads(default_metrics_path(out).read_text())
    assert default_metrics_path(out).name == "test.metrics.json"
    # cell accuracy of a '1'-filled row: the share of its empty cells whose solution digit is 1
    wrong = [sum(r["Solution"][i] == "1" for i in range(16) if r["Puzzle"][i] == "0") /
             r["Puzzle"].count("0") for r in rows[4:]]
    assert metrics["n"] == 6
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["cell_accuracy"] == pytest.approx((4 + sum(wrong)) / 6)
    assert metrics["reward_mean"] == pytest.approx((4 + sum(wrong)) / 6)
    assert metrics["method"] == "sft" and metrics["tags"] == {"method": "sft", "seed": "0"}
    assert (metrics["gen_length"], metrics["steps"], metrics["block_length"], metrics["temperature"]) == \
        (32, 16, 8, 0.0)


def test_batched_generation_matches_one_at_a_time_and_limit(tiny_model, tmp_path):
    rows = [{"prompt": p, "id": i} for i, p in enumerate(["a", "q1+2=", "xyz", "hello there", "7", "k:12"])]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    outs = {}
    for bs in (1, 4):
        out = tmp_path / f"bs{bs}.jsonl"
        metrics = tmp_path / f"bs{bs}.json"
        assert main(["eval", "--model", str(tiny_model), "--task", "lengths", "--data", str(data), "--gen-length",
                     "16", "--steps", "8", "--block-length", "8", "--out", str(out), "--metrics", str(metrics),
                     "--batch-size", str(bs), "--limit", "5"]) == 0
        outs[bs] = [json.loads(line) for line in out.read_text().splitlines()]
        m = json.loads(metrics.read_text())
        assert m["n"] == 5
        assert m["accuracy"] == pytest.approx(sum(r["completion"].startswith("a") for r in outs[bs]) / 5)
        assert m["length"] == pytest.approx(sum(len(r["completion"]) for r in outs[bs]) / 5)
    assert [r["id"] for r in outs[1]] == [0, 1, 2, 3, 4]
    assert [r["completion"] for r in outs[1]] == [r["completion"] for r in outs[4]]
    assert all(r["reward"] == pytest.approx(len(r["completion"]) / 10) for r in outs[1])


def test_bad_tag_is_rejected(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}])
    with pytest.raises(ValueError, match="key=value"):
        main(["eval", "--model", str(tiny_model), "--task", "lengths", "--data", str(data), "--gen-length", "8",
              "--steps", "4", "--block-length", "8", "--out", str(tmp_path / "o.jsonl"), "--tag", "oops"])


def test_adapter_checkpoint_evaluates_on_its_base(tiny_model, tmp_path):
    # A fresh LoRA adapter (B = 0) computes exactly the base model: same greedy completions from the adapter dir.
    from egspo.models import load_model

    adapter = tmp_path / "adapter"
    load_model(tiny_model, lora={"r": 4, "alpha": 8, "dropout": 0.0}).save_pretrained(str(adapter))
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": p} for p in ["ab", "q1+2=", "xyz"]])
    outs = []
    for model in (tiny_model, adapter):
        out = tmp_path / f"{Path(model).name}.jsonl"
        assert main(["eval", "--model", str(model), "--task", "lengths", "--data", str(data), "--gen-length", "16",
                     "--steps", "8", "--block-length", "8", "--out", str(out)]) == 0
        outs.append([json.loads(line)["completion"] for line in out.read_text().splitlines()])
    assert outs[0] == outs[1] and len(outs[0]) == 3
