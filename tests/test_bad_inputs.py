"""Bad inputs across the commands and the workflow config: each gives one line ``egspo <command>: error: ...`` (or
argparse's own ``egspo <command>: error: ...`` usage error) with a message naming what is wrong, exit status 2, and
no output left behind. The commands run in-process through ``egspo.cli.main``, the error handler a user meets.

Each row: (id, argv, files to create, expected exit status, expected message fragment). In argv and file contents,
``{tmp}`` is the test's folder and ``{model}`` a tiny model directory. Rows whose check comes before any model work
name a model directory that does not exist: reaching the model would fail with another message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from egspo import cli

ROOT = Path(__file__).resolve().parents[1]
NO_MODEL = "{tmp}/no_such_model"

SUDOKU = {"Puzzle": "1234341221434321", "Solution": "1234341221434321"}
SHORT_SUDOKU = {"Puzzle": "12343412", "Solution": "1234341221434321"}
COUNTDOWN = {"numbers": [3, 5, 7], "target": 22}


def jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def graded(row, completion="<answer>1</answer>") -> dict:
    return {**row, "completion": completion}


def metrics_grid(tmp: Path, content: str) -> None:
    """One eval metrics file where `egspo report accuracy` (argv REPORT_ACC) reads it."""
    path = tmp / "eval" / "sudoku" / "sft" / "seed0" / "step_1" / "len8" / "test.metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)


REPORT_ACC = ["report", "accuracy", "--eval-dir", "{tmp}/eval", "--tasks", "sudoku", "--methods", "sft",
              "--seeds", "0", "--lengths", "8", "--splits", "test", "--checkpoints", "sft=step_1",
              "--table", "{tmp}/out/main"]
EVAL = ["eval", "--task", "sudoku", "--model", NO_MODEL, "--data", "test={tmp}/test.jsonl", "--gen-length", "8",
        "--steps", "8", "--block-length", "8", "--out-dir", "{tmp}/eval_out"]
TRACE = ["trace", "--model", NO_MODEL, "--task", "sudoku", "--data", "{tmp}/test.jsonl", "--out", "{tmp}/t.json",
         "--gen-length", "8", "--steps", "8", "--block-length", "8"]
SFT = ["sft", "--model", "{model}", "--task", "sudoku", "--train", "{tmp}/train.jsonl", "--out", "{tmp}/sft_out",
       "--gen-length", "24", "--max-steps", "1", "--batch-size", "1", "--lr", "1e-3", "--style", "tiny"]
RL = ["rl", "--model", "{model}", "--task", "sudoku", "--train", "{tmp}/train.jsonl", "--out", "{tmp}/rl_out",
      "--style", "tiny", "--gen-length", "8", "--steps", "8", "--block-length", "4", "--k", "2",
      "--num-generations", "2", "--batch-size", "1", "--max-steps", "1"]
GRADE = ["grade", "--task", "sudoku", "--input", "{tmp}/in.jsonl", "--output", "{tmp}/graded.jsonl"]
GOOD_TRAIN = {"train.jsonl": jsonl(SUDOKU)}

CASES = [
    # --- egspo grade
    ("grade-empty-file", GRADE, {"in.jsonl": ""}, 2, "in.jsonl: no rows to grade (the file is empty)"),
    ("grade-blank-lines-only", GRADE, {"in.jsonl": "\n  \n"}, 2, "no rows to grade"),
    ("grade-missing-input", GRADE, {}, 2, "in.jsonl: No such file or directory"),
    ("grade-invalid-json", GRADE, {"in.jsonl": jsonl(graded(SUDOKU)) + "{oops\n"}, 2, "in.jsonl: line 2: invalid JSON"),
    ("grade-not-an-object", GRADE, {"in.jsonl": "[1, 2]\n"}, 2, "line 1: expected a JSON object, got list"),
    ("grade-non-utf8", GRADE, {"in.jsonl": b'{"Puzzle": "\xff\xfe"}\n'}, 2, "in.jsonl: line 1: not UTF-8 text"),
    ("grade-no-completion", GRADE, {"in.jsonl": jsonl(SUDOKU)}, 2, "line 1: missing field 'completion'"),
    ("grade-completion-not-text", GRADE, {"in.jsonl": jsonl({**SUDOKU, "completion": 7})}, 2,
     "field 'completion' must be a string, got int"),
    ("grade-sudoku-missing-solution", GRADE, {"in.jsonl": jsonl(graded({"Puzzle": SUDOKU["Puzzle"]}))}, 2,
     "line 1: missing field 'Solution'"),
    ("grade-sudoku-short-puzzle", GRADE, {"in.jsonl": jsonl(graded(SUDOKU), graded(SHORT_SUDOKU))}, 2,
     "in.jsonl: line 2: Puzzle must be a string of 16 digits"),
    ("grade-sudoku-bad-digit", GRADE, {"in.jsonl": jsonl(graded({**SUDOKU, "Solution": "9" * 16}))}, 2,
     "line 1: Solution must be a string of 16 digits"),
    ("grade-countdown-no-numbers", [*GRADE[:2], "countdown", *GRADE[3:]], {"in.jsonl": jsonl(graded({"target": 3}))},
     2, "line 1: missing field 'numbers'"),
    ("grade-countdown-text-numbers", [*GRADE[:2], "countdown", *GRADE[3:]],
     {"in.jsonl": jsonl(graded({"numbers": ["a", 2], "target": 3}))}, 2, "numbers/target are not integers"),
    ("grade-gsm8k-answer-without-gold", [*GRADE[:2], "gsm8k", *GRADE[3:]],
     {"in.jsonl": jsonl(graded({"question": "q", "answer": "no marker"}))}, 2, "line 1: field 'answer': GSM8K answer"),
    ("grade-unknown-task", [*GRADE[:2], "tetris", *GRADE[3:]], {}, 2, "argument --task: invalid choice: 'tetris'"),
    ("grade-output-under-a-file", [*GRADE[:-1], "{tmp}/a_file/graded.jsonl"], {"a_file": "", "in.jsonl": ""}, 2,
     "cannot write the output {tmp}/a_file/graded.jsonl"),
    ("grade-compat-unsupported-task", [*GRADE[:2], "humaneval", *GRADE[3:], "--compat", "authors"],
     {"in.jsonl": jsonl(graded({"prompt": "p"}))}, 2, "--compat authors supports"),
    # --- egspo data
    ("data-unknown-split", ["data", "--task", "sudoku", "--source", "tiny", "--out-dir", "{tmp}/d", "--splits", "dev"],
     {}, 2, "--splits: unknown split 'dev'"),
    ("data-missing-local-file", ["data", "--task", "sudoku", "--source", "{tmp}/none.csv", "--out-dir", "{tmp}/d",
                                 "--splits", "test"], {}, 2, "none.csv' is none of these"),
    ("data-local-file-two-splits", ["data", "--task", "sudoku", "--source", "{tmp}/s.csv", "--out-dir", "{tmp}/d",
                                    "--splits", "train,test"], {"s.csv": "Puzzle,Solution\n"}, 2,
     "a local file holds one split"),
    ("data-local-csv-not-utf8", ["data", "--task", "sudoku", "--source", "{tmp}/s.csv", "--out-dir", "{tmp}/d",
                                 "--splits", "test"], {"s.csv": b"Puzzle,Solution\n\xff,1\n"}, 2,
     "s.csv: not UTF-8 text"),
    ("data-local-csv-short-puzzle", ["data", "--task", "sudoku", "--source", "{tmp}/s.csv", "--out-dir", "{tmp}/d",
                                     "--splits", "test"], {"s.csv": "Puzzle,Solution\n1234,1234341221434321\n"}, 2,
     "row 0: Puzzle must be a string of 16 digits"),
    ("data-local-jsonl-bad-line", ["data", "--task", "countdown", "--source", "{tmp}/c.jsonl", "--out-dir", "{tmp}/d",
                                   "--splits", "test"], {"c.jsonl": jsonl(COUNTDOWN) + "not json\n"}, 2,
     "c.jsonl: line 2: invalid JSON"),
    # --- egspo eval: rows, flags and output location are checked before the (missing) model is loaded
    ("eval-short-sudoku-puzzle", EVAL, {"test.jsonl": jsonl(SUDOKU, SHORT_SUDOKU)}, 2,
     "test.jsonl: line 2: Puzzle must be a string of 16 digits"),
    ("eval-empty-data", EVAL, {"test.jsonl": ""}, 2, "test.jsonl' has no rows"),
    ("eval-non-utf8-data", EVAL, {"test.jsonl": b"\xc3\x28\n"}, 2, "test.jsonl: line 1: not UTF-8 text"),
    ("eval-steps-mismatch", [*EVAL, "--gen-length", "8", "16"], {"test.jsonl": jsonl(SUDOKU)}, 2,
     "--steps needs one value per --gen-length"),
    ("eval-negative-length", [*EVAL, "--gen-length", "-8"], {"test.jsonl": jsonl(SUDOKU)}, 2,
     "--gen-length must be positive integers, got [-8]"),
    ("eval-bad-tag", [*EVAL, "--tag", "novalue"], {"test.jsonl": jsonl(SUDOKU)}, 2, "key=value"),
    ("eval-zero-limit", [*EVAL, "--limit", "0"], {"test.jsonl": jsonl(SUDOKU)}, 2, "--limit must be a positive"),
    ("eval-out-dir-under-a-file", [*EVAL[:-1], "{tmp}/a_file/eval"], {"a_file": "", "test.jsonl": jsonl(SUDOKU)}, 2,
     "cannot write the output {tmp}/a_file/eval/no_such_model"),
    # --- egspo trace
    ("trace-short-sudoku-puzzle", TRACE, {"test.jsonl": jsonl(SHORT_SUDOKU)}, 2, "line 1: Puzzle must be a string"),
    ("trace-zero-n", [*TRACE, "--n", "0"], {"test.jsonl": jsonl(SUDOKU)}, 2, "--n must be in [1, 1]"),
    # --- egspo sft
    ("sft-negative-lr", [a if a != "1e-3" else "-1e-3" for a in SFT], GOOD_TRAIN, 2, "-0.001"),
    ("sft-short-sudoku-puzzle", SFT, {"train.jsonl": jsonl(SUDOKU, SHORT_SUDOKU)}, 2,
     "train.jsonl: line 2: Puzzle must be a string of 16 digits"),
    ("sft-non-utf8-rows", SFT, {"train.jsonl": b'{"Puzzle": "\x80"}\n'}, 2, "train.jsonl: line 1: not UTF-8 text"),
    ("sft-out-under-a-file", [*SFT[:8], "{tmp}/a_file/m", *SFT[9:]], {"a_file": "", **GOOD_TRAIN}, 2,
     "cannot write the output {tmp}/a_file/m"),
    # --- egspo rl
    ("rl-negative-lr", [*RL, "--lr", "-1e-3"], GOOD_TRAIN, 2, "lr is out of range"),
    ("rl-negative-beta", [*RL, "--beta", "-0.5"], GOOD_TRAIN, 2, "beta is out of range"),
    ("rl-one-generation", [*RL, "--num-generations", "1"], GOOD_TRAIN, 2, "num_generations"),
    ("rl-missing-train-file", RL, {}, 2, "train.jsonl"),
    ("rl-short-sudoku-puzzle", RL, {"train.jsonl": jsonl(SUDOKU, SHORT_SUDOKU)}, 2,
     "train.jsonl: line 2: Puzzle must be a string of 16 digits"),
    ("rl-non-utf8-rows", RL, {"train.jsonl": b'{"Puzzle": "\xe9"}\n'}, 2, "train.jsonl: line 1: not UTF-8 text"),
    ("rl-lr-without-value", [*RL, "--lr"], GOOD_TRAIN, 2, "argument --lr: expected one argument"),
    ("rl-lr-not-a-number", [*RL, "--lr", "fast"], GOOD_TRAIN, 2, "argument --lr: invalid float value: 'fast'"),
    ("rl-out-under-a-file", [*RL[:8], "{tmp}/a_file/run", *RL[9:]], {"a_file": "", **GOOD_TRAIN}, 2,
     "cannot write the output {tmp}/a_file/run"),
    # --- egspo report
    ("report-corrupt-metrics", REPORT_ACC, {"metrics": '{"accuracy": 0.5, "cell_'}, 2,
     "test.metrics.json: invalid JSON"),
    ("report-metric-not-a-number", REPORT_ACC, {"metrics": '{"cell_accuracy": "high", "n": 4}'}, 2,
     "test.metrics.json: field 'cell_accuracy' = high is not a fraction in [0, 1]"),
    ("report-metrics-not-an-object", REPORT_ACC, {"metrics": "[0.5]"}, 2,
     "test.metrics.json: expected a JSON object, got list"),
    ("report-missing-metrics", REPORT_ACC, {}, 2, "evaluation metrics file missing"),
    ("report-corrupt-trace", ["report", "trace", "--traces", "{tmp}/tr.json", "--figure", "{tmp}/fig"],
     {"tr.json": '{"task": "sudoku", "samp'}, 2, "tr.json: invalid JSON"),
    # --- egspo gradcheck / build-model / merge / the command line itself
    ("gradcheck-negative-lambda", ["gradcheck", "--out", "{tmp}/g.csv", "--lams", "-1"], {}, 2,
     "lams item is out of range [0, inf): -1.0"),
    ("gradcheck-k-too-large", ["gradcheck", "--out", "{tmp}/g.csv", "--k", "3"], {}, 2, "every k must lie in"),
    ("build-model-negative-size", ["build-model", "--out", "{tmp}/m", "--hidden-size", "-4"], {}, 2,
     "hidden_size must be a positive integer, got -4"),
    ("build-model-heads-do-not-divide", ["build-model", "--out", "{tmp}/m", "--hidden-size", "30", "--num-heads", "4"],
     {}, 2, "hidden_size (30) must be a multiple of num_heads (4)"),
    ("merge-not-an-adapter", ["merge", "--adapter", "{tmp}", "--out", "{tmp}/merged"], {}, 2,
     "no adapter_config.json (not a peft adapter dir)"),
    ("merge-missing-adapter", ["merge", "--adapter", "{tmp}/none", "--out", "{tmp}/merged"], {}, 2, "{tmp}/none"),
    ("unknown-command", ["train-everything"], {}, 2, "invalid choice: 'train-everything'"),
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from egspo.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", hidden_size=32, num_layers=1, num_heads=2,
                            intermediate_size=32, max_len=64, seed=0)


def _fill(text, tmp: Path, model: Path | None):
    if isinstance(text, bytes):
        return text
    return text.replace("{tmp}", str(tmp)).replace("{model}", str(model))


def test_the_table_has_at_least_40_distinct_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line_and_exit_status(case, tmp_path, request, capsys):
    name, argv, files, status, fragment = case
    model = request.getfixturevalue("tiny_model") if any("{model}" in a for a in argv) else None
    for fname, content in files.items():
        if fname == "metrics":
            metrics_grid(tmp_path, content)
        else:
            (tmp_path / fname).write_bytes(_fill(content, tmp_path, model) if isinstance(content, bytes)
                                           else _fill(content, tmp_path, model).encode())
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = [_fill(a, tmp_path, model) for a in argv]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == status, err
    message = err.strip().splitlines()[-1]
    command = args[0] if args[0] in cli.COMMANDS else None
    assert message.startswith(f"egspo {command}: error: " if command else "egspo: error: "), err
    assert _fill(fragment, tmp_path, model) in message, err
    assert "Traceback" not in err
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, f"{name} left output behind: {sorted(set(after) - set(before))}"


def test_debug_flag_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text("")
    args = [_fill(a, tmp_path, None) for a in GRADE]
    assert cli.main(["--debug", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("(the file is empty)")


def test_an_unexpected_error_is_one_line_with_exit_1(tmp_path, capsys, monkeypatch):
    import egspo.evaluation.grading as grading

    def broken(*_args, **_kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(grading, "grade_file", broken)
    (tmp_path / "in.jsonl").write_text(jsonl(graded(SUDOKU)))
    assert cli.main([_fill(a, tmp_path, None) for a in GRADE]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["egspo grade: error: RuntimeError: something inside broke (an internal error: rerun with --debug "
                   "for the traceback)"]


@pytest.mark.parametrize("value", ["-1e-3", "-.5", "-2", "-1E+2", "-inf"])
def test_negative_numbers_are_flag_values(value):
    parser = cli.ArgumentParser()
    parser.add_argument("--lr", type=float)
    parser.add_argument("--n", type=int, nargs="+")
    assert parser.parse_args(["--lr", value]).lr == float(value)
    assert parser.parse_args(["--n", "-3", "4"]).n == [-3, 4]


# ---- a full disk: a real 96 KiB tmpfs in a private mount namespace -------------------------------------------------

DISK_FULL = """
import sys
from egspo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _in_full_tmpfs(tmp_path: Path, argv: list[str]) -> subprocess.CompletedProcess:
    mount = tmp_path / "small"
    mount.mkdir()
    script = (f"mount -t tmpfs -o size=96k tmpfs {mount} && cd {mount} && "
              f"{sys.executable} -c '{DISK_FULL}' {' '.join(argv)}; status=$?; "
              f"echo LEFT: $(ls -A {mount}); exit $status")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env,
                          timeout=300)


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -rm and tmpfs mounts (user namespaces)")
@pytest.mark.parametrize("argv, target", [
    (["build-model", "--out", "model"], "model"),
    (["data", "--task", "sudoku", "--source", "tiny", "--out-dir", "d", "--n-train", "6000"], "d/train.jsonl"),
])
def test_a_full_disk_names_the_path_and_leaves_nothing(tmp_path, argv, target):
    result = _in_full_tmpfs(tmp_path, argv)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"egspo {argv[0]}: error: no space left on the device writing {target} "), result.stderr
    assert result.stdout.strip().splitlines()[-1] == "LEFT:", result.stdout  # no partial output, no lock file


