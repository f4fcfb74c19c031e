"""The Snakemake workflow: schema validation stops bad configs before any job, the default DAG has the expected
jobs, overrides from the command line give targeted reruns in their own directories. Every run uses
``--directory TMP`` so nothing is written into the repository."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def snakemake(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "1",
           *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    res.output = res.stdout + res.stderr  # Snakemake prints errors and job tables on either stream
    return res


def job_counts(output: str) -> Counter:
    """The 'Job stats' table of a dry run as {rule: count}."""
    block = output.split("Job stats:", 1)[1]
    counts = Counter()
    for line in block.splitlines()[3:]:
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def expected_default_counts() -> Counter:
    """Job counts of the default config, computed from config.yaml."""
    tiny = yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["tiny"]
    tasks, seeds = tiny["tasks"], len(tiny["seeds"])
    rl_methods = [m for m in tiny["compare"] if m != "sft"]
    assert all(set(tiny["methods"][m]) & {"max_steps", "save_every"} == set() for m in rl_methods)
    per_task = tiny.get("task_settings", {})

    def suffix(task):  # a task with its own RL save schedule or its own lengths gets rules of its own
        own = per_task.get(task, {})
        return f"_{task}" if {"max_steps", "save_every"} & set(own.get("rl", {})) or "eval" in own else ""

    counts = Counter({"data": len(tasks), "build_model": 1, "rl": len(tasks) * seeds * len(rl_methods),
                      "gradcheck": 1, "trace": len(tasks), "report_main": 1, "report_curves": 1, "report_fig2": 1,
                      "report_gradcheck": 1, "report_compute": 1, "all": 1})
    for task in tasks:
        sft_seed = {**tiny["sft"], **per_task.get(task, {}).get("sft", {})}.get("seed")
        counts["sft"] += seeds if sft_seed is None else 1  # per seed, or one shared per task
        # one eval job per (task, method) over every seed (each covers its checkpoints x lengths x splits), rule
        # eval for the RL methods on the shared checkpoint schedule; rule eval_start for the model before RL, per
        # seed (once when every seed shares it); a task with its own RL schedule or lengths gets its own rules
        counts[f"eval_start{suffix(task)}"] += seeds if sft_seed is None else 1
        counts[f"eval{suffix(task)}"] += len(rl_methods)
    if tiny.get("evidence_in_all"):
        # every ablation and sweep too: their methods outside `compare` run on their tasks and are evaluated in rule
        # eval_variants (final checkpoint at eval.variants' lengths); one table per ablation / sweep
        evidence = [(spec.get("tasks", tasks), spec["methods"])
                    for spec in [*tiny["ablations"].values(), *tiny.get("sweeps", {}).values()]]
        variants = {(t, m) for run_tasks, methods in evidence for t in run_tasks for m in methods
                    if m not in tiny["compare"]}
        assert tiny["eval"]["variants"]["last_checkpoints"] == 1
        counts["rl"] += seeds * len(variants)
        for task, _ in variants:
            counts[f"eval_variants{suffix(task)}"] += 1
        counts.update({"report_ablation": len(tiny["ablations"]), "report_ablation_compute": len(tiny["ablations"]),
                       "report_sweep": len(tiny.get("sweeps", {}))})
    return counts


def test_default_dag_job_counts(tmp_path):
    res = snakemake(tmp_path, "-n")
    assert res.returncode == 0, res.output[-3000:]
    counts = job_counts(res.output)
    assert counts == expected_default_counts()
    # every eval job writes its whole grid: the shell line of an RL method's job names all its seeds' checkpoints
    res = snakemake(tmp_path, "-n", "-p", "--config", "tasks=[sudoku]", "seeds=[0,1]")
    tiny = yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["tiny"]
    rl = tiny["rl"]
    steps = list(range(rl["save_every"], rl["max_steps"] + 1, rl["save_every"]))
    cmd = next(line for line in res.output.splitlines()
               if " eval " in line and "--out-dir work/eval/sudoku/egspo " in line)
    assert cmd.count("--model ") == 2 * len(steps) and cmd.count("--model-tag ") == 2 * len(steps)
    last = f"seed1/step_{steps[-1]}"
    assert f"--model {last}=work/rl/sudoku/egspo/seed1/checkpoints/step_{steps[-1]} --model-tag {last}:seed=1" in cmd
    assert cmd.count("--data ") == len(tiny["eval"]["splits"]) and "--tag method=egspo >" in cmd
    assert f"--gen-length {' '.join(map(str, tiny['eval']['gen_lengths']))} --steps" in cmd
    start = next(line for line in res.output.splitlines() if " eval " in line and "--tag method=sft" in line)
    assert f"--model sft=work/sft/sudoku/seed{tiny['sft']['seed']} --model-tag sft:seed={tiny['sft']['seed']}" in start
    assert f"--out-dir work/eval/sudoku/sft/seed{tiny['sft']['seed']} " in start


def test_shared_warm_start_or_one_per_seed(tmp_path):
    """`sft.seed: N`: one SFT run per task (seed N) that every RL seed starts from; `null`: one per seed."""
    res = snakemake(tmp_path, "-n", "-p", "--config", "tasks=[sudoku]", "seeds=[0,1]", "sft={seed: 5}",
                    "work_dir=work")  # named: this test is about warm starts, not where a variant writes
    assert res.returncode == 0, res.output[-3000:]
    assert job_counts(res.output)["sft"] == 1
    rl_models = re.findall(r"egspo rl --model (\S+) .*--seed (\d+)", res.output)
    assert rl_models and {m for m, _ in rl_models} == {"work/sft/sudoku/seed5"} and {s for _, s in rl_models} == {"0", "1"}
    assert re.search(r"egspo sft .*--out work/sft/sudoku/seed5 --seed 5 ", res.output)
    # the shared warm start is evaluated once, under its seed, and the report pairs it with every RL seed
    assert job_counts(res.output)["eval_start"] == 1
    assert "--model sft=work/sft/sudoku/seed5 --model-tag sft:seed=5 " in res.output
    assert re.search(r"egspo report accuracy .*--shared-seed sudoku:sft=5\b", res.output)
    res = snakemake(tmp_path, "-n", "-p", "--config", "tasks=[sudoku]", "seeds=[0,1]", "sft={seed: null}",
                    "work_dir=work")
    assert res.returncode == 0, res.output[-3000:]
    assert job_counts(res.output)["sft"] == 2
    assert sorted(set(re.findall(r"egspo rl --model (\S+) ", res.output))) == ["work/sft/sudoku/seed0",
                                                                               "work/sft/sudoku/seed1"]
    assert job_counts(res.output)["eval_start"] == 2 and "--shared-seed" not in res.output


def test_checkpoints_per_job_splits_the_evaluation_jobs(tmp_path):
    """`eval.checkpoints_per_job: 2` over the tiny schedule (3 checkpoints): jobs of 2 and 1 checkpoints of every
    seed, together every checkpoint once, each with its own log."""
    res = snakemake(tmp_path, "-n", "-p", "--config", "tasks=[sudoku]", "seeds=[0, 1]", "compare=[sft, egspo]",
                    "eval={checkpoints_per_job: 2}", "rl={max_steps: 60, save_every: 20}")
    assert res.returncode == 0, res.output[-3000:]
    counts = job_counts(res.output)
    assert counts["eval_part1"] == counts["eval_part2"] == 1 and "eval" not in counts
    cmds = [line for line in res.output.splitlines()
            if " eval " in line and re.search(r"--out-dir \S+/eval/sudoku/egspo ", line)]
    models = sorted(re.findall(r"--model (seed\d/step_\d+)=", " ".join(cmds)))
    assert models == sorted(f"seed{s}/step_{n}" for s in (0, 1) for n in (20, 40, 60))  # each seed's parts
    assert sorted(len(re.findall("--model ", c)) for c in cmds) == [2 * 1, 2 * 2]
    # resources.eval.runtime is per seed: a job over 2 seeds asks for twice it (a Slurm time limit)
    tiny = yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["tiny"]
    runtimes = re.findall(r"rule eval_part\d:\n(?:\s+.*\n)*?\s+resources: .*?runtime=(\d+)", res.output)
    assert runtimes == [str(2 * tiny["resources"]["eval"]["runtime"])] * 2
    logs = re.findall(r"> (\S+\.log) 2>&1", " ".join(cmds))
    assert len(set(logs)) == 2


def test_unknown_key_stops_the_run_before_any_job(tmp_path):
    res = snakemake(tmp_path, "--config", "rl={lrr: 0.1}")
    assert res.returncode != 0
    assert "'lrr' was unexpected" in res.output and "Error validating config file" in res.output
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()
    res = snakemake(tmp_path, "-n", "--config", "taskz=[sudoku]")
    assert res.returncode != 0 and "'taskz' was unexpected" in res.output


def test_bad_value_names_the_key(tmp_path):
    res = snakemake(tmp_path, "--config", "seeds=[-1]")
    assert res.returncode != 0
    assert "-1 is less than the minimum of 0" in res.output and "instance['seeds'][0]" in res.output
    assert not (tmp_path / "work").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("presets:\n  tiny:\n    rl:\n      selection: best\n")
    res = snakemake(tmp_path, "-n", "--configfile", str(bad))
    assert res.returncode != 0
    assert "'best' is not one of" in res.output and "['presets']['tiny']['rl']['selection']" in res.output


def test_cross_field_rule_names_the_key(tmp_path):
    res = snakemake(tmp_path, "-n", "--config", "methods={egspo_sa_all: {k: 4}}")
    assert res.returncode != 0
    assert ("config key 'methods.egspo_sa_all' (merged over 'rl' and 'task_settings.sudoku.rl'): selection='all' "
            "needs k == steps, got k=4, steps=16") in res.output


def test_task_settings_change_one_task_for_every_method(tmp_path):
    """`task_settings.countdown`: its SFT and RL runs take the overrides (every method alike, a method's own entry
    still wins), its evaluation and report use its own checkpoints, Sudoku keeps the shared blocks."""
    res = snakemake(tmp_path, "-n", "-p", "--config", "work_dir=work", "seeds=[0]", "sft={seed: 2, max_steps: 800}",
                    "rl={max_steps: 60, save_every: 30}", "compare=[sft, egspo, egspo_sa]",
                    "methods={egspo: {max_steps: 60, save_every: 60}}",
                    "task_settings={countdown: {sft: {max_steps: 2000, seed: 0}, rl: {max_steps: 90, save_every: 45}}}")
    assert res.returncode == 0, res.output[-3000:]
    out = res.output
    assert re.search(r"egspo sft .*--task countdown .*--out work/sft/countdown/seed0 --seed 0 .*--max-steps 2000 ", out)
    assert re.search(r"egspo sft .*--task sudoku .*--out work/sft/sudoku/seed2 --seed 2 .*--max-steps 800 ", out)
    rl = {(t, m): line for line in out.splitlines()
          for t, m in re.findall(r"egspo rl .*--out work/rl/(\w+)/(\w+)/seed0 ", line)}
    assert "--model work/sft/countdown/seed0 " in rl["countdown", "egspo_sa"]
    assert "--max-steps 90 --save-every 45 " in rl["countdown", "egspo_sa"]
    assert "--max-steps 60 --save-every 60 " in rl["countdown", "egspo"]  # the method's own entry wins
    assert "--max-steps 60 --save-every 30 " in rl["sudoku", "egspo_sa"]
    report = next(line for line in out.splitlines() if "egspo report accuracy" in line and "/tables/main " in line)
    for entry in ("sudoku:egspo_sa=step_30,step_60", "countdown:egspo_sa=step_45,step_90", "countdown:egspo=step_60",
                  "sudoku:egspo=step_60", "countdown:sft=sft"):
        assert entry in report.split(), entry
    counts = job_counts(out)
    assert counts["eval_countdown"] == counts["eval"] == counts["eval_egspo"] == counts["eval_egspo_countdown"] == 1
    bad = snakemake(tmp_path, "-n", "--config", "task_settings={countdown: {sft: {data: x.jsonl}}}")
    assert bad.returncode != 0 and "['task_settings']['countdown']['sft']" in bad.output
    bad = snakemake(tmp_path, "-n", "--config", "task_settings={tetris: {rl: {lr: 0.1}}}")
    assert bad.returncode != 0 and "'tetris' is not one of" in bad.output
    bad = snakemake(tmp_path, "-n", "--config", "sft={data: s1k.jsonl}", "task_settings={countdown: {sft: {lr: 0.1}}}")
    assert bad.returncode != 0 and "config key 'task_settings.countdown.sft'" in bad.output


def test_override_variant_runs_in_its_own_directories(tmp_path):
    res = snakemake(tmp_path, "-n", "-p", "compare_methods", "--config", "tasks=[sudoku]", "seeds=[0]", "rl={lr: 2e-4}",
                    "methods={egspo_sa_k2: {algorithm: egspo, lam: 0.5, selection: entropy, k: 2}}",
                    "compare=[sft, egspo_sa_k2]", "results_dir=results/variants/k2")
    assert res.returncode == 0, res.output[-3000:]
    out = res.output
    counts = job_counts(out)
    assert counts["rl"] == 1 and counts["sft"] == 1 and counts["eval_start"] == 1 and counts["eval"] == 1
    rl_cmds = [line for line in out.splitlines() if " rl --model" in line]
    assert len(rl_cmds) == 1
    cmd = rl_cmds[0]
    # rl={lr: ...} changes every run: they go to a work directory derived from the override
    variant = re.search(r"--out (work/variants/[a-z-]+-[0-9a-f]{8})/rl/sudoku/egspo_sa_k2/seed0 ", cmd)
    assert variant and "--k 2" in cmd and "--lr 0.0002" in cmd, cmd
    tiny_rl = yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["tiny"]["rl"]
    assert f"--max-steps {tiny_rl['max_steps']} " in cmd and "--lam 0.5" in cmd  # the rest of `rl` is the preset's
    outputs = re.findall(r"output: (.*)", out)
    written = {p.strip() for line in outputs for p in line.split(",")}
    assert all(p.startswith((variant.group(1) + "/", "results/variants/k2/")) for p in written), sorted(written)
    assert not any("/egspo_sa/" in p or "/diffu_grpo/" in p for p in written)


def test_ablation_target_and_paper_preset_parse(tmp_path):
    res = snakemake(tmp_path, "-n", "ablate_reward", "--config", "seeds=[0]", "tasks=[sudoku]")
    assert res.returncode == 0, res.output[-3000:]
    counts = job_counts(res.output)
    assert counts["rl"] == 3 and counts["report_ablation"] == 1 and "report_main" not in counts
    res = snakemake(tmp_path, "-n", "--config", "preset=paper", "tasks=[gsm8k, mbpp]")
    assert res.returncode == 0, res.output[-3000:]
    counts = job_counts(res.output)
    assert counts["data"] == 2 and "build_model" not in counts and "sft" not in counts
    # a method off the shared checkpoint schedule gets an eval rule of its own (its outputs are a different list)
    res = snakemake(tmp_path, "-n", "ablate_selection", "--config", "seeds=[0]", "tasks=[sudoku]",
                    "methods={egspo_sa_all: {k: 16, max_steps: 80}}")
    assert res.returncode == 0, res.output[-3000:]
    counts = job_counts(res.output)
    # egspo_sa (compared) in rule eval; uniform and random, ablation variants, in eval_variants
    assert counts["eval_egspo_sa_all"] == 1 and counts["eval_variants"] == 2 and counts["eval"] == 1
    assert counts["eval_start"] == 1


def test_literal_slurm_profile_command_resolves(tmp_path):
    """The design card's `snakemake --cores all --profile slurm`, from the repository root: Snakemake looks up a bare
    profile name in the current directory first, where `slurm` is a link to profiles/slurm (tracked in git, so a fresh
    clone has it). Dry run; --directory keeps .snakemake/ out of the checkout."""
    link = REPO / "slurm"
    assert link.is_symlink() and link.resolve() == (REPO / "profiles" / "slurm").resolve()
    cmd = [str(SNAKEMAKE), "--cores", "all", "--profile", "slurm", "-n", "--directory", str(tmp_path)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Using profile slurm for setting default command line arguments." in out
    assert job_counts(out) == expected_default_counts()


def _written(output: str) -> set[str]:
    """Every output path of a dry run's jobs."""
    return {p.strip() for line in re.findall(r"output: (.*)", output) for p in line.split(",")}


