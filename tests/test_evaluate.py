"""`egspo eval`: outputs parse, accuracy and task extras are right on completions whose answers are known, and
batched greedy generation (left-padded prompts) equals one-prompt-at-a-time generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import egspo.evaluation.evaluate
import egspo.tasks as task_registry
from egspo.cli import run_command as main  # errors propagate (egspo.cli.main reports them)
from egspo.evaluation.evaluate import default_metrics_path
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
    from egspo.models.tiny import build_tiny_model

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

    monkeypatch.setattr(egspo.evaluation.evaluate, "generate_completions", fake_generate)
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
    from egspo.models.loading import load_model

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


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> Path:
    from egspo.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model2") / "tiny2", hidden_size=32, num_layers=2, num_heads=2,
                            intermediate_size=64, max_len=64, seed=7)


def test_grid_equals_single_file_runs_and_loads_each_model_once(tiny_model, other_model, tmp_path, monkeypatch):
    import egspo.core.generation_io
    import egspo.models.loading

    val = write_jsonl(tmp_path / "v.jsonl", [{"prompt": p, "id": i} for i, p in enumerate(["a", "q1+2=", "xyz"])])
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": p, "id": i} for i, p in enumerate(["hello", "7", "k:"])])
    loads, encodes = [], []
    real_load, real_encode = egspo.models.loading.load_model, egspo.core.generation_io.encode_prompts
    monkeypatch.setattr(egspo.models.loading, "load_model", lambda path, **kw: loads.append(str(path)) or real_load(path, **kw))
    monkeypatch.setattr(egspo.core.generation_io, "encode_prompts",
                        lambda tok, texts: encodes.append(list(texts)) or real_encode(tok, texts))
    out_dir = tmp_path / "grid"
    assert main(["eval", "--task", "lengths", "--model", f"step_1={tiny_model}", "--model", f"step_2={other_model}",
                 "--data", f"validation={val}", "--data", str(test), "--gen-length", "8", "16", "--steps", "4", "8",
                 "--block-length", "8", "--out-dir", str(out_dir), "--tag", "method=m", "--tag", "seed=3"]) == 0
    assert loads == [str(tiny_model), str(other_model)]
    assert len(encodes) == 2  # the two models share a tokenizer: each split is tokenized once
    written = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    assert written == sorted(f"{c}/len{n}/{s}.{ext}" for c in ("step_1", "step_2") for n in (8, 16)
                             for s in ("validation", "test") for ext in ("jsonl", "metrics.json"))
    monkeypatch.setattr(egspo.models.loading, "load_model", real_load)
    monkeypatch.setattr(egspo.core.generation_io, "encode_prompts", real_encode)
    completions = {}
    for ckpt, model in (("step_1", tiny_model), ("step_2", other_model)):
        for split, data in (("validation", val), ("test", test)):
            for length, steps in ((8, 4), (16, 8)):
                single = tmp_path / f"{ckpt}_{split}_{length}.jsonl"
                assert main(["eval", "--task", "lengths", "--model", str(model), "--data", str(data), "--gen-length",
                             str(length), "--steps", str(steps), "--block-length", "8", "--out", str(single)]) == 0
                stem = out_dir / ckpt / f"len{length}" / split
                grid_rows = (stem.parent / f"{split}.jsonl").read_text()
                assert grid_rows == single.read_text()
                completions[ckpt, split, length] = [json.loads(r)["completion"] for r in grid_rows.splitlines()]
                m = json.loads((stem.parent / f"{split}.metrics.json").read_text())
                s = json.loads(default_metrics_path(single).read_text())
                assert m["tags"] == {"method": "m", "seed": "3", "ckpt": ckpt, "split": split}
                assert (m["method"], m["seed"], m["ckpt"], m["split"]) == ("m", "3", ckpt, split)
                assert (m["gen_length"], m["steps"], m["model"], m["data"]) == (length, steps, str(model), str(data))
                for key in ("accuracy", "n", "reward_mean", "length"):
                    assert m[key] == s[key]
    # the two models really differ, so a swapped model / split / length would have been caught above
    assert completions["step_1", "test", 16] != completions["step_2", "test", 16]


def test_nested_names_evaluate_several_runs_in_one_process_as_separate_grids(tiny_model, other_model, tmp_path):
    """The workflow's form: every seed of a method in one process (`--model seed1/step_1=DIR --model-tag
    seed1/step_1:seed=1`) writes, file for file, what one process per seed writes (`--out-dir .../seed1 --tag
    seed=1`): the same rows, and metrics that differ only in the measured generation time."""
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": p, "id": i} for i, p in enumerate(["hello", "7", "k:"])])
    common = ["--task", "lengths", "--data", str(test), "--gen-length", "8", "16", "--steps", "4", "8",
              "--block-length", "8", "--tag", "method=m"]
    runs = {"0": tiny_model, "1": other_model}
    together = tmp_path / "together"
    argv = ["eval", *common, "--out-dir", str(together)]
    for seed, model in runs.items():
        argv += ["--model", f"seed{seed}/step_1={model}", "--model-tag", f"seed{seed}/step_1:seed={seed}"]
    assert main(argv) == 0
    for seed, model in runs.items():
        alone = tmp_path / "alone" / f"seed{seed}"
        assert main(["eval", *common, "--model", f"step_1={model}", "--out-dir", str(alone), "--tag",
                     f"seed={seed}"]) == 0
        for length in (8, 16):
            a, b = together / f"seed{seed}" / "step_1" / f"len{length}", alone / "step_1" / f"len{length}"
            assert (a / "test.jsonl").read_bytes() == (b / "test.jsonl").read_bytes()
            ma, mb = (json.loads((d / "test.metrics.json").read_text()) for d in (a, b))
            assert ma.pop("generation_s") > 0 and mb.pop("generation_s") > 0
            assert list(ma.items()) == list(mb.items())
            assert ma["tags"] == {"method": "m", "seed": seed, "ckpt": "step_1", "split": "test"}
    assert sorted(p.name for p in together.iterdir()) == ["seed0", "seed1"]


@pytest.mark.parametrize("argv, message", [
    (["--gen-length", "8", "16", "--steps", "4"], r"--steps needs one value per --gen-length"),
    (["--gen-length", "8", "8", "--steps", "4", "4"], r"--gen-length has repeated values"),
    (["--gen-length", "8", "--steps", "0"], r"--steps must be positive"),
    (["--gen-length", "8", "--steps", "4", "--tag", "ckpt=x"], r"tags come from the --model / --data names"),
    (["--gen-length", "8", "--steps", "4", "--tag", "accuracy=1"], r"collide with metric names"),
    (["--gen-length", "8", "--steps", "4", "--metrics", "m.json"], r"--metrics goes with --out"),
    (["--gen-length", "8", "--steps", "4", "--model", "other/M"], r"names \['M'\] given more than once"),
    (["--gen-length", "8", "--steps", "4", "--model", "a/../b=M2"], r"cannot be used as a directory"),
    (["--gen-length", "8", "--steps", "4", "--model", "a//b=M2"], r"cannot be used as a directory"),
    (["--gen-length", "8", "--steps", "4", "--model-tag", "Z:seed=1"], r"NAME one of the --model names \['M'\]"),
    (["--gen-length", "8", "--steps", "4", "--model-tag", "M:ckpt=x"], r"tags come from the --model / --data names"),
    (["--gen-length", "8", "--steps", "4", "--model-tag", "M:n=1"], r"collide with metric names"),
])
def test_bad_grid_arguments_are_rejected_before_loading(tmp_path, argv, message):
    base = ["eval", "--task", "lengths", "--model", "M", "--data", "d.jsonl", "--block-length", "8",
            "--out-dir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match=message):
        main(base + argv)
    assert not (tmp_path / "o").exists()


def test_single_file_form_needs_a_single_triple(tmp_path):
    with pytest.raises(ValueError, match="--out writes one file"):
        main(["eval", "--task", "lengths", "--model", "M", "--data", "d.jsonl", "--gen-length", "8", "16",
              "--steps", "4", "8", "--block-length", "8", "--out", str(tmp_path / "o.jsonl")])
