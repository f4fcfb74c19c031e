"""`egspo trace`: the Figure-2 record has the right shapes and is consistent with the sampler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import egspo.tasks as task_registry
from egspo.cli import run_command as main  # errors propagate (egspo.cli.main reports them)
from egspo.tasks.base import Task


class CountA(Task):
    """reward = (number of 'a' + length) / 10 of the completion."""

    name = "count_a"

    def load(self, split, source="tiny", **kwargs):
        raise NotImplementedError

    def prompt(self, row, style="tiny", tokenizer=None):
        return row["prompt"]

    def reward(self, completion, row):
        return (completion.count("a") + len(completion)) / 10.0

    def grade(self, completion, row):
        return {"correct": False, "reward": self.reward(completion, row)}


COUNT_A = CountA()


@pytest.fixture(autouse=True)
def _register(monkeypatch):
    monkeypatch.setitem(task_registry._REGISTRY, "count_a", f"{__name__}:COUNT_A")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from egspo.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", hidden_size=32, num_layers=2, num_heads=2,
                            intermediate_size=64, max_len=64, seed=2)


@pytest.fixture()
def data(tmp_path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["ab", "q:12", "xyz+1", "a"]))
    return path


def run_trace(model, data, out, temperature, n=3, k=3):
    assert main(["trace", "--model", str(model), "--task", "count_a", "--data", str(data), "--n", str(n), "--out",
                 str(out), "--k", str(k), "--gen-length", "16", "--steps", "8", "--block-length", "8",
                 "--temperature", str(temperature), "--seed", "5"]) == 0
    return json.loads(Path(out).read_text())


def test_trace_shapes_and_entropy_selection(tiny_model, data, tmp_path):
    trace = run_trace(tiny_model, data, tmp_path / "t.json", temperature=1.0)
    assert (trace["task"], trace["k"], trace["gen_length"], trace["steps"]) == ("count_a", 3, 16, 8)
    assert len(trace["samples"]) == 3
    assert [s["prompt"] for s in trace["samples"]] == ["ab", "q:12", "xyz+1"]
    for s in trace["samples"]:
        H, sel, onestep = s["step_entropy"], s["selected"], s["onestep_reward"]
        assert len(H) == 8 and len(onestep) == 8 and len(sel) == 3
        assert sel == sorted(sel) and len(set(sel)) == 3
        # the selected steps are the 3 largest entropies
        assert min(H[j] for j in sel) >= max(H[j] for j in range(8) if j not in sel)
        assert s["final_reward"] == pytest.approx(COUNT_A.reward(s["completion"], {}))
    # same seed, same trajectories
    assert run_trace(tiny_model, data, tmp_path / "t2.json", temperature=1.0)["samples"] == trace["samples"]


def test_greedy_trace_last_one_step_fill_is_the_completion(tiny_model, data, tmp_path):
    # At temperature 0 the last step commits the argmax of every still-masked position, which is exactly the
    # greedy one-step fill of S_{T-1}: its reward must equal the final reward.
    trace = run_trace(tiny_model, data, tmp_path / "g.json", temperature=0.0, n=4, k=8)
    for s in trace["samples"]:
        assert s["onestep_reward"][-1] == pytest.approx(s["final_reward"])
        assert s["selected"] == list(range(8))


def test_trace_rejects_bad_n(tiny_model, data, tmp_path):
    with pytest.raises(ValueError, match="--n"):
        run_trace(tiny_model, data, tmp_path / "x.json", temperature=1.0, n=9)