def test_targeted_reruns_leave_the_default_run_alone(tmp_path):
    """A grid selection writes its tables under results/variants/ (sharing work/, whose jobs it does not change);
    a changed hyper-parameter writes its work and its results under variants/ too."""
    res = snakemake(tmp_path, "-n", "--config", "tasks=[sudoku]", "seeds=[0]")
    assert res.returncode == 0, res.output[-3000:]
    note = "egspo: --config overrides seeds, tasks: work in work, results in results/variants/seeds-tasks-"
    assert note in res.output
    written = _written(res.output)
    assert written and all(p.startswith(("work/", "results/variants/seeds-tasks-")) for p in written)
    assert not any(p.startswith("work/variants/") for p in written)
    res = snakemake(tmp_path, "-n", "--config", "rl={lr: 2e-4}")
    assert res.returncode == 0, res.output[-3000:]
    written = _written(res.output)
    assert written and all(p.startswith(("work/variants/rl-", "results/variants/rl-")) for p in written)


@pytest.mark.parametrize("target", ["compare_methods", "ablate_reward", "ablate_selection"])
def test_targets_recompute_on_a_fresh_clone(tmp_path, target):
    """results/ is committed, work/ is not: a target must still schedule the runs its tables come from."""
    res = snakemake(tmp_path, "-n", target)
    assert res.returncode == 0, res.output[-3000:]
    for rel in (p for p in _written(res.output) if p.startswith("results/")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("committed\n")
    res = snakemake(tmp_path, "-n", target)
    assert res.returncode == 0, res.output[-3000:]
    counts = job_counts(res.output)
    assert counts["rl"] > 0 and counts["report_main" if target == "compare_methods" else "report_ablation"] == 1


def readme_snakemake_commands() -> list[str]:
    """Every `snakemake ...` command line of the README's bash blocks (continuation lines joined)."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("snakemake "):
                commands.append(line)
    return commands


@pytest.mark.slow
@pytest.mark.parametrize("command", readme_snakemake_commands())
def test_readme_command_dry_run(command, tmp_path):
    """Each README command as written, as a dry run from the repository root (outputs in a temporary directory)."""
    args = shlex.split(command)[1:]
    if "-n" not in args:
        args.insert(0, "-n")
    res = subprocess.run([str(SNAKEMAKE), *args, "--directory", str(tmp_path)], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Job stats:" in out or "Nothing to be done" in out, out[-3000:]
