"""Device check of `egspo rl` (CUDA when torch sees one, else CPU): every algorithm in float32 and in bfloat16 with
LoRA, 4 iterations straight vs 2 + resume + 2 (largest parameter difference printed: 0 means bit-identical), and the
seconds per iteration at the tiny preset's shape (prompts 8 x G 8, L 32, T 16, block 8, K = mu = 4).

    .venv/bin/python scripts/rl_device_check.py        # exit status 1 if a resumed run diverges beyond 1e-3
"""

from __future__ import annotations

import importlib
import json
import statistics
import sys
import tempfile
from pathlib import Path


def digits_task():
    """Sudoku's tiny prompts with a dense reward (share of digits in the completion): an untrained model already
    gets varied rewards, so the policy-gradient path is exercised (the real graders give an untrained model 0)."""
    from egspo.tasks.sudoku import SudokuTask

    class Digits(SudokuTask):
        name = "digits"

        def reward(self, completion, row):
            return sum(ch.isdigit() for ch in completion) / max(len(completion), 1)

    return Digits()


DIGITS = None


def main() -> int:
    global DIGITS
    import torch
    from safetensors.torch import load_file

    import egspo.tasks as registry

    DIGITS = digits_task()
    registry._REGISTRY["digits"] = f"{__name__}:DIGITS"
    importlib.import_module(__name__)

    from egspo.models.tiny import build_tiny_model
    from egspo.tasks.sudoku import generate_tiny
    from egspo.rl.trainer import RLConfig, RLTrainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device} {torch.cuda.get_device_name() if device == 'cuda' else ''}, torch {torch.__version__}")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_model(tmp / "model", hidden_size=128, num_layers=4, num_heads=4, intermediate_size=256,
                                 max_len=128, seed=0)
        train = tmp / "train.jsonl"
        rows = generate_tiny(seed=0, n_train=64, n_validation=0, n_test=0)["train"]
        train.write_text("".join(json.dumps(r) + "\n" for r in rows))
        methods = {"diffu_grpo": {"algorithm": "diffu_grpo"},
                   "egspo": {"algorithm": "egspo", "lam": 0.0, "baseline": "none"},
                   "egspo_sa": {"algorithm": "egspo", "lam": 0.5}}
        precisions = {"fp32": {}, "bf16_lora": {"dtype": "bfloat16", "lora_r": 16, "lora_alpha": 32.0,
                                                "lora_dropout": 0.0}}
        for name, method in methods.items():
            for prec, extra in precisions.items():
                common = dict(model=str(model), task="digits", train=str(train), style="tiny", num_generations=8,
                              batch_size=8, save_every=2, k=4, mu=4, gen_length=32, steps=16, block_length=8,
                              lr=1e-4, **method, **extra)
                straight, split = tmp / f"{name}_{prec}_a", tmp / f"{name}_{prec}_b"
                RLTrainer(RLConfig(out=str(straight), max_steps=4, **common)).train()
                RLTrainer(RLConfig(out=str(split), max_steps=2, **common)).train()
                RLTrainer(RLConfig(out=str(split), max_steps=4, **common)).train()
                fname = "adapter_model.safetensors" if "lora_r" in extra else "model.safetensors"
                a = load_file(straight / "checkpoints" / "step_4" / fname)
                b = load_file(split / "checkpoints" / "step_4" / fname)
                diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
                metrics = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()][1:]
                per_it = statistics.mean(m["time_rollout_s"] + m["time_update_s"] for m in metrics)
                roll = statistics.mean(m["time_rollout_s"] for m in metrics)
                last = metrics[-1]
                print(f"{name:>10} {prec:>9}: resume max|diff| {diff:.3g}; {per_it:.3f} s/iteration "
                      f"(rollout {roll:.3f} s); reward {last['reward_mean']:.3f} kl {last['kl']:.2e} "
                      f"grad_norm {last['grad_norm']:.3g}", flush=True)
                failed |= diff > 1e-3
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
