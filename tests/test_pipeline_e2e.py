"""The whole default DAG on the micro config (tests/micro_config.yaml over the tiny preset) in a temporary
directory: every declared output exists and parses, the tables hold the grid, and a second run has nothing to do."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
MICRO = REPO / "tests" / "micro_config.yaml"


def _snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(MICRO), "--cores", "2", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    res.output = res.stdout + res.stderr
    return res


def _declared_outputs(workdir: Path) -> list[tuple[str, str]]:
    """(path, rule) of every output file of the DAG, from `snakemake --summary`."""
    res = _snakemake(workdir, "--summary")
    assert res.returncode == 0, res.output[-3000:]
    lines = [line.split("\t") for line in res.stdout.splitlines() if "\t" in line]
    assert lines[0][:3] == ["output_file", "date", "rule"], lines[:1]
    return [(cols[0], cols[2]) for cols in lines[1:]]


def _check_parses(path: Path) -> None:
    """Open ``path`` with the reader its kind calls for; fail with the path if it does not parse."""
    name = path.name
    if path.is_dir():
        assert (path / "config.json").is_file(), f"{path}: model directory without config.json"
        json.loads((path / "config.json").read_text())
    elif name.endswith(".jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        assert rows, f"{path}: no rows"
    elif name.endswith(".json"):
        assert json.loads(path.read_text()), f"{path}: empty JSON"
    elif name.endswith(".csv"):
        assert len(pd.read_csv(path)) > 0, f"{path}: empty table"
    elif name.endswith(".md"):
        assert path.read_text().lstrip().startswith("#"), f"{path}: not a Markdown report"
    elif name.endswith(".png"):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    elif name.endswith(".pdf"):
        assert path.read_bytes()[:5] == b"%PDF-", f"{path}: not a PDF"
    else:
        raise AssertionError(f"{path}: no parser for this output kind")


def _check_report(workdir: Path) -> None:
    """`snakemake --report` on the finished run: every table (CSV) and figure (PNG) of results/ is in it with its
    caption (the start of its workflow/report/*.rst), and so is the workflow description."""
    report = workdir / "report.html"
    res = _snakemake(workdir, "--report", str(report))
    assert res.returncode == 0, res.output[-3000:]
    html = report.read_text()
    shown = sorted(p.name for kind in ("tables/*.csv", "figures/*.png") for p in (workdir / "results").glob(kind))
    assert {"main.csv", "gains.csv", "gradcheck.csv", "fig1_overview.png", "training_curves.png",
            "fig2_step_selection.png", "gradcheck.png"} <= set(shown)
    missing = [name for name in shown if name not in html]
    assert not missing, f"not in the report: {missing}"
    # every file registered with shown(path, caption) in the rule files that this run made: its caption is there
    registered = re.findall(r'shown\(f"\{R\}/([^"{]+)", "(\w+)"', "".join(
        p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")))
    made = [(rel, caption) for rel, caption in registered if (workdir / "results" / rel).exists()]
    assert {rel for rel, _ in made} >= {"tables/main.csv", "figures/fig1_overview.png", "tables/gradcheck.csv"}
    for rel, caption in made + [("(workflow description)", "workflow")]:
        first_line = (REPO / "workflow" / "report" / f"{caption}.rst").read_text().splitlines()[0].strip()
        lead = re.split(r"[`*|\[]", first_line)[0].strip()[:60]  # the text before any rst markup, as rendered
        assert len(lead) >= 20 and lead in html, f"caption {caption}.rst of {rel} not in the report: {lead!r}"


# ~70 jobs, most of them starting torch + transformers (~5 CPU-s each): about two minutes of wall time on 2 idle
# cores; in the default suite, since it is the one test that runs every rule together
def test_micro_pipeline_end_to_end(tmp_path):
    start = time.perf_counter()
    res = _snakemake(tmp_path)
    elapsed = time.perf_counter() - start
    assert res.returncode == 0, res.output[-6000:]
    print(f"\nmicro DAG: {elapsed:.1f} s")

    outputs = _declared_outputs(tmp_path)
    rules = {rule for _, rule in outputs}
    # Sudoku's run lengths come from task_settings.sudoku, so its evaluation rules are the per-task ones
    assert {"data", "build_model", "sft", "rl", "eval_start_sudoku", "eval_sudoku", "trace", "gradcheck", "report_main",
            "report_curves", "report_fig2", "report_gradcheck"} <= rules
    # the compared RL methods of the micro config (the tiny preset's `compare`, unless micro_config overrides it)
    compare = yaml.safe_load(MICRO.read_text()).get(
        "compare", yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["tiny"]["compare"])
    rl_methods = [m for m in compare if m != "sft"]
    # one eval job per (task, method) wrote every seed's checkpoint x length x split, each tagged with its seed
    evals = sorted(rel for rel, rule in outputs if rule == "eval_sudoku" and rel.endswith(".metrics.json"))
    lengths = yaml.safe_load(MICRO.read_text())["eval"]["gen_lengths"]
    assert evals == sorted(f"work/eval/sudoku/{m}/seed0/step_{n}/len{length}/{s}.metrics.json"
                           for m in rl_methods for n in (1, 2) for length in lengths for s in ("validation", "test"))
    for rel in evals:
        tags = json.loads((tmp_path / rel).read_text())["tags"]
        method, seed, ckpt, _, split = rel.split("/")[3:]
        assert tags == {"method": method, "seed": seed[len("seed"):], "ckpt": ckpt,
                        "split": split[: -len(".metrics.json")]}
    for rel, rule in outputs:
        path = tmp_path / rel
        assert path.exists(), f"declared output of rule {rule} missing: {rel}"
        _check_parses(path)

    micro = yaml.safe_load(MICRO.read_text())
    main = pd.read_csv(tmp_path / "results/tables/main.csv")
    ours = main[main["source"] == "ours"]
    assert set(ours["method"]) == {"sft", *rl_methods}
    assert set(ours["gen_length"]) == {str(n) for n in micro["eval"]["gen_lengths"]} | {"best"}
    assert (ours["n_seeds"] == len(micro["seeds"])).all()
    assert ours["best_on_test_mean"].between(0, 100).all() and ours["val_chosen_mean"].between(0, 100).all()
    # the paper protocol picks the best checkpoint on test, so it can never be below the validation choice
    assert (ours["best_on_test_mean"] >= ours["val_chosen_mean"] - 1e-9).all()
    gains = pd.read_csv(tmp_path / "results/tables/gains.csv")
    assert set(gains["method"]) == set(rl_methods)
    assert set(gains["protocol"]) == {"best_on_test", "val_chosen"}
    # the ablations and sweeps are part of the default run: each variant evaluated once, at its final checkpoint
    tiny = yaml.safe_load((REPO / "config.yaml").read_text())["presets"]["tiny"]
    assert tiny["evidence_in_all"]
    variants = sorted(rel for rel, rule in outputs if rule == "eval_variants_sudoku" and rel.endswith(".metrics.json"))
    assert variants and all(re.fullmatch(r"work/eval/sudoku/\w+/seed0/step_2/len16/(validation|test)\.metrics\.json",
                                         rel) for rel in variants), variants
    for name, spec in tiny["ablations"].items():
        table = pd.read_csv(tmp_path / f"results/tables/ablation_{name}.csv")
        assert set(spec["methods"]) <= set(table["method"]), (name, sorted(set(table["method"])))
    for name in tiny["sweeps"]:
        assert len(pd.read_csv(tmp_path / f"results/tables/sweep_{name}.csv")) == len(tiny["sweeps"][name]["methods"])

    _check_report(tmp_path)

    # nothing changed: a second run has no job to do
    again = _snakemake(tmp_path, "-n")
    assert again.returncode == 0, again.output[-3000:]
    assert "Nothing to be done" in again.output, again.output[-3000:]

    # a --config override of an RL hyper-parameter is a variant: it runs in its own directories, the finished run
    # above is left as it is
    variant = _snakemake(tmp_path, "-n", "--config", "rl={lr: 0.123}")
    assert variant.returncode == 0, variant.output[-3000:]
    written = {p.strip() for line in re.findall(r"output: (.*)", variant.output) for p in line.split(",")}
    assert written and all(p.startswith(("work/variants/rl-", "results/variants/rl-")) for p in written)

    # the configuration itself changed (a config file, not an override) reruns every RL job in place (and what
    # depends on them), never keeps the old runs
    changed_file = tmp_path / "changed.yaml"
    changed_file.write_text("rl: {lr: 0.123}\n")
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile",
           str(MICRO), str(changed_file), "--cores", "2", "-n"]
    changed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert changed.returncode == 0, (changed.stdout + changed.stderr)[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", changed.stdout, flags=re.MULTILINE))
    n_rl = len(list(tmp_path.glob("work/rl/*/*/seed*/metrics.jsonl")))
    assert n_rl > 0 and int(counts.get("rl", 0)) == n_rl, changed.stdout[-3000:]
    assert int(counts.get("sft", 0)) == 0, changed.stdout[-3000:]
