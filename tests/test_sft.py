"""Masked-diffusion SFT: the loss by hand, its 1/t weighting, the untouched prompt, learning, the command."""

from __future__ import annotations

import json
import math
import random
import string
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoModelForMaskedLM, AutoTokenizer

import egspo.sft.trainer as sft
from egspo.cli import run_command as cli_main  # errors propagate (egspo.cli.main reports them)
from egspo.models.loading import load_model, load_tokenizer
from egspo.models.tiny import build_tiny_model
from egspo.tasks.base import Task

TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_len=32)


class CopyTask(Task):
    """Toy task: copy three letters into the answer tags."""

    name = "copy"

    def load(self, split, source="tiny", **kwargs):
        rng = random.Random({"train": 0, "validation": 1, "test": 2}[split])
        return [{"id": i, "s": "".join(rng.choice("abcd") for _ in range(3))} for i in range(kwargs.get("n", 64))]

    def prompt(self, row, style="tiny", tokenizer=None):
        return f"copy:{row['s']}="

    def target(self, row, style="tiny"):
        return f"<answer>{row['s']}</answer>"

    def reward(self, completion, row):
        return float(completion.strip() == self.target(row))

    def grade(self, completion, row):
        r = self.reward(completion, row)
        return {"correct": r == 1.0, "reward": r}


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: two intra-op threads get 10-20x slower when other processes compete
    for the cores (measured), one thread does not."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("sft") / "init", seed=0, **TINY)


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return load_tokenizer(tiny_dir)


# ------------------------------------------------------------------------------------------------------- loss