# ---- the workflow config: Snakemake validates it (schema + egspo.workflow checks) before any job ------------------

WORKFLOW_CASES = [
    ("workflow-negative-lr", ["rl={lr: -1e-3}"], "-0.001 is less than the minimum of 0"),
    ("workflow-negative-seed", ["seeds=[-1]"], "-1 is less than the minimum of 0"),
    ("workflow-unknown-task", ["tasks=[tetris]"], "'tetris' is not one of"),
    ("workflow-misspelt-key", ["rl={lrr: 0.1}"], "'lrr' was unexpected"),
    ("workflow-zero-length", ["eval={gen_lengths: [0]}"], "0 is less than the minimum of 1"),
    ("workflow-task-eval-key", ["task_settings={countdown: {eval: {splits: [test]}}}"], "'splits' was unexpected"),
    ("workflow-negative-sft-steps", ["sft={max_steps: -5}"], "-5 is less than the minimum of 1"),
]


@pytest.mark.parametrize("case", [pytest.param(c, marks=() if i == 0 else pytest.mark.slow)
                                  for i, c in enumerate(WORKFLOW_CASES)], ids=[c[0] for c in WORKFLOW_CASES])
def test_bad_workflow_config_stops_snakemake_before_any_job(case, tmp_path):
    _, config, fragment = case
    snakemake = Path(sys.executable).with_name("snakemake")
    result = subprocess.run([str(snakemake), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                             "--cores", "1", "-n", "--config", *config], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert fragment in result.stdout + result.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()
