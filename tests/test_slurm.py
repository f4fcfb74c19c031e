"""The Slurm path on a real one-node Slurm cluster (tests/slurm_cluster.py), not a mock.

Run with ``make test-slurm`` (``pytest -m slurm``); needs root and apt-get (CI). Where the machine cannot run Slurm
the tests fail with the reason; only a missing root / apt-get skips them.

1. A standalone three-rule workflow through ``--profile profiles/slurm``: every job is an sbatch job, the GPU rule
   is scheduled on the node's gres (TRES gres/gpu=1), outputs are right.
2. Preemption: an ``egspo rl`` run under ``sbatch --requeue`` is requeued after its first checkpoint and resumes
   from it; metrics.jsonl has every step exactly once.
3. The micro DAG of the tiny preset through ``--profile profiles/slurm`` gives the same eval metrics as a local run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from egspo.verify.reproducibility import is_time_field

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slurm_cluster  # noqa: E402

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
BIN = Path(sys.executable).parent
# What the tests override in the profile: the partition, the resource sizes, and the status-poll interval
# (40 s on a real cluster; 2 s here so a chain of short jobs does not take minutes).
PROFILE_OVERRIDES = {"EGSPO_SLURM_PARTITION": "debug", "EGSPO_SLURM_SIZE": "small", "EGSPO_SLURM_STATUS_SECONDS": "2"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the Slurm tests need root (they install Debian packages and run slurmd)")
    if slurm_cluster.missing_binaries() and shutil.which("apt-get") is None:
        pytest.skip(f"Slurm binaries {slurm_cluster.missing_binaries()} missing and no apt-get to install them")
    try:
        install_s = slurm_cluster.ensure_installed()
        c = slurm_cluster.start_cluster(tmp_path_factory.mktemp("slurm"))
    except slurm_cluster.SlurmUnavailable as e:
        pytest.fail(f"this machine cannot run the test Slurm cluster: {e}")
    print(f"\nslurm: install {install_s:.1f} s, daemons up and node idle in {c.startup_s:.2f} s "
          f"({c.cpus} CPUs, {c.real_memory_mb} MB, partition {c.partition})")
    yield c
    c.stop()


def _snakemake(cluster, workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(cluster.env, **PROFILE_OVERRIDES)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    cmd = [str(BIN / "snakemake"), "--profile", str(PROFILE), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        failed = re.findall(r"Error in rule \w+:(?:.*\n)*?\s+log: .*?(\S+slurm_logs\S+\.log)", proc.stderr)
        job_logs = "".join(f"\n--- {p} ---\n{Path(p).read_text(errors='replace')[-2000:]}"
                           for p in failed[:3] if Path(p).is_file())
        pytest.fail(f"snakemake exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n"
                    f"{proc.stderr[-8000:]}\nSlurm logs of failed jobs:{job_logs}\n"
                    f"slurmctld log tail:\n{cluster.log('slurmctld')[-3000:]}")
    return proc


def _rule_jobids(stderr: str) -> list[tuple[str, str]]:
    """(rule, snakemake jobid) pairs from the scheduler's job blocks."""
    pairs = []
    for block in re.split(r"\n(?=\[)", stderr):
        m_rule = re.search(r"^(?:localrule|rule) (\w+):", block, re.M)
        m_id = re.search(r"^\s+jobid: (\d+)", block, re.M)
        if m_rule and m_id:
            pairs.append((m_rule.group(1), m_id.group(1)))
    return pairs


TOY_SNAKEFILE = textwrap.dedent("""\
    rule all:
        input: "report.txt"

    rule data:
        output: "data.txt"
        shell: "seq 1 5 > {output}"

    rule rl:
        input: "data.txt"
        output: "rl.txt"
        resources: gpu=1
        shell:
            "echo job=${{SLURM_JOB_ID:-none}} gpus=${{SLURM_GPUS_ON_NODE:-0}} "
            "cuda=${{CUDA_VISIBLE_DEVICES:-none}} > {output} && "
            "awk '{{s += $1}} END {{print s}}' {input} >> {output}"

    rule report:
        input: "rl.txt"
        output: "report.txt"
        shell: "echo job=${{SLURM_JOB_ID:-none}} > {output} && tail -n 1 {input} >> {output}"
""")


