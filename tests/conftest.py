"""Shared test helpers: the one tiny model factory (`tiny_bert`; `tiny_model`, the same kind of model saved as the
tiny preset's Hugging Face directory), the one toy task (`ToyTask` / `TOY`, registered as task "toy" by the
`toy_task` fixture; `train_file`, ten toy rows) and the public reference data (`shared_data`)."""

import json
import os
from pathlib import Path

import pytest

import egspo.tasks as task_registry
from egspo.tasks.base import Task

# Public reference data lives beside the checkout in CI and in developer sessions, never in a user's clone.
SHARED_DATA = Path(os.environ.get("EGSPO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MASK = 1


def tiny_bert(seed: int = 0, *, vocab: int = 16, hidden: int = 32, layers: int = 2, intermediate: int = 48,
              scale: float = 6.0) -> "ModernBertForMaskedLM":  # noqa: F821 (imported on use)
    """A small float64 ModernBERT masked LM (eager attention, which applies the mask) with random weights from
    ``seed``; the matrices are multiplied by ``scale`` so the distributions are far from uniform. Pad 0, mask 1,
    bos 2, eos 3."""
    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    cfg = ModernBertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=intermediate, max_position_embeddings=64, pad_token_id=0, mask_token_id=MASK,
        bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3, attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = ModernBertForMaskedLM(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return model


class ToyTask(Task):
    """Prompt ``row["prompt"]``; reward = (completion length + number of 'a's) / 10, so rewards vary across a group
    even for an untrained model."""

    name = "toy"

    def load(self, split, source="tiny", **kwargs):
        raise NotImplementedError("the toy task has no dataset: tests pass rows directly")

    def prompt(self, row, style="tiny", tokenizer=None):
        return row["prompt"]

    def reward(self, completion, row):
        return (len(completion) + completion.count("a")) / 10.0

    def grade(self, completion, row):
        return {"correct": completion == row.get("target"), "reward": self.reward(completion, row)}


TOY = ToyTask()


@pytest.fixture
def toy_task(monkeypatch) -> ToyTask:
    """TOY registered as task "toy" through the public egspo.tasks.register_task, for this test only."""
    monkeypatch.setattr(task_registry, "_REGISTRY", dict(task_registry._REGISTRY))
    task_registry.register_task("toy", TOY)
    return TOY


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny preset's model and tokenizer (hidden 32, 2 layers) as a Hugging Face directory, built once per test
    module; a module that needs another size defines its own ``tiny_model``."""
    from egspo.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", hidden_size=32, num_layers=2, num_heads=2,
                            intermediate_size=64, max_len=64, seed=0)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    """Ten toy-task rows (prompt ``q{i}:``, target ``a{i}``, value ``i % 3``) as a JSONL train file."""
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}:", "target": f"a{i}", "value": i % 3}) + "\n"
                            for i in range(10)))
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public reference data not found at {SHARED_DATA} (only present beside a development checkout)")
    return SHARED_DATA
