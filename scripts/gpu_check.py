"""GPU speed check of one EGSPO-SA iteration at the paper's shape, random weights, no download.

Model: Llama blocks shaped like LLaDA-8B (hidden 4096, 32 layers, 32 heads, MLP 12288, vocab 126464) with
bidirectional attention (every attention module's ``is_causal`` off, no mask: SDPA runs non-causal), bf16, LoRA
r 128 / alpha 64 / dropout 0.05 on q, k, v, o, gate, up, down. Batch 6 trajectories, prompt 200, L 256, T 128,
block 32, K 8 (``--shape llada``); ``--shape tiny`` runs the same code at a toy size (a CPU smoke test).

Timed, each after a warm-up, with CUDA synchronisation:
  rollout_live_s     egspo.core.sampler.generate through the unmerged LoRA model (what the authors' code does)
  rollout_merged_s   the same through egspo.rl.rollout_policy.MergedRollout (W0 + s*B@A copy, refresh included)
  update_s           the trainer's EGSPO update on the merged rollout: live re-score of the old log-probs, the
                     reference pass (adapter off), K optimizer steps (clipped surrogate + beta*k3, AdamW)
  bare_forwards_s    T no-grad forwards of the base weights alone at [batch, prompt+L]  (and _lora: through LoRA)
  bare_fwd_bwd_s     K forward+backward passes of the LoRA model at [batch, prompt+L]
  iteration_s        rollout_merged_s + update_s (target <= 16 s on an H100; the authors' code: 25.7 + 12.5 s)
Also checks that the merged rollout computes the live policy (max |logit difference| on one state) and, unless
``--no-trainer``, runs 2 iterations of ``egspo.rl.trainer.RLTrainer`` on a tiny LoRA model on the same device
(``rollout_policy=auto``: merged on CUDA). Prints one JSON object; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from egspo.utils.files import atomic_write_text  # noqa: E402

SHAPES = {
    "llada": dict(hidden=4096, layers=32, heads=32, mlp=12288, vocab=126464, batch=6, prompt=200, gen_length=256,
                  steps=128, block=32, k=8, r=128),
    "tiny": dict(hidden=64, layers=2, heads=4, mlp=128, vocab=512, batch=6, prompt=20, gen_length=32, steps=16,
                 block=8, k=4, r=8),
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def build_policy(shape: dict, device: torch.device, dtype: torch.dtype, seed: int):
    """Random LLaDA-shaped Llama (bidirectional) + fresh LoRA, as an egspo DiffusionLM."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from egspo.models.diffusion_lm import DiffusionLM
    from egspo.models.families import FAMILIES

    config = LlamaConfig(hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"],
                         intermediate_size=shape["mlp"], vocab_size=shape["vocab"],
                         max_position_embeddings=4096, tie_word_embeddings=False, attn_implementation="sdpa")
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False  # LLaDA's attention is bidirectional
    model = get_peft_model(model, LoraConfig(r=shape["r"], lora_alpha=64, lora_dropout=0.05,
                                             target_modules=LORA_TARGETS, bias="none"))
    with torch.no_grad():  # a trained adapter is non-zero (peft initialises B = 0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 1e-3)
    return DiffusionLM(model, FAMILIES["masked_lm"])


def check_bidirectional(policy, vocab, device) -> float:
    """Change the last token; the first position's logits must change (a causal model would leave them)."""
    ids = torch.randint(0, vocab, (1, 16), device=device)
    other = ids.clone()
    other[0, -1] = (ids[0, -1] + 1) % vocab
    with torch.no_grad():
        a = policy(input_ids=ids).logits[0, 0].float()
        b = policy(input_ids=other).logits[0, 0].float()
    diff = float((a - b).abs().max())
    if diff == 0.0:
        raise RuntimeError("attention is causal: is_causal=False did not reach the attention kernels")
    return diff