def test_profile_runs_every_job_through_sbatch_with_gpu_gres(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    start = time.monotonic()
    proc = _snakemake(cluster, tmp_path)
    elapsed = time.monotonic() - start
    log = proc.stderr + proc.stdout

    submitted = {}
    for jobid, slurm_id in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log):
        rule = dict((j, r) for r, j in _rule_jobids(log))[jobid]
        submitted[rule] = slurm_id
    assert set(submitted) == {"data", "rl", "report"}, f"not every job went through sbatch: {submitted}\n{log}"

    jobs = {j["JobId"]: j for j in cluster.jobs()}
    for rule, slurm_id in submitted.items():
        info = jobs.get(slurm_id)
        assert info is not None, f"slurmctld does not know job {slurm_id} of rule {rule}"
        assert info["JobState"] == "COMPLETED", (rule, info["JobState"])
        assert info["Partition"] == "debug"
        assert info["Comment"] == f"rule_{rule}"
        # JOB_GRES: what the job was allocated on the node; TresPerJob: what it asked for (sbatch --gpus=1)
        if rule == "rl":
            assert info["JOB_GRES"] == "gpu:1", f"GPU rule not scheduled on the gres: {info}"
            assert info.get("TresPerJob") == "gres:gpu:1", info.get("TresPerJob")
        else:
            assert info["JOB_GRES"] == "(null)", f"CPU rule {rule} got a GPU: {info}"
            assert "gpu" not in info.get("TresPerJob", ""), info
        # the plugin's per-job Slurm log, kept by the profile
        assert (tmp_path / ".snakemake" / "slurm_logs" / f"rule_{rule}" / f"{slurm_id}.log").is_file()

    rl_lines = (tmp_path / "rl.txt").read_text().split("\n")
    assert rl_lines[0] == f"job={submitted['rl']} gpus=1 cuda=0"
    assert rl_lines[1] == "15"
    assert (tmp_path / "report.txt").read_text().split("\n")[:2] == [f"job={submitted['report']}", "15"]
    print(f"\nthree-rule workflow through profiles/slurm: {elapsed:.1f} s")

    # nothing left to do: a second run submits no job
    again = _snakemake(cluster, tmp_path)
    assert "has been submitted with SLURM jobid" not in again.stderr + again.stdout


# ---- 2. preemption: a requeued RL job resumes from its checkpoint ------------------------------------------------

RL_ARGS = ["--task", "sudoku", "--seed", "0", "--algorithm", "egspo", "--style", "tiny", "--max-steps", "6",
           "--save-every", "1", "--num-generations", "4", "--batch-size", "2", "--gen-length", "64", "--steps", "32",
           "--block-length", "32", "--k", "2"]


