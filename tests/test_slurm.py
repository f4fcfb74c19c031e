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
        pytest.fail(f"snakemake exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n"
                    f"{proc.stderr[-8000:]}\nslurmctld log tail:\n{cluster.log('slurmctld')[-3000:]}")
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
