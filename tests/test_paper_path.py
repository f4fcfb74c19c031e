"""The paper preset without GPUs or the hub.

1. `snakemake -n --profile profiles/slurm --config preset=paper` plans the whole paper DAG (6 evaluated tasks, the
   KodCode code run shared by HumanEval and MBPP, every checkpoint x 3 lengths) with sbatch resources per rule,
   without torch being importable (nothing imports it at parse time) and without running any job.
2. The paper code path on CPU, through the real loaders and CLI commands: `egspo data` from a local file in the
   original GSM8K schema, `egspo rl` with LoRA (reference = adapter disabled) and the d1 prompt style, `egspo merge`
   of the adapter checkpoint, `egspo eval` of the merged directory. Only the model path and the data source differ
   from a real run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAPER = yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["paper"]
RL_METHODS = [m for m in PAPER["compare"] if m != "base"]


def method_settings(method: str) -> dict:
    """The paper preset's RL settings of `method`: the shared `rl` block under the method's own entry."""
    return {**PAPER["rl"], **PAPER["methods"][method]}
TRAIN_TASKS = {t: PAPER["train_tasks"].get(t, t) for t in PAPER["tasks"]}
EVAL_SPLITS = {t: [s for s in PAPER["eval"]["splits"] if not (t == "humaneval" and s != "test")]
               for t in PAPER["tasks"]}


def dry_run(tmp_path: Path, *config: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Dry run of the paper preset through the Slurm profile; torch is made unimportable for the Snakemake process."""
    blocker = tmp_path / "no_torch"
    (blocker / "torch").mkdir(parents=True, exist_ok=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch imported at DAG time')\n")
    # the profile's own defaults (no EGSPO_SLURM_* variable of the caller leaks in): GPU counts from config.yaml
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("EGSPO_SLURM_")}, "PYTHONPATH": str(blocker),
           "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n", "-p",
           "--profile", str(REPO / "profiles" / "slurm"), "--config", "preset=paper", *config]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    res.output = res.stdout + res.stderr
    return res


def jobs(output: str) -> list[dict]:
    """Each planned job of a dry run: rule, output files, resources, shell command."""
    out = []
    for chunk in re.split(r"\n\[[^\]]+\]\n", output)[1:]:
        m = re.match(r"(?:local)?rule (\w+):", chunk.strip())
        if not m:
            continue
        job = {"rule": m.group(1), "outputs": [], "resources": {}, "shell": ""}
        for line in chunk.splitlines():
            line = line.strip()
            if line.startswith("output:"):
                job["outputs"] = [p.strip() for p in line[len("output:"):].split(",")]
            elif line.startswith("resources:"):
                job["resources"] = dict(kv.strip().split("=", 1) for kv in line[len("resources:"):].split(", "))
            elif line.startswith("Shell command:"):
                job["shell"] = line[len("Shell command:"):].strip()
        out.append(job)
    return out