def _egspo(*args: str, cwd: Path, timeout: float = 300) -> None:
    proc = subprocess.run([str(BIN / "egspo"), *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"egspo {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_requeued_rl_job_resumes_from_its_checkpoint(cluster, tmp_path):
    from egspo.rl.checkpointing import complete_checkpoints
    from egspo.tasks import get_task

    _egspo("build-model", "--out", "model", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
           "--intermediate-size", "64", "--max-len", "128", cwd=tmp_path)
    rows = get_task("sudoku").load("train", "tiny")[:64]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ["--model", "model", "--train", "train.jsonl", *RL_ARGS]

    # the same run, uninterrupted, outside Slurm: what the resumed run must reproduce
    _egspo("rl", *common, "--out", "reference", cwd=tmp_path)
    reference = _metrics(tmp_path / "reference" / "metrics.jsonl")
    assert [r["step"] for r in reference] == list(range(1, 7))

    out = tmp_path / "run"
    script = tmp_path / "rl_job.sh"
    script.write_text("#!/bin/bash\nset -euo pipefail\n"
                      f"cd {tmp_path}\n"
                      f"echo \"attempt ${{SLURM_RESTART_COUNT:-0}} job ${{SLURM_JOB_ID:-none}} checkpoints: "
                      f"$(ls {out}/checkpoints 2>/dev/null | sort -V | tr '\\n' ' ')\"\n"
                      f"exec {BIN / 'egspo'} rl {' '.join(common)} --out {out}\n")
    log = tmp_path / "rl_job.log"
    job = cluster.run("sbatch", "--parsable", "--requeue", "--open-mode=append", "-o", str(log), "-p",
                      cluster.partition, "--gpus=1", "--cpus-per-gpu=1", "-t", "10", str(script)).strip()
    cluster.wait_job_state(job, {"RUNNING"}, 60)

    # preempt it as soon as its first checkpoint is complete
    deadline = time.monotonic() + 240
    while not complete_checkpoints(out):
        assert cluster.show_job(job).get("JobState") == "RUNNING", f"job left RUNNING early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no checkpoint after 240 s:\n{log.read_text()}"
        time.sleep(0.1)
    cluster.run("scontrol", "requeue", job)
    at_requeue = complete_checkpoints(out)
    assert at_requeue[-1][0] < 6, f"the run finished before it could be requeued: {at_requeue}"
    first = at_requeue[0][1] / "trainer_state.pt"
    first_stat = (first.stat().st_ino, first.stat().st_mtime_ns)
    requeued_at = time.time()
    # Slurm holds a requeued job for about two minutes before it is eligible again; make it eligible now, but only
    # once the node has finished the old run and a later second has begun: slurmd refuses a credential created in
    # the same second as the job's revocation (its check is ctime <= revoked, whole seconds), and a launch refused
    # that way fails the job with exit code 1 before the script runs (seen in CI, where the first run took < 1 s).
    cluster.wait_job_state(job, {"PENDING"}, 60)
    deadline = time.monotonic() + 60
    while cluster.node_state() != "idle" or time.time() < int(requeued_at) + 2:
        assert time.monotonic() < deadline, f"node still {cluster.node_state()!r} 60 s after the requeue"
        time.sleep(0.2)
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now")
    info = cluster.wait_job_state(job, {"COMPLETED", "FAILED", "CANCELLED"}, 300)

    text = log.read_text()
    assert info["JobState"] == "COMPLETED", (f"{info}\n{text}\nslurmd log tail:\n{cluster.log('slurmd')[-3000:]}\n"
                                             f"slurmctld log tail:\n{cluster.log('slurmctld')[-3000:]}")
    assert info["Restarts"] == "1"
    assert "DUE TO JOB REQUEUE" in text
    attempts = re.findall(r"^attempt (\d+) job (\S+) checkpoints: (.*)$", text, re.M)
    assert [(a, j) for a, j, _ in attempts] == [("0", job), ("1", job)], text
    seen = attempts[1][2].split()
    assert seen and seen[0] == "step_1", f"the restarted job saw no checkpoint: {attempts}"
    # resumed, not restarted: the first checkpoint was not written again
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == first_stat
    metrics = _metrics(out / "metrics.jsonl")
    assert [r["step"] for r in metrics] == list(range(1, 7)), "each step exactly once"
    strip = lambda rows: [{k: v for k, v in r.items() if not is_time_field(k)} for r in rows]  # noqa: E731
    assert strip(metrics) == strip(reference), "the resumed run differs from the uninterrupted one"
    print(f"\nrequeued after checkpoint {at_requeue[-1][0]}; restarted job saw {seen}")


# ---- 3. the tiny preset's micro DAG through the Slurm profile equals a local run ---------------------------------

MICRO_CONFIG = REPO / "tests" / "micro_config.yaml"  # the pipeline end-to-end test's micro config


# the compute table's wall-clock columns (seconds, their intervals and ratios): with the metrics' timing fields
# (egspo.verify.reproducibility.is_time_field), the only expected difference between two runs
COMPUTE_TIME_COLUMN = re.compile(r"(^time_|_s$|_s_ci_)")


def _outputs(workdir: Path) -> dict[str, object]:
    """Evaluation metrics (parsed, without wall-clock fields), generations and result tables of a run (bytes; the
    compute table as its model-forward columns, its Markdown form, which shows the seconds, left out), by path
    relative to the run directory."""
    found: dict[str, object] = {}
    for pattern in ("work/eval/**/*.json", "work/eval/**/*.jsonl", "results/tables/**/*.csv",
                    "results/tables/**/*.md"):
        for path in workdir.glob(pattern):
            key = str(path.relative_to(workdir))
            if path.suffix == ".json":
                found[key] = {k: v for k, v in json.loads(path.read_text()).items() if not is_time_field(k)}
            elif path.name.startswith("compute") and path.suffix == ".csv":
                rows = list(csv.DictReader(path.read_text().splitlines()))
                found[key] = [{k: v for k, v in r.items() if not COMPUTE_TIME_COLUMN.search(k)} for r in rows]
            elif not (path.name.startswith("compute") and path.suffix == ".md"):
                found[key] = path.read_bytes()
    return found


@pytest.mark.timeout(1800)
def test_micro_dag_through_slurm_profile_matches_local_run(cluster, tmp_path):
    if not (REPO / "Snakefile").is_file() or not MICRO_CONFIG.is_file():
        pytest.fail(f"the pipeline's Snakefile and its micro config {MICRO_CONFIG} are required")
    micro = tmp_path / "micro_config.yaml"  # one snapshot for both runs
    shutil.copyfile(MICRO_CONFIG, micro)
    # the main DAG only: the ablations and sweeps add ~50 jobs of the same rules (the local end-to-end test runs them)
    with micro.open("a") as fh:
        fh.write("\nevidence_in_all: false\n")
    runs = {}
    for name in ("local", "slurm"):
        (tmp_path / name).mkdir()
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    start = time.monotonic()
    local = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--profile",
                            str(REPO / "profiles" / "local"), "--cores", "2", "--configfile", str(micro),
                            "--directory", str(tmp_path / "local")], cwd=tmp_path / "local", env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1200)
    assert local.returncode == 0, f"local run failed:\n{local.stderr[-6000:]}"
    runs["local"] = time.monotonic() - start

    start = time.monotonic()
    proc = _snakemake(cluster, tmp_path / "slurm", "--snakefile", str(REPO / "Snakefile"), "--configfile",
                      str(micro), timeout=1500)
    runs["slurm"] = time.monotonic() - start
    log = proc.stderr + proc.stdout

    # every job that ran locally ran as an sbatch job (rule `all` has no shell: it is never a job of its own)
    local_rules = sorted(r for r, _ in _rule_jobids(local.stderr + local.stdout) if r != "all")
    jobid_to_rule = {j: r for r, j in _rule_jobids(log)}
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)
    slurm_rules = sorted(jobid_to_rule[j] for j, _ in submitted)
    assert slurm_rules == local_rules, f"jobs differ between the Slurm and the local run:\n{log[-6000:]}"
    known = {j["JobId"]: j for j in cluster.jobs()}
    # GPU rules of profiles/slurm (1 GPU each at EGSPO_SLURM_SIZE=small); eval rules are generated per checkpoint
    # schedule and split set (eval, eval_start, eval_test, eval_<method>, ...) and all inherit the `eval` entry
    is_gpu_rule = lambda rule: rule in {"sft", "rl", "trace"} or rule.startswith("eval")  # noqa: E731
    for jobid, slurm_id in submitted:
        rule, info = jobid_to_rule[jobid], known[slurm_id]
        assert info["JobState"] == "COMPLETED", (rule, info)
        assert info["JOB_GRES"] == ("gpu:1" if is_gpu_rule(rule) else "(null)"), (rule, info["JOB_GRES"])

    ours, theirs = _outputs(tmp_path / "slurm"), _outputs(tmp_path / "local")
    assert any(k.startswith("work/eval/") for k in theirs), f"the local run wrote no eval metrics: {sorted(theirs)}"
    assert sorted(ours) == sorted(theirs)
    differing = [k for k in theirs if ours[k] != theirs[k]]
    assert not differing, f"outputs differ between the Slurm and the local run: {differing}"
    print(f"\nmicro DAG: local {runs['local']:.0f} s, through Slurm {runs['slurm']:.0f} s "
          f"({len(submitted)} sbatch jobs, {len(theirs)} output files identical)")
