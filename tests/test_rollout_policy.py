"""Merged-weight rollouts (egspo.rl.rollout_policy): the merged copy computes the live LoRA policy, tracks the adapter
exactly after optimizer steps (recomputed from the frozen W0, never merged in place), copies only the LoRA-targeted
weights, and the trainer's ratio starts from the live policy's log-probs."""

from __future__ import annotations

import json

import pytest
import torch

from egspo.models.loading import load_model
from egspo.models.tiny import build_tiny_model
from egspo.rl.rollout_policy import LiveRollout, MergedRollout, lora_layers, make_rollout_policy, resolve_rollout_policy
from egspo.rl.trainer import RLConfig, RLTrainer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", hidden_size=32, num_layers=2, num_heads=2,
                            intermediate_size=64, max_len=64, seed=0)


def lora_model(tiny_dir, dtype="float32", seed=0):
    torch.manual_seed(seed)
    model = load_model(tiny_dir, dtype=dtype, lora={"r": 4, "alpha": 8.0, "dropout": 0.0})
    with torch.no_grad():  # peft initialises B = 0 (adapter = identity); make the adapter do something
        for _, layer in lora_layers(model):
            for b in layer.lora_B.values():
                b.weight.normal_(0.0, 0.2)
    return model


def batch(vocab, n=3, s=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (n, s), generator=g)
    mask = torch.ones(n, s, dtype=torch.bool)
    mask[0, :3] = False  # one left-padded row
    return ids, mask


def logits(model, ids, mask):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_merged_logits_equal_live_logits(tiny_dir):
    model = lora_model(tiny_dir)
    ids, mask = batch(model.config.vocab_size)
    live = logits(model, ids, mask)
    rollout = MergedRollout(model)
    with rollout.weights() as m:
        merged = logits(m, ids, mask)
    torch.testing.assert_close(merged, live, rtol=1e-5, atol=1e-5)
    # the adapter matters (the test would notice a merged copy that dropped it) ...
    with model.model.disable_adapter():
        base = logits(model, ids, mask)
    assert (base - live).abs().max() > 1e-2
    # ... and after the block the model is the live LoRA model again, on its original W0 storage
    torch.testing.assert_close(logits(model, ids, mask), live, rtol=0, atol=0)
    for entry, (_, layer) in zip(rollout.entries, lora_layers(model), strict=True):
        assert layer.get_base_layer().weight.data_ptr() == entry.base_weight.data_ptr()


def test_merged_copy_tracks_the_adapter_after_optimizer_steps(tiny_dir):
    model = lora_model(tiny_dir)
    w0 = {name: layer.get_base_layer().weight.detach().clone() for name, layer in lora_layers(model)}
    rollout = MergedRollout(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-2)
    ids, mask = batch(model.config.vocab_size)
    for step in range(3):
        model.train()
        loss = model(input_ids=ids, attention_mask=mask).logits.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        live = logits(model, ids, mask)
        with rollout.weights() as m:
            merged = logits(m, ids, mask)
        torch.testing.assert_close(merged, live, rtol=1e-5, atol=1e-5)
        # W_r is exactly W0 + s * B A of the current adapter (recomputed, no drift), W0 bit-identical
        for entry, (name, layer) in zip(rollout.entries, lora_layers(model), strict=True):
            a, b = layer.lora_A[entry.adapter].weight, layer.lora_B[entry.adapter].weight
            expected = w0[name] + layer.scaling[entry.adapter] * (b @ a)
            torch.testing.assert_close(entry.merged, expected.detach(), rtol=1e-6, atol=1e-6)
            assert torch.equal(layer.get_base_layer().weight, w0[name])


def test_bf16_merged_weights_never_drift(tiny_dir):
    """Many rollouts with changing adapters: W_r equals a fresh one-rounding merge each time and W0 never moves
    (peft's in-place merge/unmerge would add and subtract s*B@A in bf16 and accumulate rounding)."""
    model = lora_model(tiny_dir, dtype="bfloat16")
    rollout = MergedRollout(model)
    w0 = [e.base_weight.clone() for e in rollout.entries]
    for i in range(5):
        with torch.no_grad():
            for e in rollout.entries:
                e.layer.lora_A[e.adapter].weight.add_(0.01 * (i + 1))
        with rollout.weights():
            pass
        for e, base in zip(rollout.entries, w0, strict=True):
            a = e.layer.lora_A[e.adapter].weight.float()
            b = e.layer.lora_B[e.adapter].weight.float()
            fresh = (base.float() + e.layer.scaling[e.adapter] * (b @ a)).to(torch.bfloat16)
            assert torch.equal(e.merged, fresh)
            assert torch.equal(e.base_weight, base)


def test_only_lora_targeted_weights_are_copied(tiny_dir):
    model = lora_model(tiny_dir)
    rollout = MergedRollout(model)
    targeted = sum(layer.get_base_layer().weight.numel() for _, layer in lora_layers(model))
    total = sum(p.numel() for p in model.parameters())
    assert rollout.copied_numel() == targeted
    assert len(rollout.entries) == 2 * 4  # 2 layers x (attn Wqkv, attn Wo, mlp Wi, mlp Wo)
    names = sorted({n.rsplit(".", 1)[-1] for n, _ in lora_layers(model)})
    assert names == ["Wi", "Wo", "Wqkv"]
    assert targeted < total  # embeddings, norms and the head are shared, not copied