def test_loss_matches_a_hand_computation():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 3.0, 1.0]],
                           [[1.0, 1.0, 1.0], [-2.0, 0.0, 2.0], [0.0, 0.0, 4.0]]])
    targets = torch.tensor([[0, 2, 1], [1, 2, 0]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    t = torch.tensor([0.5, 0.25])

    def ce(row, target):
        return -(row[target] - math.log(sum(math.exp(v) for v in row)))

    lg = logits.tolist()
    row0 = (ce(lg[0][0], 0) + ce(lg[0][1], 2)) / (0.5 * 3)
    row1 = (ce(lg[1][1], 2) + ce(lg[1][2], 0)) / (0.25 * 3)
    expected = (row0 + row1) / 2
    got = sft.masked_diffusion_loss(logits, targets, mask, t)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # unmasked positions contribute nothing, whatever their logits
    logits2 = logits.clone()
    logits2[0, 2] = torch.tensor([9.0, -9.0, 9.0])
    logits2[1, 0] = torch.tensor([-5.0, 0.0, 5.0])
    assert sft.masked_diffusion_loss(logits2, targets, mask, t).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("t_value", [0.1, 0.5, 0.9])
def test_one_over_t_weighting_makes_the_loss_unbiased_for_the_mean_cross_entropy(t_value):
    g = torch.Generator().manual_seed(0)
    b, length, v = 4000, 6, 5
    logits = torch.randn(1, length, v, generator=g).expand(b, -1, -1)
    targets = torch.randint(0, v, (1, length), generator=g).expand(b, -1)
    mean_ce = torch.nn.functional.cross_entropy(logits[0], targets[0]).item()
    t, mask = sft.sample_noise(b, length, generator=g, t=torch.full((b,), t_value))
    assert mask.float().mean().item() == pytest.approx(t_value, abs=0.02)
    estimate = sft.masked_diffusion_loss(logits, targets, mask, t).item()
    assert estimate == pytest.approx(mean_ce, rel=0.05)
    unweighted = sft.masked_diffusion_loss(logits, targets, mask, torch.ones(b)).item()
    assert unweighted == pytest.approx(t_value * mean_ce, rel=0.05)  # what a missing 1/t would give


def test_noise_levels_follow_llada():
    g = torch.Generator().manual_seed(1)
    t, mask = sft.sample_noise(20000, 4, eps=0.1, generator=g)
    assert t.min().item() >= 0.1 and t.max().item() <= 1.0
    assert t.mean().item() == pytest.approx(0.55, abs=0.01)  # U(eps, 1)
    assert mask.shape == (20000, 4)
    with pytest.raises(ValueError, match="eps"):
        sft.sample_noise(2, 2, eps=0.0)


class _Recorder(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.emb = nn.Embedding(vocab, vocab)
        self.seen = None

    def forward(self, input_ids, attention_mask=None):
        self.seen = input_ids.clone()
        return SimpleNamespace(logits=self.emb(input_ids))


def test_prompt_is_never_masked_and_never_scored(tok):
    examples = [sft.encode_example("copy:abc=", "<answer>abc</answer>", tok, 8),
                sft.encode_example("copy:ab=", "<answer>b</answer>", tok, 8)]
    batch = sft.collate(examples, tok.pad_token_id)
    model = _Recorder(len(tok))
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        loss, stats = sft.sft_loss(model, batch, tok.mask_token_id, generator=gen)
        seen = model.seen
        assert torch.equal(seen[:, :-8], batch["input_ids"][:, :-8])  # prompt (and its padding) untouched
        assert not (seen[:, :-8] == tok.mask_token_id).any()
        completion_masked = seen[:, -8:] == tok.mask_token_id
        assert stats["masked_tokens"] == int(completion_masked.sum())
        assert torch.equal(seen[:, -8:][~completion_masked], batch["completion"][~completion_masked])
    # the loss reads completion logits only: gradient flows to no embedding row used only by the prompt
    model.zero_grad()
    t_all = torch.ones(2)
    noisy = batch["input_ids"].clone()
    noisy[:, -8:] = tok.mask_token_id
    logits = model(noisy).logits[:, -8:]
    sft.masked_diffusion_loss(logits, batch["completion"], torch.ones(2, 8, dtype=torch.bool), t_all).backward()
    used_by_completion = {tok.mask_token_id}
    grads = model.emb.weight.grad.abs().sum(dim=1)
    assert all(grads[i] == 0 for i in set(batch["input_ids"][:, :-8].flatten().tolist()) - used_by_completion)


def test_collate_left_pads_prompts_and_pads_completions_with_eos(tok):
    a = sft.encode_example("copy:abc=", "<answer>abc</answer>", tok, 8)
    b = sft.encode_example("c:a=", "<answer>a</answer>", tok, 8)
    assert a.completion_ids[-3:] == (tok.eos_token_id,) * 3 and len(a.completion_ids) == 8
    assert b.completion_ids[3:] == (tok.eos_token_id,) * 5
    batch = sft.collate([a, b], tok.pad_token_id)
    assert batch["input_ids"].shape == (2, 9 + 8)
    assert batch["attention_mask"][1].tolist() == [False] * 5 + [True] * 12
    assert batch["input_ids"][1, :5].tolist() == [tok.pad_token_id] * 5
    assert tok.decode(batch["completion"][0], skip_special_tokens=True) == "<answer>abc</answer>"


def test_too_long_targets_are_errors_naming_the_row(tok):
    rows = [{"id": "r0", "s": "abc"}, {"id": "r1", "s": "abcdefgh"}]

    class Long(CopyTask):
        def target(self, row, style="tiny"):
            return f"<answer>{row['s']}</answer>"

    with pytest.raises(ValueError, match=r"row 1 \(id 'r1'\).*gen_length=8"):
        sft.build_examples(rows, tok, 8, task=Long())
    examples, skipped = sft.build_examples(rows, tok, 8, task=Long(), skip_long=True)
    assert (len(examples), skipped) == (1, 1)


# ------------------------------------------------------------------------------------------------------- training


def test_training_drives_the_loss_down(tiny_dir, tok, one_thread):
    task = CopyTask()
    train_ex, _ = sft.build_examples(task.load("train", n=64), tok, 6, task=task)
    eval_ex, _ = sft.build_examples(task.load("validation", n=32), tok, 6, task=task)
    model = load_model(tiny_dir)
    before = sft.evaluate_loss(model, eval_ex, tok.mask_token_id, tok.pad_token_id, batch_size=32, seed=5)
    model, metrics = sft.train(model, tok, train_ex, max_steps=250, batch_size=32, lr=3e-3, seed=0,
                               warmup_ratio=0.05, eval_examples=eval_ex, eval_every=125, progress=False)
    after = sft.evaluate_loss(model, eval_ex, tok.mask_token_id, tok.pad_token_id, batch_size=32, seed=5)
    assert len(metrics) == 250 and [m["step"] for m in metrics] == list(range(1, 251))
    assert [m["step"] for m in metrics if "eval_loss" in m] == [125, 250]
    assert metrics[0]["lr"] < metrics[20]["lr"] and metrics[-1]["lr"] < metrics[20]["lr"]  # warmup, then decay
    assert after < 0.35 * before, (before, after)
    assert metrics[-1]["eval_loss"] == pytest.approx(sft.evaluate_loss(
        model, eval_ex, tok.mask_token_id, tok.pad_token_id, batch_size=32, seed=7919), rel=1e-5)


def test_training_is_deterministic_in_the_seed(tiny_dir, tok, one_thread):
    task = CopyTask()
    train_ex, _ = sft.build_examples(task.load("train", n=40), tok, 6, task=task)
    runs = []
    for seed in (3, 3, 4):
        _, metrics = sft.train(load_model(tiny_dir), tok, train_ex, max_steps=15, batch_size=16, lr=1e-3, seed=seed,
                               progress=False)
        runs.append([m["loss"] for m in metrics])
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert [m["epoch"] for m in metrics][:6] == [0, 0, 1, 1, 2, 2]  # 40 rows, batch 16, drop_last: 2 per epoch


def _write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_sft_command_writes_a_loadable_model_dir(tiny_dir, tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(sft, "get_task", lambda name: CopyTask())
    task = CopyTask()
    _write_rows(tmp_path / "train.jsonl", task.load("train", n=32))
    _write_rows(tmp_path / "val.jsonl", task.load("validation", n=8))
    out = tmp_path / "sft_out"
    rc = cli_main(["sft", "--model", str(tiny_dir), "--task", "copy", "--train", str(tmp_path / "train.jsonl"),
                   "--out", str(out), "--gen-length", "6", "--max-steps", "12", "--batch-size", "8", "--lr",
                   "1e-3", "--seed", "1", "--eval", str(tmp_path / "val.jsonl"), "--eval-every", "5",
                   "--warmup-ratio", "0.1", "--no-progress"])
    assert rc == 0 and not (tmp_path / "sft_out.tmp").exists()
    rows = [json.loads(line) for line in (out / "sft_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["step"] for r in rows if "eval_loss" in r] == [5, 10, 12]
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).mask_token_id == 1
    init = AutoModelForMaskedLM.from_pretrained(tiny_dir)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, init.state_dict()[k])]
    assert changed  # the weights were trained


def test_sft_command_s1k_format_with_lora_saves_a_merged_model(tiny_dir, tmp_path, one_thread):
    rng = random.Random(0)
    rows = [{"question": "q:" + "".join(rng.choice(string.ascii_lowercase) for _ in range(4)),
             "solution": "".join(rng.choice("0123456789") for _ in range(3))} for _ in range(16)]
    _write_rows(tmp_path / "s1k.jsonl", rows)
    out = tmp_path / "lora_sft"
    rc = cli_main(["sft", "--model", str(tiny_dir), "--format", "s1k", "--train", str(tmp_path / "s1k.jsonl"),
                   "--out", str(out), "--gen-length", "4", "--max-steps", "5", "--batch-size", "4", "--lr", "1e-2",
                   "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--no-progress"])
    assert rc == 0
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForMaskedLM.from_pretrained(out)
    init = AutoModelForMaskedLM.from_pretrained(tiny_dir)
    assert not any("lora" in k for k in merged.state_dict())
    assert any(not torch.equal(v, init.state_dict()[k]) for k, v in merged.state_dict().items())
    with pytest.raises(ValueError, match="--task is required"):
        cli_main(["sft", "--model", str(tiny_dir), "--train", str(tmp_path / "s1k.jsonl"), "--out",
                  str(tmp_path / "x"), "--gen-length", "4", "--max-steps", "1", "--batch-size", "1", "--lr", "1"])