def run_benchmark(shape: dict, device: torch.device, dtype: torch.dtype, seed: int) -> dict:
    from egspo.core.advantages import group_centered
    from egspo.models.reference import ReferencePolicy
    from egspo.core.objective import clipped_surrogate, kl_k3, step_batch, step_logprob, token_logprobs
    from egspo.rl.rollout_policy import MergedRollout
    from egspo.core.sampler import SamplerConfig, generate
    from egspo.core.selection import select_steps

    result: dict = {"shape": shape, "device": str(device), "dtype": str(dtype).replace("torch.", "")}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    t_build, policy = timed(device, lambda: build_policy(shape, device, dtype, seed))
    result["build_s"] = round(t_build, 2)
    policy.eval()
    result["bidirectional_logit_change"] = check_bidirectional(policy, shape["vocab"], device)
    mask_id = shape["vocab"] - 2
    cfg = SamplerConfig(gen_length=shape["gen_length"], steps=shape["steps"], block_length=shape["block"],
                        mask_token_id=mask_id, temperature=0.9, pad_token_id=0, eos_token_id=shape["vocab"] - 1)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    prompts = torch.randint(1, mask_id, (shape["batch"], shape["prompt"]), generator=gen, device=device)
    merged = MergedRollout(policy)
    result["merged_copy_gb"] = round(merged.copied_numel() * torch.finfo(dtype).bits / 8 / 1e9, 3)
    warm = SamplerConfig(gen_length=shape["block"], steps=2, block_length=shape["block"], mask_token_id=mask_id,
                         temperature=0.9, pad_token_id=0)
    generate(policy, prompts, warm, generator=gen)
    with merged.weights() as m:
        generate(m, prompts, warm, generator=gen)
        x = torch.cat([prompts, torch.full((shape["batch"], shape["gen_length"]), mask_id, device=device)], 1)
        with torch.no_grad():
            merged_logits = m(input_ids=x).logits.float()
    with torch.no_grad():
        live_logits = policy(input_ids=x).logits.float()
    result["merged_vs_live_max_abs_logit_diff"] = float((merged_logits - live_logits).abs().max())
    result["logit_scale_max_abs"] = float(live_logits.abs().max())
    del merged_logits, live_logits

    t_live, _ = timed(device, lambda: generate(policy, prompts, cfg, generator=gen))
    result["rollout_live_s"] = round(t_live, 3)

    def merged_rollout():
        with merged.weights() as m:
            return generate(m, prompts, cfg, generator=gen)

    t_merged, rollout = timed(device, merged_rollout)
    result["rollout_merged_s"] = round(t_merged, 3)

    # ---- the update, as RLTrainer._egspo does it (rewards random: the cost does not depend on them) -------------
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-5, betas=(0.9, 0.99), weight_decay=0.1)
    reference = ReferencePolicy(policy)
    K, N = shape["k"], shape["batch"]

    def update():
        sel = select_steps(rollout.step_entropy, K, "entropy")
        batch = step_batch(rollout, sel.steps)
        with torch.no_grad():
            policy.eval()
            batch.old_logprobs = token_logprobs(policy, batch)
            with reference.context() as ref_model:
                ref_lp = token_logprobs(ref_model, batch)
        rewards = torch.rand(N, generator=torch.Generator().manual_seed(seed))
        adv = group_centered(rewards.unsqueeze(1).expand(N, K).clone(), 2).to(device)
        policy.train()
        for k in range(K):
            rows = torch.arange(N, device=device) * K + k
            sub = batch.rows(rows)
            tok = token_logprobs(policy, sub)
            logp = step_logprob(tok, sub.target_mask)
            old = step_logprob(sub.old_logprobs, sub.target_mask)
            loss = (clipped_surrogate(logp, old, adv[:, k], 0.2, 0.5) + 0.04 * kl_k3(tok, ref_lp[rows],
                                                                                      sub.target_mask)).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.2)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    update()  # warm-up (optimizer state allocation, backward kernels)
    t_update, _ = timed(device, update)
    result["update_s"] = round(t_update, 3)
    result["iteration_s"] = round(t_merged + t_update, 3)

    full = torch.cat([prompts, torch.full((N, shape["gen_length"]), mask_id, device=device)], 1)

    def bare_forwards(adapter: bool):
        policy.eval()
        with torch.no_grad():
            if adapter:
                for _ in range(shape["steps"]):
                    policy(input_ids=full)
            else:
                with policy.model.disable_adapter():
                    for _ in range(shape["steps"]):
                        policy(input_ids=full)

    result["bare_forwards_s"] = round(timed(device, lambda: bare_forwards(False))[0], 3)
    result["bare_forwards_lora_s"] = round(timed(device, lambda: bare_forwards(True))[0], 3)

    def bare_fwd_bwd():
        policy.train()
        for _ in range(K):
            logits = policy(input_ids=full).logits
            logits[:, -shape["gen_length"]:].float().logsumexp(-1).mean().backward()
        optimizer.zero_grad(set_to_none=True)

    result["bare_fwd_bwd_s"] = round(timed(device, bare_fwd_bwd)[0], 3)
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    del policy, merged, optimizer, rollout
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run_trainer(device: torch.device) -> dict:
    """Two iterations of the real RLTrainer (tiny LoRA model, bf16 on CUDA, rollout_policy auto)."""
    from egspo.models.tiny import build_tiny_model
    from egspo.rl.trainer import RLConfig, RLTrainer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / "model", hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                                 max_len=128, seed=0)
        from egspo.tasks.prepare import build_splits
        from egspo.utils.files import write_jsonl_atomic

        rows = build_splits("countdown", "tiny", 0, n_train=16, n_validation=1, n_test=1, splits=("train",))["train"]
        write_jsonl_atomic(tmp / "train.jsonl", rows)
        cfg = RLConfig(model=str(model), task="countdown", train=str(tmp / "train.jsonl"), out=str(tmp / "rl"),
                       style="tiny", num_generations=4, batch_size=2, max_steps=2, save_every=2, gen_length=32,
                       steps=16, block_length=8, k=4, lam=0.5, lr=1e-4, lora_r=8, lora_alpha=16.0,
                       dtype="bfloat16" if device.type == "cuda" else "float32")
        trainer = RLTrainer(cfg)
        start = time.perf_counter()
        metrics_path = trainer.train()
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
        return {"rollout_policy": trainer.rollout_policy.name, "iterations": len(rows),
                "seconds": round(time.perf_counter() - start, 2),
                "reward_mean": [r["reward_mean"] for r in rows], "loss": [r["loss"] for r in rows]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=tuple(SHAPES), default="llada")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, choices=("bfloat16", "float32"),
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=None,
                        help="override the shape's layer count (e.g. 4 of LLaDA's 32 for a short check; per-layer "
                             "costs scale linearly, the vocabulary projection does not)")
    parser.add_argument("--no-trainer", action="store_true", help="skip the RLTrainer smoke run")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.shape == "llada" and device.type != "cuda":
        parser.error("--shape llada needs a CUDA device (use --shape tiny on CPU)")
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[
        args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    result = {"torch": torch.__version__}
    try:
        import peft
        import transformers

        result.update(transformers=transformers.__version__, peft=peft.__version__)
    except ImportError as exc:
        parser.error(f"missing dependency: {exc}")
    if not args.no_trainer:
        result["trainer"] = run_trainer(device)
        print(json.dumps({"trainer": result["trainer"]}), flush=True)
    shape = dict(SHAPES[args.shape], **({"layers": args.layers} if args.layers else {}))
    result["benchmark"] = run_benchmark(shape, device, dtype, args.seed)
    text = json.dumps(result, indent=2)
    print(text, flush=True)
    b = result["benchmark"]
    print(f"rollout live {b['rollout_live_s']:.2f} s | rollout merged {b['rollout_merged_s']:.2f} s | update "
          f"{b['update_s']:.2f} s | iteration (merged) {b['iteration_s']:.2f} s | T bare forwards "
          f"{b['bare_forwards_s']:.2f} s (LoRA {b['bare_forwards_lora_s']:.2f} s) | K bare fwd+bwd "
          f"{b['bare_fwd_bwd_s']:.2f} s", flush=True)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
