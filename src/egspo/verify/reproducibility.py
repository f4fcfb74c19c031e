"""A short data -> build-model -> SFT -> RL -> eval chain whose output hashes prove bit-identical results.

The chain runs the tiny preset's commands (`egspo data`, `build-model`, `sft`, `rl`, `eval`) at a micro size in one
process, pinned by egspo.utils.numerics before torch is imported, and hashes (sha256) what each stage writes: the
weights (model.safetensors), the data rows, the RL metrics without their wall-clock fields, the eval completions
and metrics. tests/data/chain_hashes.json holds the hashes of the committed code on the reference machine.

    python -m egspo.verify.reproducibility --update          # regenerate tests/data/chain_hashes.json
    python -m egspo.verify.reproducibility --check           # run the chain, compare, exit 1 on a difference
    python -m egspo.verify.reproducibility --print --work D  # print this run's hashes (keeps the files in D)

Set EGSPO_NUMERICS=native (and e.g. ATEN_CPU_CAPABILITY=default) to run it on the processor's own kernels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

# Only the standard library and egspo.utils.numerics at import: the pin must come before torch.
from egspo.utils import numerics

HASHES = Path(__file__).resolve().parents[3] / "tests" / "data" / "chain_hashes.json"
REGENERATE = "python -m egspo.verify.reproducibility --update"
# fields of a metrics row that measure time, not numerics: these names, and names ending in "_s" (seconds)
TIME_FIELDS = frozenset({"seconds", "elapsed", "timestamp", "wall_time", "duration"})

MODEL = ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--intermediate-size", "64",
         "--max-len", "64", "--seed", "0"]
GENERATION = ["--gen-length", "24"]


def chain_commands(work: Path) -> list[list[str]]:
    """The chain's `egspo` command lines (micro size: about half a minute on one CPU thread)."""
    data, init, sft, rl, ev = (work / name for name in ("data", "init", "sft", "rl", "eval"))
    return [
        ["data", "--task", "sudoku", "--source", "tiny", "--out-dir", str(data), "--seed", "0",
         "--n-train", "32", "--n-validation", "4", "--n-test", "8"],
        ["build-model", "--out", str(init), *MODEL],
        ["sft", "--model", str(init), "--task", "sudoku", "--train", str(data / "train.jsonl"), "--out", str(sft),
         *GENERATION, "--max-steps", "30", "--batch-size", "8", "--lr", "3e-3", "--seed", "0", "--style", "tiny",
         "--no-progress"],
        ["rl", "--model", str(sft), "--task", "sudoku", "--train", str(data / "train.jsonl"), "--out", str(rl),
         "--seed", "0", "--style", "tiny", "--algorithm", "egspo", "--lam", "0.5", "--num-generations", "4",
         "--batch-size", "2", "--k", "2", "--max-steps", "2", "--save-every", "2", "--lr", "1e-3",
         *GENERATION, "--steps", "12", "--block-length", "8"],
        ["eval", "--task", "sudoku", "--model", f"rl={rl / 'checkpoints' / 'step_2'}",
         "--data", f"test={data / 'test.jsonl'}", *GENERATION, "--steps", "12", "--block-length", "8",
         "--out-dir", str(ev), "--style", "tiny"],
    ]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_time_field(key: str) -> bool:
    key = key.lower()
    return key in TIME_FIELDS or key.endswith("_s") or key.startswith("time_")


def numeric_rows(path: Path, work: Path) -> bytes:
    """A JSONL / JSON file's content as canonical JSON bytes, without its wall-clock fields and with the run
    directory ``work`` in path strings replaced by "<work>"."""
    from egspo.utils.files import iter_jsonl_objects

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in sorted(value.items()) if not is_time_field(k)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, str):
            return value.replace(str(work), "<work>")
        return value

    if path.suffix == ".jsonl":
        rows = [strip(row) for _, row in iter_jsonl_objects(path)]
    else:
        rows = strip(json.loads(path.read_text()))
    return json.dumps(rows, sort_keys=True).encode()


def output_hashes(work: Path) -> dict[str, str]:
    """sha256 of every output that the numerics decide, keyed by its path relative to ``work``."""
    chosen = {}
    for path in sorted(work.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(work).as_posix()
        if path.name.endswith(".safetensors") or (rel.startswith("data/") and path.suffix == ".jsonl"):
            chosen[rel] = sha256(path.read_bytes())
        elif rel.startswith("eval/") and path.suffix in (".jsonl", ".json"):
            chosen[rel] = sha256(numeric_rows(path, work))
        elif rel.startswith("rl/") and path.name == "metrics.jsonl":
            chosen[rel] = sha256(numeric_rows(path, work))
    for stage in ("data/", "init/", "sft/", "rl/", "eval/"):
        if not any(key.startswith(stage) for key in chosen):
            raise RuntimeError(f"the chain's {stage.rstrip('/')} stage wrote none of the hashed files under {work}")
    return chosen


def run_chain(work: Path) -> dict[str, str]:
    """Run the chain into ``work`` (pinned unless EGSPO_NUMERICS=native) and return its output hashes."""
    from egspo import cli

    for command in chain_commands(work):
        code = cli.main(command)
        if code:
            raise RuntimeError(f"`egspo {' '.join(command)}` exited with {code}")
    return output_hashes(work)


def differences(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """One line per output whose hash differs, is missing, or is new."""
    lines = []
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) != actual.get(key):
            lines.append(f"{key}: committed {expected.get(key, 'absent')[:12]}, this run {actual.get(key, 'absent')[:12]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m egspo.verify.reproducibility", description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--update", action="store_true", help=f"write the hashes to {HASHES}")
    what.add_argument("--check", action="store_true", help="compare with the committed hashes (exit 1 if different)")
    what.add_argument("--print", action="store_true", help="print this run's hashes as JSON")
    parser.add_argument("--work", type=Path, help="run directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args(argv)
    numerics.pin_environment()  # before run_chain imports torch

    with tempfile.TemporaryDirectory(prefix="egspo-chain-") as tmp:
        work = args.work or Path(tmp)
        hashes = run_chain(work)
    if args.print:
        print(json.dumps(hashes, indent=1, sort_keys=True))
        return 0
    if args.update:
        from egspo.utils.files import atomic_write_text

        if numerics.mode() != "pinned" or not numerics.pin_supported()[0]:
            print("refusing to write hashes made without the pin (EGSPO_NUMERICS=native or no AVX2)", file=sys.stderr)
            return 1
        HASHES.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(HASHES, json.dumps(hashes, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(hashes)} hashes to {HASHES}")
        return 0
    expected = json.loads(HASHES.read_text())
    lines = differences(expected, hashes)
    print("\n".join(lines) or f"all {len(hashes)} hashes match {HASHES}")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