def test_resolution_and_refusals(tiny_dir):
    assert resolve_rollout_policy("auto", lora=True, device="cuda") == "merged"
    assert resolve_rollout_policy("auto", lora=True, device="cpu") == "live"
    assert resolve_rollout_policy("auto", lora=True, device="cuda", quantized=True) == "live"
    assert resolve_rollout_policy("auto", lora=False, device="cuda") == "live"
    assert resolve_rollout_policy("merged", lora=True, device="cpu") == "merged"
    with pytest.raises(ValueError, match="needs a LoRA policy"):
        resolve_rollout_policy("merged", lora=False, device="cuda")
    with pytest.raises(ValueError, match="4-bit"):
        resolve_rollout_policy("merged", lora=True, device="cuda", quantized=True)
    with pytest.raises(ValueError, match="rollout_policy must be one of"):
        resolve_rollout_policy("fast", lora=True, device="cuda")
    plain = load_model(tiny_dir)
    assert isinstance(make_rollout_policy("auto", plain, device="cpu"), LiveRollout)
    with pytest.raises(ValueError, match="peft LoRA policy"):
        MergedRollout(plain)


# ---- the trainer ------------------------------------------------------------------------------------------------


@pytest.fixture
def toy_setup(toy_task, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": f"q{i}:"}) + "\n" for i in range(6)))
    return train


def rl_config(tiny_dir, train, out, **kw):
    settings = dict(model=str(tiny_dir), task="toy", train=str(train), out=str(out), seed=5, style="tiny",
                    num_generations=4, batch_size=2, max_steps=1, save_every=1, gen_length=8, steps=4,
                    block_length=4, k=2, lam=0.5, lr=1e-2, temperature=1.0, lora_r=4, lora_alpha=8.0,
                    lora_dropout=0.0)
    settings.update(kw)
    return RLConfig(**settings)


def test_trainer_merged_rollout_matches_live_and_rescores_old_logprobs(tiny_dir, toy_setup, tmp_path, monkeypatch):
    live = RLTrainer(rl_config(tiny_dir, toy_setup, tmp_path / "live", rollout_policy="live"))
    merged = RLTrainer(rl_config(tiny_dir, toy_setup, tmp_path / "merged", rollout_policy="merged"))
    assert isinstance(live.rollout_policy, LiveRollout) and isinstance(merged.rollout_policy, MergedRollout)
    assert RLTrainer(rl_config(tiny_dir, toy_setup, tmp_path / "auto")).rollout_policy.name == "live"  # CPU

    import egspo.core.objective as objective

    seen = {}
    original = objective.step_batch

    def spy(rollout, steps):
        out = original(rollout, steps)
        seen.setdefault("batches", []).append(out)
        return out

    monkeypatch.setattr(objective, "step_batch", spy)
    res_live = live.run_iteration([0, 1])
    res_merged = merged.run_iteration([0, 1])
    # float32: the merged copy samples the same trajectories as the live policy (same seed, same generator)
    assert torch.equal(res_live.rollout.completion, res_merged.rollout.completion)
    torch.testing.assert_close(res_merged.rollout.token_logprobs, res_live.rollout.token_logprobs,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res_merged.advantages, res_live.advantages)
    # the merged run's old log-probs were re-scored by the live policy (ratio = 1 at the first step)
    live_batch, merged_batch = seen["batches"]
    torch.testing.assert_close(merged_batch.old_logprobs, live_batch.old_logprobs, rtol=1e-5, atol=1e-5)
    # both updated the adapter the same way
    for (k, v), (k2, v2) in zip(live.policy.state_dict().items(), merged.policy.state_dict().items(), strict=True):
        assert k == k2
        torch.testing.assert_close(v, v2, rtol=1e-4, atol=1e-5)


def test_merged_requires_lora(tiny_dir, toy_setup, tmp_path):
    with pytest.raises(ValueError, match="rollout_policy='merged' needs LoRA"):
        RLTrainer(rl_config(tiny_dir, toy_setup, tmp_path / "x", rollout_policy="merged", lora_r=0))


def test_old_logprobs_come_from_the_live_policy_not_the_rollout_weights(tiny_dir, toy_setup, tmp_path, monkeypatch):
    """A deliberately perturbed rollout copy (W_r scaled by 3): the recorded rollout log-probs then differ from
    the live policy's, and the ratio's old log-probs must be the live re-scores."""
    import egspo.core.objective as objective
    from egspo.rl.rollout_policy import MergedRollout as Merged

    original_refresh = Merged.refresh

    def perturbed(self):
        original_refresh(self)
        for e in self.entries:
            e.merged.mul_(3.0)

    monkeypatch.setattr(Merged, "refresh", perturbed)
    seen = []
    original = objective.step_batch
    monkeypatch.setattr(objective, "step_batch", lambda r, s: seen.append(original(r, s)) or seen[-1])
    trainer = RLTrainer(rl_config(tiny_dir, toy_setup, tmp_path / "p", rollout_policy="merged", lr=0.0))
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    result = trainer.run_iteration([0, 1])
    batch = seen[0]
    recorded = original(result.rollout, result.selection.steps).old_logprobs  # what the rollout recorded
    trainer.policy.load_state_dict(before)
    trainer.policy.eval()
    with torch.no_grad():
        rescored = objective.token_logprobs(trainer.policy, batch)
    torch.testing.assert_close(batch.old_logprobs, rescored, rtol=1e-6, atol=1e-6)
    assert (recorded - rescored).abs().max() > 1e-3
