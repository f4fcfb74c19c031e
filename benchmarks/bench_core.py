"""Overhead of the algorithm core over the model's bare compute (not a test).

For each setting, on a ModernBERT masked LM built from its config (4 layers, hidden 128):

* rollout: `egspo.core.sampler.generate` (tau 0.9, low-confidence, greedy fill recorded) vs bare compute = T batched
  no-grad forwards at the same shapes;
* update: re-scoring all B*K selected states = one batched no-grad reference forward over the B*K states plus K
  optimizer steps, each one forward+backward at batch B over the states of that selection index with the clipped
  surrogate + k3 KL (`egspo.core.objective`), vs bare = the same forwards/backwards with ``logits.mean()`` as the loss;
* memory (one subprocess per setting and phase): peak RSS (CPU) or peak allocated (CUDA) of our code in excess of
  the bare computation's peak, next to what keeping full distributions would cost (N*T*L*V float32).

Times are medians over ``--repeats`` after ``--warmup`` runs; ours and bare alternate in the same process.

    .venv/bin/python benchmarks/bench_core.py                     # both settings, CPU
    .venv/bin/python benchmarks/bench_core.py --settings small --threads 1 --repeats 5
    .venv/bin/python benchmarks/bench_core.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from egspo.core.objective import egspo_loss, kl_k3, step_batch, step_logprob, token_logprobs
from egspo.core.sampler import SamplerConfig, generate
from egspo.core.selection import select_steps

SETTINGS = {
    "small": dict(vocab=128, prompt=32, gen=64, steps=32, block=32, batch=16, k=8),
    "large_vocab": dict(vocab=32000, prompt=32, gen=128, steps=64, block=32, batch=8, k=8),
    "smoke": dict(vocab=64, prompt=8, gen=16, steps=8, block=8, batch=4, k=2),  # a quick check that it runs
}
DEFAULT_SETTINGS = ["small", "large_vocab"]
MASK_ID = 1


def build(setting: dict, device: str):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    cfg = ModernBertConfig(
        vocab_size=setting["vocab"], hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=512, pad_token_id=0, mask_token_id=MASK_ID,
        bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
    )
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(cfg).to(device).eval()
    prompts = torch.randint(4, setting["vocab"], (setting["batch"], setting["prompt"]), device=device)
    sampler = SamplerConfig(gen_length=setting["gen"], steps=setting["steps"], block_length=setting["block"],
                            mask_token_id=MASK_ID, temperature=0.9, remasking="low_confidence")
    return model, prompts, sampler


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- the four workloads ----------------------------------------------------------------------------------------


def ours_rollout(model, prompts, sampler, seed=0):
    gen = torch.Generator(device=prompts.device).manual_seed(seed)
    return generate(model, prompts, sampler, generator=gen, record_greedy_fill=True)


@torch.no_grad()
def bare_rollout(model, prompts, sampler):
    x = torch.cat([prompts, torch.full((prompts.shape[0], sampler.gen_length), MASK_ID, device=prompts.device)], 1)
    for _ in range(sampler.steps):
        model(input_ids=x).logits


class UpdateWork:
    """Fixed inputs of one update: the selected states of a rollout, advantages, the reference model."""

    def __init__(self, model, prompts, sampler, k: int):
        rollout = ours_rollout(model, prompts, sampler)
        self.B, self.K = len(rollout), k
        selection = select_steps(rollout.step_entropy, k, "entropy")
        self.batch = step_batch(rollout, selection.steps)  # row n*K + k
        self.per_index = [self.batch.rows(torch.arange(self.B) * k + i) for i in range(k)]
        self.adv = torch.randn(self.B, k, generator=torch.Generator().manual_seed(1)).to(prompts.device)
        self.ref = copy.deepcopy(model).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)


def ours_update(model, work: UpdateWork, opt):
    with torch.no_grad():
        ref_lp = token_logprobs(work.ref, work.batch)  # one batched forward over all B*K states
    for i, sub in enumerate(work.per_index):
        lp = token_logprobs(model, sub)
        logp = step_logprob(lp, sub.target_mask)
        old = step_logprob(sub.old_logprobs, sub.target_mask)
        ref_sub = ref_lp[torch.arange(work.B, device=ref_lp.device) * work.K + i]
        loss = egspo_loss(logp, old, work.adv[:, i], kl_k3(lp, ref_sub, sub.target_mask), beta=0.04)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def bare_update(model, work: UpdateWork, opt):
    with torch.no_grad():
        work.ref(input_ids=work.batch.input_ids).logits
    for sub in work.per_index:
        loss = model(input_ids=sub.input_ids).logits.float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# ---- timing --------------------------------------------------------------------------------------------------------


def median_times(fns: dict, repeats: int, warmup: int, device: str) -> dict:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():  # alternate, so drifting machine load hits both alike
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def time_setting(name: str, setting: dict, args) -> dict:
    model, prompts, sampler = build(setting, args.device)
    rollout_t = median_times(
        {"ours": lambda: ours_rollout(model, prompts, sampler), "bare": lambda: bare_rollout(model, prompts, sampler)},
        args.repeats, args.warmup, args.device,
    )
    work = UpdateWork(model, prompts, sampler, setting["k"])
    model.train(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    update_t = median_times(
        {"ours": lambda: ours_update(model, work, opt), "bare": lambda: bare_update(model, work, opt)},
        args.repeats, args.warmup, args.device,
    )
    return {
        "rollout_s": rollout_t["ours"], "rollout_bare_s": rollout_t["bare"],
        "rollout_ratio": rollout_t["ours"] / rollout_t["bare"],
        "update_s": update_t["ours"], "update_bare_s": update_t["bare"],
        "update_ratio": update_t["ours"] / update_t["bare"],
    }


# ---- memory (one subprocess per setting and phase) ----------------------------------------------------------------


def peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def memory_worker(name: str, phase: str, device: str) -> dict:
    """Peak of the bare computation, then the peak after our code; the difference is what ours adds."""
    setting = SETTINGS[name]
    model, prompts, sampler = build(setting, device)
    if phase == "rollout":
        bare_rollout(model, prompts, sampler)
        sync(device)
        bare_peak = peak_bytes(device)
        ours_rollout(model, prompts, sampler)
    else:
        work = UpdateWork(model, prompts, sampler, setting["k"])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
        bare_update(model, work, opt)
        sync(device)
        bare_peak = peak_bytes(device)
        ours_update(model, work, opt)
    sync(device)
    ours_peak = peak_bytes(device)
    return {"bare_peak_mb": bare_peak / 2**20, "ours_peak_mb": ours_peak / 2**20,
            "excess_mb": max(0, ours_peak - bare_peak) / 2**20}


def memory_setting(name: str, args) -> dict:
    out = {}
    for phase in ("rollout", "update"):
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-worker", name, phase, "--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[phase] = json.loads(res.stdout.strip().splitlines()[-1])
    s = SETTINGS[name]
    out["full_distributions_mb"] = s["batch"] * s["steps"] * s["gen"] * s["vocab"] * 4 / 2**20
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--memory-worker", nargs=2, metavar=("SETTING", "PHASE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(memory_worker(*args.memory_worker, args.device)))
        return 0
    results = {}
    for name in args.settings:
        s = SETTINGS[name]
        print(f"== {name}: {s} | device {args.device}, threads {torch.get_num_threads()}", flush=True)
        r = time_setting(name, s, args)
        print(f"rollout: ours {r['rollout_s']:.3f}s  bare {r['rollout_bare_s']:.3f}s  ratio {r['rollout_ratio']:.3f}")
        print(f"update : ours {r['update_s']:.3f}s  bare {r['update_bare_s']:.3f}s  ratio {r['update_ratio']:.3f}",
              flush=True)
        if not args.no_memory:
            mem = memory_setting(name, args)
            r["memory"] = mem
            for phase in ("rollout", "update"):
                m = mem[phase]
                print(f"memory {phase}: bare peak {m['bare_peak_mb']:.0f} MiB, ours peak {m['ours_peak_mb']:.0f} MiB, "
                      f"excess {m['excess_mb']:.1f} MiB")
            print(f"(keeping full distributions would take {mem['full_distributions_mb']:.0f} MiB)", flush=True)
        results[name] = r
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(results, fh, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