@pytest.fixture(scope="module")
def paper_dag(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper_dag")
    res = dry_run(tmp)
    assert res.returncode == 0, res.output[-4000:]
    assert not (tmp / "work").exists()  # no job ran (the data rule never runs at DAG time)
    return jobs(res.output)


def test_paper_dag_has_every_run_and_evaluation(paper_dag):
    counts = Counter(j["rule"] for j in paper_dag)
    rl_tasks = sorted(set(TRAIN_TASKS.values()))
    assert rl_tasks == ["countdown", "gsm8k", "kodcode", "math500", "sudoku"]
    assert RL_METHODS == ["diffu_grpo", "wd1", "spg", "egspo", "egspo_sa"]
    assert counts["rl"] == len(rl_tasks) * len(RL_METHODS) * len(PAPER["seeds"]) == 25
    assert counts["data"] == 5 and "sft" not in counts and "build_model" not in counts
    rl_outputs = {o for j in paper_dag if j["rule"] == "rl" for o in j["outputs"]}
    assert "work/paper/rl/kodcode/egspo_sa/seed0/checkpoints/step_4000" in rl_outputs
    assert not any("/rl/humaneval/" in o or "/rl/mbpp/" in o for o in rl_outputs)
    split_jobs = {o for j in paper_dag if j["rule"] == "data_split" for o in j["outputs"]}
    assert {"work/paper/data/humaneval/test.jsonl", "work/paper/data/kodcode/train.jsonl"} <= split_jobs
    # every evaluation of the grid is planned: 6 tasks x (base + 5 methods x last 20 checkpoints) x 3 lengths x splits
    declared = {o for j in paper_dag for o in j["outputs"] if o.endswith(".metrics.json")}
    n_ckpt = PAPER["eval"]["last_checkpoints"]
    expected = set()
    for task in PAPER["tasks"]:
        every = PAPER["rl"]["save_every"]  # 50 iterations = the authors' 200 optimizer steps
        runs = [("base", "base")] + [(m, f"step_{s}") for m in RL_METHODS
                                     for s in range(4000 - every * (n_ckpt - 1), 4001, every)]
        for method, ckpt in runs:
            for length in (128, 256, 512):
                for split in EVAL_SPLITS[task]:
                    expected.add(f"work/paper/eval/{task}/{method}/seed0/{ckpt}/len{length}/{split}.metrics.json")
    assert len(expected) == (5 * 2 + 1) * (1 + 5 * 20) * 3 == 3333
    assert expected <= declared
    assert {"report_main", "report_curves", "report_fig2", "report_gradcheck", "all"} <= set(counts)
    # the report reads exactly the planned files: HumanEval's test only; curves from the RL runs (kodcode)
    (main,) = [j for j in paper_dag if j["rule"] == "report_main"]
    assert "--splits validation test" in main["shell"] and "--task-splits humaneval=test " in main["shell"]
    (curves,) = [j for j in paper_dag if j["rule"] == "report_curves"]
    assert f"--tasks {' '.join(dict.fromkeys(TRAIN_TASKS.values()))} --methods" in curves["shell"]


def test_paper_jobs_carry_sbatch_resources_and_launch_commands(paper_dag):
    rl = [j for j in paper_dag if j["rule"] == "rl"]
    for job in rl:
        res = job["resources"]
        assert res["gpu"] == "2" and int(res["mem_mb"]) >= 64000 and int(res["runtime"]) >= 60
        assert "cpus_per_gpu" in res
        cmd = job["shell"]
        assert cmd.startswith("export OMP_NUM_THREADS=")
        assert "-m accelerate.commands.launch --config_file" in cmd and "configs/accelerate/ddp.yaml" in cmd
        assert "--num_processes 2 --num_machines 1" in cmd and "-m egspo.cli rl --model GSAI-ML/LLaDA-8B-Instruct" in cmd
        # the authors' recipe (docs/fidelity.md): 6 prompts x G 8 (d1's baseline: 12; wd1 8 and SPG 16 prompts x
        # G 6 at lr 3e-6, their papers' settings), checkpoints every 50 iterations = 200 optimizer steps, NF4 4-bit,
        # their LoRA target list, prompts cut to 200 tokens
        method = job["outputs"][0].split("/")[4]
        settings = method_settings(method)
        expected_batch = {"diffu_grpo": 12, "wd1": 8, "spg": 16}.get(method, 6)
        expected_lr = "3e-06" if method in ("wd1", "spg") else "3e-05"
        assert settings["batch_size"] == expected_batch and str(settings["lr"]) == expected_lr
        for flag in ("--dtype bfloat16", "--trust-remote-code", "--lora-r 128", "--lora-alpha 64",
                     "--lora-dropout 0.05", f"--batch-size {expected_batch}", "--micro-batch 6", "--gen-length 256",
                     "--fidelity authors", "--steps 128", "--block-length 32", "--save-every 50", "--style d1",
                     f"--lr {expected_lr}",
                     "--load-in-4bit", "--max-prompt-length 200",
                     "--lora-targets q_proj,k_proj,v_proj,o_proj,up_proj,down_proj,gate_proj"):
            assert flag in cmd, (flag, cmd)
        assert "${SLURM_JOB_ID:-0}" in cmd  # defaulted under `set -u`
        subprocess.run(["bash", "-n", "-c", cmd], check=True)
    code = [j for j in rl if "/rl/kodcode/" in j["outputs"][0]]
    assert len(code) == len(RL_METHODS) and all("--task kodcode --train work/paper/data/kodcode/train.jsonl" in j["shell"]
                                  for j in code)
    # one source for the GPU count: the profile sets none, config.yaml's resources.rl.gpu applies; host memory
    # follows it (--mem-per-cpu x cpus_per_gpu x gpu) and equals the config's mem_mb for the rl rule
    rl_res = PAPER["resources"]["rl"]
    for job in rl:
        res = job["resources"]
        method = job["outputs"][0].split("/")[4]
        assert int(res["gpu"]) == rl_res["gpu"] and method_settings(method)["batch_size"] % rl_res["gpu"] == 0
        assert int(res["mem_mb_per_cpu"]) * int(res["cpus_per_gpu"]) * int(res["gpu"]) == rl_res["mem_mb"]
    evals = [j for j in paper_dag if j["rule"].startswith("eval")]
    # one job per checkpoint (eval.checkpoints_per_job: 1): eval_part1..20 (+ _test for HumanEval) and eval_start
    n_ckpt = PAPER["eval"]["last_checkpoints"]
    parts = {f"eval_part{i}{s}" for i in range(1, n_ckpt + 1) for s in ("", "_test")}
    assert {j["rule"] for j in evals} == parts | {"eval_start", "eval_start_test"}
    rl_evals = [j for j in evals if j["rule"] != "eval_start" and j["rule"] != "eval_start_test"]
    assert len(rl_evals) == len(PAPER["tasks"]) * len(RL_METHODS) * n_ckpt
    for job in rl_evals:
        assert job["shell"].count("--model ") == 1, job["shell"]
    # every generated eval rule gets the profile's `eval` entry
    for job in evals:
        res = job["resources"]
        assert res["gpu"] == "1" and res["cpus_per_gpu"] == "8" and res["mem_mb_per_cpu"] == "8000", job["rule"]
        assert res["runtime"] == "360" and "cpus_per_task" not in res, job["rule"]
    data = [j for j in paper_dag if j["rule"] in ("data", "data_split")]
    assert all(j["resources"]["gpu"] == "0" and j["shell"].startswith("export OMP_NUM_THREADS=") for j in data)
    # data_split has the profile's resources of data
    assert {j["rule"] for j in data} == {"data", "data_split"}
    assert {(j["resources"]["mem_mb"], j["resources"]["runtime"], j["resources"]["cpus_per_task"])
            for j in data} == {("16000", "30", "4")}


def test_gpu_count_must_divide_the_prompt_batch(tmp_path):
    res = dry_run(tmp_path, env_extra={"EGSPO_SLURM_TRAIN_GPUS": "8"})
    assert res.returncode != 0
    assert re.search(r"rl batch_size (6|8|12|16) \(prompts per iteration\) is not divisible by the 8 processes",
                     res.output)


def test_multi_node_launch_goes_through_srun(tmp_path):
    res = dry_run(tmp_path, "resources={rl: {nodes: 2}}", "tasks=[sudoku]",
                  env_extra={"EGSPO_SLURM_TRAIN_GPUS": "1"})
    assert res.returncode == 0, res.output[-3000:]
    rl = [j for j in jobs(res.output) if j["rule"] == "rl"]
    assert len(rl) == len(RL_METHODS)
    cmd = rl[0]["shell"]
    # 2 processes divide every method's batch (6, 8, 12, 16)
    assert rl[0]["resources"]["nodes"] == "2" and rl[0]["resources"]["gpu"] == "1"
    assert "srun --nodes=2 --ntasks-per-node=1" in cmd and "--num_processes 2 --num_machines 2" in cmd
    assert "--machine_rank $SLURM_NODEID" in cmd and "SLURM_JOB_NODELIST:?" in cmd
    subprocess.run(["bash", "-n", "-c", cmd], check=True)


def test_partial_split_table_matches_the_loaders():
    """The workflow's PARTIAL_SPLITS (humaneval: test; kodcode: train, validation) agree with the task loaders."""
    from egspo.tasks import get_task

    with pytest.raises(ValueError, match="only a 'test' split"):
        get_task("humaneval").load("validation", "hub")
    with pytest.raises(ValueError, match="only a 'test' split"):
        get_task("humaneval").load("train", "hub")
    with pytest.raises(ValueError, match="no test split"):
        get_task("kodcode").load("test", "hub")
    from egspo.workflow.plan import PARTIAL_SPLITS

    assert PARTIAL_SPLITS == {"humaneval": ("test",), "kodcode": ("train", "validation")}


# ---- the paper code path on CPU -----------------------------------------------------------------------------------


def egspo(*args: str, env=None) -> str:
    res = subprocess.run([str(BIN / "egspo"), *args], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})})
    assert res.returncode == 0, f"egspo {' '.join(map(shlex.quote, args))}\n{res.stdout[-2000:]}{res.stderr[-3000:]}"
    return res.stdout


