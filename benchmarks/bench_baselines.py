"""Seconds per RL iteration of every method of the tiny preset's main comparison, in one process (not a test).

One `RLTrainer` per method is built from the tiny preset's model shape and `rl` block (G 8, 4 prompts, L 32, T 16,
B 8, K = mu = 4; wd1 / SPG with beta 0 as in config.yaml) on the tiny Sudoku prompts; after ``--warmup`` iterations
each, the methods take turns, one iteration at a time, for ``--repeats`` rounds, so machine load drifts hit all
alike. Reported: median seconds per iteration (total, rollout = until the advantages are known, update = the rest)
and the ratio of each total to EGSPO-SA's.

    .venv/bin/python benchmarks/bench_baselines.py                        # CPU, 1 warm-up, 5 rounds
    .venv/bin/python benchmarks/bench_baselines.py --threads 4 --repeats 9 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# name -> overrides of the tiny preset's rl block (config.yaml methods, same values)
METHODS = {
    "diffu_grpo": dict(algorithm="diffu_grpo"),
    "wd1": dict(algorithm="wd1", beta=0.0),
    "spg": dict(algorithm="spg", beta=0.0, spg_variant="mix", spg_beta=1.0, spg_num_t=2, spg_masking="block_random"),
    "egspo": dict(algorithm="egspo", lam=0.0, baseline="none"),
    "egspo_sa": dict(algorithm="egspo", lam=0.5),
}
RL = dict(num_generations=8, batch_size=4, lr=3e-5, k=4, mu=4, beta=0.04, temperature=0.9, gen_length=32, steps=16,
          block_length=8, max_steps=10_000, save_every=10_000, style="tiny", task="sudoku")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from egspo.models.tiny import build_tiny_model
    from egspo.rl.config import RLConfig
    from egspo.rl.trainer import RLTrainer
    from egspo.tasks.prepare import build_splits

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", hidden_size=128, num_layers=2, num_heads=4, intermediate_size=256,
                                 max_len=128, seed=0)
        rows = build_splits("sudoku", "tiny", seed=0, n_train=64, splits=("train",))["train"]
        train = root / "train.jsonl"
        train.write_text("".join(json.dumps(r) + "\n" for r in rows))
        trainers = {name: RLTrainer(RLConfig(model=str(model), train=str(train), out=str(root / name), seed=0,
                                             **{**RL, **extra}))
                    for name, extra in METHODS.items()}
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in METHODS}
        for round_ in range(args.warmup + args.repeats):
            for name, trainer in trainers.items():
                batch = trainer.order.next_batch(trainer.cfg.batch_size)
                start = time.perf_counter()
                result = trainer.run_iteration(batch)
                total = time.perf_counter() - start
                if round_ >= args.warmup:
                    times[name].append((total, float(result.metrics["time_rollout_s"])))
    ref = statistics.median(t for t, _ in times["egspo_sa"])
    out = []
    print(f"{'method':<12} {'s/iter':>8} {'rollout':>8} {'update':>8} {'x EGSPO-SA':>11}")
    for name, rows_ in times.items():
        total = statistics.median(t for t, _ in rows_)
        rollout = statistics.median(r for _, r in rows_)
        update = statistics.median(t - r for t, r in rows_)
        out.append({"method": name, "s_per_iter": total, "rollout_s": rollout, "update_s": update,
                    "ratio_to_egspo_sa": total / ref})
        print(f"{name:<12} {total:8.3f} {rollout:8.3f} {update:8.3f} {total / ref:11.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": torch.get_num_threads(), "repeats": args.repeats,
                                               "results": out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
