"""`egspo rl`: prompt order, one iteration per algorithm, advantage wiring, KL at zero learning rate, gradient
accumulation invariance, checkpoint / resume equivalence, the CLI, and (slow) two CPU processes under accelerate."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import egspo.tasks as task_registry
from egspo.rl.prompt_sampler import PromptOrder
from egspo.rl.command import configure
from egspo.rl.trainer import RLConfig, RLTrainer
from egspo.rl.updates.base import IterationResult, UpdateStrategy
from conftest import TOY, ToyTask


# ---- toy tasks over the tiny character alphabet ---------------------------------------------------------------------


class PromptOnlyTask(ToyTask):
    """Reward depends on the prompt row only: r(S_T) = r(x_hat(S_j)) for every state."""

    name = "prompt_only"

    def reward(self, completion, row):
        return float(row["value"])


PROMPT_ONLY = PromptOnlyTask()


@pytest.fixture(autouse=True)
def _register_tasks(toy_task):
    task_registry.register_task("prompt_only", PROMPT_ONLY)  # into the registry copy the toy_task fixture restores


def make_config(tiny_model, train_file, out, **overrides) -> RLConfig:
    settings = dict(model=str(tiny_model), task="toy", train=str(train_file), out=str(out), seed=3,
                    num_generations=4, batch_size=2, max_steps=1, save_every=1, gen_length=8, steps=4,
                    block_length=4, k=2, mu=2, lr=1e-3, temperature=1.0)
    settings.update(overrides)
    return RLConfig(**settings)


def params_of(trainer: RLTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ---- prompt order ----------------------------------------------------------------------------------------------------


def test_every_prompt_once_per_epoch_across_resume():
    n, batch = 10, 4  # 4 does not divide 10: batches straddle epoch boundaries
    order = PromptOrder(n, seed=7)
    stream = [i for _ in range(9) for i in order.next_batch(batch)]  # 36 prompts = 3.6 epochs
    for e in range(3):
        epoch = stream[e * n:(e + 1) * n]
        assert sorted(epoch) == list(range(n)), f"epoch {e} is not a permutation: {epoch}"
        assert epoch == order.permutation(e).tolist()
    assert stream[:n] != stream[n:2 * n]  # reshuffled each epoch
    # The partial epoch 3 is the head of its permutation (the remainder wrapped, nothing skipped).
    assert stream[3 * n:] == order.permutation(3).tolist()[:6]

    # Resume after 5 batches from the saved state: same continuation as the uninterrupted stream.
    first = PromptOrder(n, seed=7)
    for _ in range(5):
        first.next_batch(batch)
    resumed = PromptOrder(n, seed=7)
    resumed.load_state_dict(first.state_dict())
    rest = [i for _ in range(4) for i in resumed.next_batch(batch)]
    assert rest == stream[20:]
    with pytest.raises(ValueError, match="seed"):
        PromptOrder(n, seed=8).load_state_dict(first.state_dict())


def test_shards_are_contiguous_and_cover_the_batch():
    batch = [5, 1, 4, 0, 2, 3]
    parts = [PromptOrder.shard(batch, r, 3) for r in range(3)]
    assert parts == [[5, 1], [4, 0], [2, 3]]
    with pytest.raises(ValueError, match="split evenly"):
        PromptOrder.shard(batch, 0, 4)


# ---- one iteration ---------------------------------------------------------------------------------------------------

VARIANTS = {
    "egspo": dict(algorithm="egspo", lam=0.0),
    "egspo_sa": dict(algorithm="egspo", lam=0.5),
    "diffu_grpo": dict(algorithm="diffu_grpo"),
    "sa_rollout_exact_loo": dict(algorithm="egspo", lam=0.5, baseline="rollout", rollout_m=2, kl_estimator="exact",
                                 advantage_baseline="loo", logprob_reduction="mean"),
    "random_selection_content": dict(algorithm="egspo", lam=0.5, selection="random", restrict_to_content=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_iteration_updates_parameters(tiny_model, train_file, tmp_path, variant):
    cfg = make_config(tiny_model, train_file, tmp_path / "run", weight_decay=0.0, **VARIANTS[variant])
    trainer = RLTrainer(cfg)
    before = params_of(trainer)
    trainer.train()
    after = params_of(trainer)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter changed"
    (row,) = read_metrics(tmp_path / "run")
    for key in ("step", "reward_mean", "reward_std", "advantage_abs_mean", "loss", "kl", "clip_frac", "grad_norm",
                "lr", "entropy_mean", "time_rollout_s", "time_update_s"):
        assert key in row and row[key] is not None, key
    assert row["step"] == 1 and row["advantage_abs_mean"] > 0
    assert (row["onestep_reward_mean"] is not None) == (variant.startswith("sa") or variant.startswith("random")
                                                        or variant == "egspo_sa")
    ckpt = tmp_path / "run" / "checkpoints" / "step_1"
    assert (ckpt / "trainer_state.pt").is_file() and (ckpt / "model.safetensors").is_file()


def test_sa_advantages_match_hand_computation(tiny_model, train_file, tmp_path):
    lam, G, K = 0.5, 4, 2
    cfg = make_config(tiny_model, train_file, tmp_path / "run", lam=lam, k=K)
    trainer = RLTrainer(cfg)
    res = trainer.run_iteration([0, 1])
    r0, b, A = res.rewards.tolist(), res.baseline_rewards.tolist(), res.advantages.tolist()
    # b_j really is the reward of the decoded greedy one-step fill of the selected state.
    rows = [trainer.rows[i] for i in (0, 1) for _ in range(G)]
    for n in range(2 * G):
        for k in range(K):
            j = int(res.selection.steps[n, k])
            fill = res.rollout.greedy_fill[n, j]
            text = trainer._decode(fill.unsqueeze(0))[0]
            assert b[n][k] == pytest.approx(TOY.reward(text, rows[n]))
    R = [[(r0[n] + lam * (r0[n] - b[n][k])) / (1 + lam) for k in range(K)] for n in range(2 * G)]
    for g in range(2):
        for k in range(K):
            mean = sum(R[n][k] for n in range(g * G, (g + 1) * G)) / G
            for n in range(g * G, (g + 1) * G):
                assert A[n][k] == pytest.approx(R[n][k] - mean, abs=1e-6)
    assert any(abs(x) > 1e-6 for row in A for x in row)


def test_lam0_computes_no_one_step_rewards(tiny_model, train_file, tmp_path, monkeypatch):
    import egspo.core.advantages

    def forbidden(*args, **kwargs):
        raise AssertionError("greedy-fill rewards computed with lam = 0")

    monkeypatch.setattr(egspo.core.advantages, "greedy_baseline_rewards", forbidden)
    monkeypatch.setattr(egspo.core.advantages, "multistep_values", forbidden)
    sizes = []
    original = ToyTask.reward_batch
    monkeypatch.setattr(ToyTask, "reward_batch", lambda self, c, r: sizes.append(len(c)) or original(self, c, r))
    trainer = RLTrainer(make_config(tiny_model, train_file, tmp_path / "run", lam=0.0))
    res = trainer.run_iteration([0, 1])
    assert sizes == [8]  # only the N final completions were scored
    assert res.rollout.greedy_fill is None and res.baseline_rewards is None
    expected = res.rewards.view(2, 4) - res.rewards.view(2, 4).mean(1, keepdim=True)
    torch.testing.assert_close(res.advantages, expected.reshape(8, 1).expand(8, 2))


def test_stepwise_term_vanishes_when_reward_equals_one_step_reward(tiny_model, train_file, tmp_path):
    # r(S_T) = r(x_hat(S_j)) = f(prompt): the stepwise part lam * (r0 - b_j) is 0, so R_j = r0 / (1 + lam), the
    # group-centred advantages are 0 and there is no policy-gradient signal; with beta = 0 and no weight decay the
    # parameters must not move although the learning rate is large.
    cfg = make_config(tiny_model, train_file, tmp_path / "run", task="prompt_only", lam=0.5, beta=0.0,
                      weight_decay=0.0, lr=0.1)
    trainer = RLTrainer(cfg)
    before = params_of(trainer)
    res = trainer.run_iteration([0, 1])
    torch.testing.assert_close(res.baseline_rewards, res.rewards.unsqueeze(1).expand(8, 2))
    torch.testing.assert_close(res.returns, res.rewards.unsqueeze(1).expand(8, 2) / 1.5)
    assert torch.count_nonzero(res.advantages) == 0
    for k, v in params_of(trainer).items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", ["egspo", "diffu_grpo"])
def test_kl_stays_zero_at_zero_learning_rate(tiny_model, train_file, tmp_path, algorithm):
    cfg = make_config(tiny_model, train_file, tmp_path / "run", algorithm=algorithm, lam=0.5, beta=0.5, lr=0.0,
                      max_steps=2)
    RLTrainer(cfg).train()
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["kl"] == pytest.approx(0.0, abs=1e-6)
    # ... while with a learning rate the policy drifts from the reference and the KL grows.
    cfg = make_config(tiny_model, train_file, tmp_path / "run2", algorithm=algorithm, lam=0.5, beta=0.5, lr=0.05,
                      max_steps=2, max_grad_norm=10.0)
    RLTrainer(cfg).train()
    assert read_metrics(tmp_path / "run2")[-1]["kl"] > 1e-4


@pytest.mark.parametrize("algorithm", ["egspo", "diffu_grpo"])
def test_grad_accum_does_not_change_the_gradients(tiny_model, train_file, tmp_path, monkeypatch, algorithm):
    # Gradients (not parameters: Adam is invariant to a loss scale) of every optimizer step, with the rows processed
    # at once, in 4 accumulated pieces, and with gradient checkpointing. (micro_batch would also chunk the rollout,
    # which changes the random stream; here it is left unset.)
    recorded: list[list[torch.Tensor]] = []
    checkpointed: list[bool] = []
    original = RLTrainer.optimizer_step

    def record(self):
        recorded.append([p.grad.detach().clone() for p in self.params])
        checkpointed.append(any(getattr(m, "gradient_checkpointing", False) for m in self.policy.modules()))
        return original(self)

    monkeypatch.setattr(RLTrainer, "optimizer_step", record)
    runs = []
    for name, extra in (("plain", {}), ("accum", dict(grad_accum=4)), ("ckpt", dict(gradient_checkpointing=True))):
        recorded.clear()
        cfg = make_config(tiny_model, train_file, tmp_path / name, algorithm=algorithm, lam=0.5, **extra)
        RLTrainer(cfg).train()
        runs.append(list(recorded))
    assert [len(r) for r in runs] == [2, 2, 2]  # K = mu = 2 optimizer steps
    assert checkpointed == [False] * 4 + [True] * 2
    for plain, *others in zip(*runs):
        assert any(float(g.abs().max()) > 1e-6 for g in plain)
        for other in others:
            for g1, g2 in zip(plain, other):
                torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-7)


def grads_per_step(monkeypatch, cfg: RLConfig) -> list[list[torch.Tensor]]:
    """The gradients of every optimizer step of one run of ``cfg`` (for the baselines' accumulation tests)."""
    recorded = []
    original = RLTrainer.optimizer_step

    def record(self):
        recorded.append([p.grad.detach().clone() for p in self.params])
        return original(self)

    monkeypatch.setattr(RLTrainer, "optimizer_step", record)
    RLTrainer(cfg).train()
    monkeypatch.setattr(RLTrainer, "optimizer_step", original)
    return recorded


def straight_and_resumed(tiny_model, train_file, tmp_path, **common) -> tuple[dict, dict, list[dict]]:
    """The step_2 weights of a 2-iteration run and of the same run stopped after 1 and resumed, and the resumed
    run's metrics rows (for the baselines' resume tests)."""
    RLTrainer(make_config(tiny_model, train_file, tmp_path / "straight", max_steps=2, **common)).train()
    RLTrainer(make_config(tiny_model, train_file, tmp_path / "split", max_steps=1, **common)).train()
    RLTrainer(make_config(tiny_model, train_file, tmp_path / "split", max_steps=2, **common)).train()
    a = load_file(tmp_path / "straight" / "checkpoints" / "step_2" / "model.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "step_2" / "model.safetensors")
    return a, b, read_metrics(tmp_path / "split")


# ---- update strategies -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm, loss_name", [("egspo", "egspo_loss"), ("diffu_grpo", "d1_grpo_loss")])
def test_strategies_run_the_tested_loss(tiny_model, train_file, tmp_path, monkeypatch, algorithm, loss_name):
    # The trainer's update goes through the function tests/test_objective.py checks: replacing it by a loss of 0
    # leaves the parameters where they were (beta = 0, no weight decay), while the real one moves them.
    import egspo.core.objective as objective

    calls = []
    real = getattr(objective, loss_name)

    def zero_loss(logp, *args, **kwargs):
        calls.append(len(logp))
        return real(logp, *args, **kwargs) * 0.0

    monkeypatch.setattr(objective, loss_name, zero_loss)
    cfg = make_config(tiny_model, train_file, tmp_path / "run", algorithm=algorithm, lam=0.5, beta=0.0,
                      weight_decay=0.0, grad_accum=2)
    trainer = RLTrainer(cfg)
    before = params_of(trainer)
    trainer.run_iteration([0, 1])
    assert calls == [4, 4, 4, 4]  # 2 optimizer steps (K = mu = 2) x 2 accumulated pieces of 4 rows
    for k, v in params_of(trainer).items():
        assert torch.equal(v, before[k]), f"{k} moved although the loss was zero"
    monkeypatch.setattr(objective, loss_name, real)
    trainer = RLTrainer(make_config(tiny_model, train_file, tmp_path / "real", algorithm=algorithm, lam=0.5,
                                    beta=0.0, weight_decay=0.0))
    trainer.run_iteration([0, 1])
    assert any(not torch.equal(v, before[k]) for k, v in params_of(trainer).items())


def test_a_registered_strategy_plugs_into_the_loop(tiny_model, train_file, tmp_path, monkeypatch):
    # A new algorithm is one registered UpdateStrategy: the loop runs it, checkpoints and writes its metrics.
    import egspo.rl.updates as updates

    monkeypatch.setitem(updates.STRATEGIES, "constant", f"{__name__}:ConstantUpdate")
    cfg = make_config(tiny_model, train_file, tmp_path / "run", algorithm="constant", max_steps=2)
    assert "constant" in updates.algorithm_names()
    trainer = RLTrainer(cfg)
    trainer.train()
    assert ConstantUpdate.seen == [8, 8]  # N = batch_size * G rows per iteration, rewards scored by the loop
    assert [r["loss"] for r in read_metrics(tmp_path / "run")] == [0.25, 0.25]
    monkeypatch.setitem(updates.STRATEGIES, "broken", "egspo.rl.config:RLConfig")
    with pytest.raises(TypeError, match="not an UpdateStrategy"):
        RLTrainer(make_config(tiny_model, train_file, tmp_path / "broken", algorithm="broken"))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        make_config(tiny_model, train_file, tmp_path / "x", algorithm="nope").validate()


class ConstantUpdate(UpdateStrategy):
    """A do-nothing strategy: records the batch size, reports a fixed loss, takes no optimizer step."""

    seen: list[int] = []

    def update(self, rollout, rewards, rows, t0):
        type(self).seen.append(len(rewards))
        assert len(rows) == len(rollout) == len(rewards)
        metrics = dict(loss=0.25, kl=None, clip_frac=0.0, grad_norm=None, advantage_abs_mean=0.0,
                       onestep_reward_mean=None, time_rollout_s=0.0)
        return IterationResult(rewards=rewards, advantages=torch.zeros_like(rewards), rollout=rollout,
                               metrics=metrics)


# ---- checkpoints and resume -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["egspo", "diffu_grpo"])
def test_resume_reproduces_an_uninterrupted_run(tiny_model, train_file, tmp_path, algorithm):
    common = dict(algorithm=algorithm, lam=0.5, save_every=2, batch_size=4)  # 4 prompts of 10: crosses an epoch
    straight = tmp_path / "straight"
    RLTrainer(make_config(tiny_model, train_file, straight, max_steps=4, **common)).train()

    split = tmp_path / "split"
    RLTrainer(make_config(tiny_model, train_file, split, max_steps=2, **common)).train()
    with (split / "metrics.jsonl").open("a") as fh:  # a row written after the last checkpoint, then a crash
        fh.write(json.dumps({"step": 3, "reward_mean": -1.0}) + "\n")
    resumed = RLTrainer(make_config(tiny_model, train_file, split, max_steps=4, **common))
    assert resumed.iteration == 2 and resumed.order.position == 8
    resumed.train()

    for name in ("step_2", "step_4"):
        a = load_file(straight / "checkpoints" / name / "model.safetensors")
        b = load_file(split / "checkpoints" / name / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}/{k} differs after resume"

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]

    assert [r["step"] for r in read_metrics(split)] == [1, 2, 3, 4]
    assert strip(read_metrics(straight)) == strip(read_metrics(split))
    # 16 prompts drawn: epoch 0 entirely, then the first 6 of epoch 1.
    assert resumed.order.position == 16


def test_resume_refuses_changed_settings(tiny_model, train_file, tmp_path):
    RLTrainer(make_config(tiny_model, train_file, tmp_path / "run")).train()
    with pytest.raises(ValueError, match="lam"):
        RLTrainer(make_config(tiny_model, train_file, tmp_path / "run", lam=0.1, max_steps=2))


def test_changed_settings_restart_from_scratch_when_asked(tiny_model, train_file, tmp_path):
    out = tmp_path / "run"
    RLTrainer(make_config(tiny_model, train_file, out, max_steps=2, save_every=1)).train()
    fresh = RLTrainer(make_config(tiny_model, train_file, tmp_path / "fresh", lam=0.1, max_steps=2, save_every=1))
    fresh.train()
    restarted = RLTrainer(make_config(tiny_model, train_file, out, lam=0.1, max_steps=2, save_every=1,
                                      on_settings_change="restart"))
    assert restarted.iteration == 0 and not (out / "checkpoints").exists()  # old run discarded, not resumed
    restarted.train()
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    for a, b in zip(restarted.policy.parameters(), fresh.policy.parameters(), strict=True):
        assert torch.equal(a, b)  # identical to a run that started in an empty directory
    # same settings: "restart" resumes as usual (nothing is discarded)
    again = RLTrainer(make_config(tiny_model, train_file, out, lam=0.1, max_steps=2, save_every=1,
                                  on_settings_change="restart"))
    assert again.iteration == 2


# ---- configuration and CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(grad_accum=3), "grad_accum"),
        (dict(k=5), "k=5 exceeds"),
        (dict(task="nope"), "unknown task"),
        (dict(selection="all", k=2), "selection='all'"),
        (dict(baseline="bogus"), "baseline"),
        (dict(num_generations=1), "num_generations"),
        (dict(steps=3), "steps"),
        (dict(eps_low=1.5), "eps_low"),
    ],
)
def test_bad_settings_raise(tiny_model, train_file, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        RLTrainer(make_config(tiny_model, train_file, tmp_path / "run", **overrides))


def test_cli_flags_map_to_config():
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--model", "m", "--task", "sudoku", "--train", "t.jsonl", "--out", "o",
                              "--restrict-to-content", "--micro-batch", "4", "--lam", "0", "--num-generations", "6",
                              "--load-in-4bit", "false", "--lora-targets", "q_proj,v_proj", "--lora-r", "8"])
    cfg = RLConfig.from_namespace(args)
    assert cfg.restrict_to_content is True and cfg.load_in_4bit is False
    assert cfg.micro_batch == 4 and cfg.lam == 0.0 and cfg.num_generations == 6
    assert cfg.lora() == {"r": 8, "alpha": 64.0, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
    defaults = RLConfig.from_namespace(parser.parse_args(["--model", "m", "--task", "t", "--train", "t",
                                                          "--out", "o"]))
    assert (defaults.num_generations, defaults.k, defaults.lam, defaults.eps_low, defaults.eps_high,
            defaults.beta, defaults.temperature, defaults.gen_length, defaults.steps, defaults.block_length,
            defaults.lr) == (8, 8, 0.5, 0.2, 0.5, 0.04, 0.9, 256, 128, 32, 3e-5)


def test_lora_policy_trains_only_the_adapter_and_checkpoints_it(tiny_model, train_file, tmp_path):
    cfg = make_config(tiny_model, train_file, tmp_path / "run", lam=0.5, lora_r=4, lora_alpha=8.0, lora_dropout=0.0,
                      max_steps=2, save_every=1)
    trainer = RLTrainer(cfg)
    before = params_of(trainer)
    trainer.train()
    after = params_of(trainer)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    ckpt = tmp_path / "run" / "checkpoints" / "step_2"
    assert (ckpt / "adapter_config.json").is_file() and not (ckpt / "model.safetensors").exists()
    # Resuming loads the adapter: a fresh trainer continues from step 2 with the trained weights.
    resumed = RLTrainer(make_config(tiny_model, train_file, tmp_path / "run", lam=0.5, lora_r=4, lora_alpha=8.0,
                                    lora_dropout=0.0, max_steps=3, save_every=1))
    assert resumed.iteration == 2
    for k, v in params_of(resumed).items():
        torch.testing.assert_close(v, after[k], rtol=0, atol=0)


# ---- two processes ---------------------------------------------------------------------------------------------------

LAUNCHED = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    import egspo.tasks as registry
    registry.register_task("toy", "conftest:TOY")
    from egspo.rl.trainer import RLConfig, RLTrainer
    cfg = RLConfig(**{cfg!r})
    trainer = RLTrainer(cfg)
    trainer.train()
    torch.save({{k: v.cpu() for k, v in trainer.policy.state_dict().items()}},
               f"{{cfg.out}}/rank{{trainer.rank}}.pt")
    with open(f"{{cfg.out}}/prompts_rank{{trainer.rank}}.txt", "w") as fh:
        fh.write(str(trainer.order.position))
""")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["egspo", "diffu_grpo"])
def test_two_cpu_processes_keep_parameters_identical(tiny_model, train_file, tmp_path, algorithm):
    out = tmp_path / "run"
    cfg = make_config(tiny_model, train_file, out, algorithm=algorithm, lam=0.5, max_steps=2, save_every=2)
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED.format(tests=str(Path(__file__).parent), cfg=cfg.__dict__))
    # accelerate 1.x: `launch --cpu --num_processes 2` starts ONE process (its simple launcher needs mpirun for
    # several CPU processes); the torch.distributed launcher with ACCELERATE_USE_CPU=1 starts two (gloo backend).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", "29517", str(script)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    initial = load_file(Path(tiny_model) / "model.safetensors")
    moved = False
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"
        name = k.removeprefix("model.")
        if name in initial and not torch.equal(initial[name], r0[k]):
            moved = True
    assert moved, "the two-process run did not update the parameters"
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    ckpt = load_file(out / "checkpoints" / "step_2" / "model.safetensors")
    for k, v in ckpt.items():
        assert torch.equal(v, r0["model." + k])
    assert np.isfinite(rows[-1]["loss"])