GSM8K_ROWS = [  # the original openai/gsm8k schema: question, answer with '#### N'
    {"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
     "answer": f"Tom has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"}
    for a, b in [(2, 3), (4, 1), (5, 5), (7, 2), (1, 8), (3, 3)]
]


def test_paper_code_path_rl_lora_merge_eval(tmp_path):
    from egspo.models.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "base", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                             max_len=512, seed=0)
    raw = tmp_path / "gsm8k_train.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in GSM8K_ROWS))
    data = tmp_path / "data"
    egspo("data", "--task", "gsm8k", "--source", str(raw), "--splits", "train", "--out-dir", str(data))
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["question"] == GSM8K_ROWS[0]["question"]
    run = tmp_path / "rl"
    # the paper preset's rl flags at a tiny scale (model path and data source are the only real differences)
    egspo("rl", "--model", str(model), "--task", "gsm8k", "--train", str(data / "train.jsonl"), "--out", str(run),
          "--seed", "0", "--style", "d1", "--num-generations", "2", "--batch-size", "2", "--grad-accum", "2",
          "--micro-batch", "2", "--rollout-policy", "merged", "--max-steps", "2", "--save-every", "1",
          "--lr", "3e-5", "--k", "2", "--lam", "0.5", "--selection", "entropy", "--baseline", "greedy",
          "--eps-low", "0.2", "--eps-high", "0.5", "--beta", "0.04", "--temperature", "0.9",
          "--gen-length", "8", "--steps", "4", "--block-length", "4", "--algorithm", "egspo",
          "--dtype", "float32", "--lora-r", "4", "--lora-alpha", "2", "--lora-dropout", "0.05")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["kl"] is not None for m in metrics)
    ckpt = run / "checkpoints" / "step_2"
    adapter = json.loads((ckpt / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and Path(adapter["base_model_name_or_path"]).resolve() == model.resolve()
    assert not (ckpt / "model.safetensors").exists()  # an adapter dir, not a second copy of the weights
    merged = tmp_path / "merged"
    egspo("merge", "--adapter", str(ckpt), "--out", str(merged))
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    out = tmp_path / "eval" / "train.jsonl"
    egspo("eval", "--model", str(merged), "--task", "gsm8k", "--data", str(data / "train.jsonl"), "--out", str(out),
          "--gen-length", "8", "--steps", "4", "--block-length", "4", "--batch-size", "3", "--style", "d1",
          "--dtype", "float32", "--trust-remote-code", "false")
    result = json.loads(out.with_suffix(".metrics.json").read_text())
    assert result["n"] == 6 and result["style"] == "d1" and 0.0 <= result["accuracy"] <= 1.0
    # the merged model generates what the adapter checkpoint generates (merge is exact in float32)
    out2 = tmp_path / "eval" / "adapter.jsonl"
    egspo("eval", "--model", str(ckpt), "--task", "gsm8k", "--data", str(data / "train.jsonl"), "--out", str(out2),
          "--gen-length", "8", "--steps", "4", "--block-length", "4", "--batch-size", "3", "--style", "d1")
    completions = [json.loads(line)["completion"] for line in out.read_text().splitlines()]
    assert completions == [json.loads(line)["completion"] for line in out2.read_text().splitlines()]


@pytest.mark.slow
def test_gpu_check_script_runs_at_the_tiny_shape(tmp_path):
    """scripts/gpu_check.sh is kept runnable: the same code as the H100 check, at a toy size on this device."""
    res = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--shape", "tiny", "--layers", "1"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["trainer"]["iterations"] == 2, result["trainer"]
    bench = result["benchmark"]
    assert bench["shape"]["layers"] == 1
    for key in ("rollout_live_s", "rollout_merged_s", "update_s", "bare_forwards_s", "bare_fwd_bwd_s"):
        assert bench[key] > 0
    assert bench["bidirectional_logit_change"] > 0
    assert bench["merged_vs_live_max_abs_logit_diff"] < 1e-4 * max(bench["logit_scale_max_abs"], 1.0)
