"""What the numerics pin (egspo.utils.numerics) costs: SFT steps and RL iterations of the tiny preset, pinned vs the
machine's native kernels, in one run.

Each repeat starts one fresh process per mode (the kernel variables act only before torch is imported), alternating
pinned / native, at the same thread count (the workflow gives every tiny-preset job `threads: 1`), so the ratio
measures the kernels (PyTorch's ATEN_CPU_CAPABILITY, MKL's code path and strict mode, oneDNN's ISA) and
torch.use_deterministic_algorithms. Each process builds the tiny model and data untimed, then times `egspo sft`
(the tiny preset's model, batch 64, L 32) and `egspo rl` (EGSPO-SA, G 8, 4 prompts, K 4, L 32, T 16) through the CLI.

    .venv/bin/python benchmarks/bench_pinning.py                   # 3 repeats, 20 SFT steps, 3 RL iterations
    .venv/bin/python benchmarks/bench_pinning.py --repeats 1 --sft-steps 5 --rl-steps 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = ["--hidden-size", "128", "--num-layers", "2", "--num-heads", "4", "--intermediate-size", "256",
         "--max-len", "128", "--seed", "0"]
PIN_VARIABLES = ("EGSPO_NUMERICS", "ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
                 "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def child(work: Path, sft_steps: int, rl_steps: int) -> dict:
    """Run in a fresh process: untimed set-up, then timed SFT and RL; returns seconds and the kernel set used."""
    from egspo import cli

    def egspo(*args: str) -> float:
        start = time.perf_counter()
        if cli.main(list(args)):
            raise RuntimeError(f"egspo {' '.join(args)} failed")
        return time.perf_counter() - start

    data, init, sft, rl = (str(work / name) for name in ("data", "init", "sft", "rl"))
    egspo("data", "--task", "sudoku", "--source", "tiny", "--out-dir", data, "--seed", "0", "--n-train", "256",
          "--n-validation", "8", "--n-test", "8")
    egspo("build-model", "--out", init, *MODEL)
    sft_s = egspo("sft", "--model", init, "--task", "sudoku", "--train", f"{data}/train.jsonl", "--out", sft,
                  "--gen-length", "32", "--max-steps", str(sft_steps), "--batch-size", "64", "--lr", "1e-3",
                  "--style", "tiny", "--no-progress")
    rl_s = egspo("rl", "--model", sft, "--task", "sudoku", "--train", f"{data}/train.jsonl", "--out", rl,
                 "--style", "tiny", "--algorithm", "egspo", "--lam", "0.5", "--num-generations", "8",
                 "--batch-size", "4", "--k", "4", "--max-steps", str(rl_steps), "--save-every", str(rl_steps),
                 "--gen-length", "32", "--steps", "16", "--block-length", "8")
    import torch
    return {"sft_s": sft_s, "rl_s": rl_s, "aten": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}


def measure(mode: str, threads: int, sft_steps: int, rl_steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PIN_VARIABLES}
    env.update(EGSPO_NUMERICS=mode, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="egspo-bench-pin-") as tmp:
        done = subprocess.run([sys.executable, __file__, "--child", tmp, "--sft-steps", str(sft_steps),
                               "--rl-steps", str(rl_steps)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--rl-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads of both modes (tiny-preset jobs: 1)")
    parser.add_argument("--json", type=Path, help="also write the runs and medians here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.sft_steps, args.rl_steps)))
        return 0
    runs = {"pinned": [], "native": []}
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(measure(mode, args.threads, args.sft_steps, args.rl_steps))
    from egspo.utils.numerics import processor_name
    print(f"processor: {processor_name()}; threads {args.threads}; {args.repeats} repeats (medians)")
    print(f"kernels: pinned {runs['pinned'][0]['aten']}, native {runs['native'][0]['aten']}")
    summary = {}
    for stage, steps, unit in (("sft_s", args.sft_steps, "SFT step"), ("rl_s", args.rl_steps, "RL iteration")):
        pinned = statistics.median(r[stage] for r in runs["pinned"]) / steps
        native = statistics.median(r[stage] for r in runs["native"]) / steps
        summary[stage] = {"pinned_per_step": pinned, "native_per_step": native, "ratio": pinned / native}
        print(f"{unit:13s} pinned {pinned * 1e3:8.1f} ms  native {native * 1e3:8.1f} ms  ratio {pinned / native:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
