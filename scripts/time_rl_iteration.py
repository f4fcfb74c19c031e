"""Seconds per `egspo rl` iteration of each method on the tiny preset's shape (CPU or GPU, whatever torch sees).

Builds a randomly initialised tiny ModernBERT (hidden 128, 4 layers) and tiny Sudoku prompts in a temporary
directory, then runs a few iterations per method (prompts 8 x G 8, L 32, T 16, block 8, K = mu = 4) and prints the
mean rollout / update / total seconds per iteration (the first iteration is a warm-up and not counted).

    .venv/bin/python scripts/time_rl_iteration.py [--iterations 3] [--methods egspo egspo_sa diffu_grpo]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

METHODS = {
    "diffu_grpo": {"algorithm": "diffu_grpo"},
    "egspo": {"algorithm": "egspo", "lam": 0.0, "baseline": "none"},
    "egspo_sa": {"algorithm": "egspo", "lam": 0.5, "baseline": "greedy"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per method (after 1 warm-up)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=4)
    args = parser.parse_args()

    import torch

    from egspo.models.tiny import build_tiny_model
    from egspo.tasks.sudoku import generate_tiny
    from egspo.rl.trainer import RLConfig, RLTrainer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / "model", hidden_size=args.hidden_size, num_layers=args.num_layers,
                                 num_heads=4, intermediate_size=2 * args.hidden_size, max_len=128, seed=0)
        train = tmp / "train.jsonl"
        rows = generate_tiny(seed=0, n_train=64, n_validation=0, n_test=0)["train"]
        train.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
              f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
        for name in args.methods:
            cfg = RLConfig(model=str(model), task="sudoku", train=str(train), out=str(tmp / name), style="tiny",
                           num_generations=8, batch_size=8, max_steps=args.iterations + 1,
                           save_every=10**6, k=4, mu=4, gen_length=32, steps=16, block_length=8, lr=1e-4,
                           **METHODS[name])
            RLTrainer(cfg).train()
            metrics = [json.loads(x) for x in (tmp / name / "metrics.jsonl").read_text().splitlines()][1:]
            roll = statistics.mean(m["time_rollout_s"] for m in metrics)
            upd = statistics.mean(m["time_update_s"] for m in metrics)
            print(f"{name:>10}: rollout {roll:.2f} s + update {upd:.2f} s = {roll + upd:.2f} s per iteration "
                  f"(mean of {len(metrics)})")


if __name__ == "__main__":
    main()
