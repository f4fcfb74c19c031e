import json
import random
import sys

import pytest

from egspo.evaluation import grading
from egspo.cli import main
from egspo.tasks.authors_compat import compat_grade
from egspo.tasks.authors_compat.gsm8k import authors_soft_format

SUDOKU = {"Puzzle": "3102200002100320", "Solution": "3142243142131324"}


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


def test_grade_command_writes_rows_and_prints_accuracy(tmp_path, capsys):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(inp, [{**SUDOKU, "completion": "<answer>3142243142131324</answer>"},
                 {**SUDOKU, "completion": "<answer>3122243142131324</answer>"},
                 {**SUDOKU, "completion": "no answer"}, ""])
    assert main(["grade", "--task", "sudoku", "--input", str(inp), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in rows] == [True, False, False]
    assert [r["reward"] for r in rows] == [1.0, 0.875, 0.0]
    assert [r["cell_accuracy"] for r in rows] == [1.0, 0.875, 0.0]
    assert rows[0]["Puzzle"] == SUDOKU["Puzzle"]
    line = capsys.readouterr().out
    assert "task=sudoku n=3 accuracy=0.3333" in line and "cell_accuracy=0.6250" in line


def test_values_json_cannot_write_never_abort_the_file(tmp_path):
    # a legitimate authors-compat Countdown value with 6,021 digits (more than Python writes as decimal text) and a
    # completion holding a lone surrogate (valid in JSON text, not in UTF-8): every row is written
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    huge = {"numbers": [2, 20000, 1], "target": 5, "completion": "2**20000*1"}
    surrogate = {"numbers": [2, 3, 4], "target": 5, "completion": "<answer>2*4-3</answer>\ud800"}
    _write(inp, [json.dumps(huge), json.dumps(surrogate)])
    for compat in (["--compat", "authors"], []):
        assert main(["grade", "--task", "countdown", "--input", str(inp), "--output", str(out), *compat]) == 0
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == 2 and rows[1]["completion"] == "<answer>2*4-3</answer>\\ud800"
    assert compat_grade("countdown", huge["completion"], huge)["eval_value"] == 2 ** 20000
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[1]["correct"] is True  # our mode grades the answer block; the surrogate lies outside it
    main(["grade", "--task", "countdown", "--input", str(inp), "--output", str(out), "--compat", "authors"])
    value = json.loads(out.read_text(encoding="utf-8").splitlines()[0])["eval_value"]
    mantissa, exponent = value.split("e+")
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        digits = str(2 ** 20000)  # an independent reading of the same number
    finally:
        sys.set_int_max_str_digits(limit)
    assert int(exponent) == len(digits) - 1 == 6020 and abs(float(mantissa) - int(digits[:8]) / 1e7) < 1e-6


def test_json_safe_replaces_only_what_cannot_be_written():
    from egspo.tasks.answers import json_safe

    assert json_safe({"a": [1, 2.5, None, True, "x"], "b": (1,)}) == {"a": [1, 2.5, None, True, "x"], "b": [1]}
    assert json_safe(-(10 ** 5000)) == "-1.000000e+5000" and json_safe(10 ** 4000) == 10 ** 4000
    assert json_safe("a\udc80b") == "a\\udc80b" and json_safe("ünï") == "ünï"


@pytest.mark.parametrize(
    "lines, message",
    [
        ([json.dumps({**SUDOKU, "completion": "x"}), "{not json"], "line 2: invalid JSON"),
        ([json.dumps(SUDOKU)], "line 1: missing field 'completion'"),
        ([json.dumps({"Puzzle": SUDOKU["Puzzle"], "completion": "x"})], "line 1: missing field 'Solution'"),
        ([json.dumps({**SUDOKU, "completion": 5})], "line 1: field 'completion' must be a string"),
        (["[1, 2]"], "line 1: expected a JSON object"),
    ],
)
def test_malformed_input_fails_with_line_and_field_and_leaves_no_output(tmp_path, capsys, lines, message):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(inp, lines)
    assert main(["grade", "--task", "sudoku", "--input", str(inp), "--output", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [inp]


def test_existing_output_survives_a_failed_run(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    out.write_text("previous\n")
    _write(inp, ["{oops"])
    assert main(["grade", "--task", "sudoku", "--input", str(inp), "--output", str(out)]) == 2
    assert out.read_text() == "previous\n"


@pytest.mark.timeout(300)  # a hang guard (fails only if this never finishes), not a speed test
def test_compat_mode_output_is_strict_json_and_reports_hangs(tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(inp, [{"numbers": [9, 9, 9], "target": 1, "completion": "<answer>9**9**9</answer>"},
                 {"numbers": [9, 9, 9], "target": 1, "completion": "<answer>9/9*9</answer>"}])
    assert main(["grade", "--task", "countdown", "--compat", "authors", "--input", str(inp),
                 "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["reward"] == 0.0 and rows[0]["correct"] is False and "hang" in rows[0]["authors_failure"]
    assert rows[1]["reward"] == 0.1  # the authors' reward: numbers fine, 9/9*9 = 9 != 1
    gsm = tmp_path / "g.jsonl"
    _write(gsm, [{"answer": "#### 5", "completion": "<answer>\\boxed{inf}</answer>"}])
    assert main(["grade", "--task", "gsm8k", "--compat", "authors", "--input", str(gsm), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["eval_extracted"] == "inf"  # no bare Infinity in the JSON


def test_compat_rejects_code_tasks_and_unknown_modes():
    with pytest.raises(ValueError, match="compat"):
        compat_grade("humaneval", "x", {})
    with pytest.raises(ValueError, match="compat"):
        grading.grade_rows("sudoku", [], compat="other")


def test_compat_scores_crashes_as_zero():
    result = compat_grade("math500", "<answer>\\boxed{5}</answer>", {"solution": "\\boxed{5", "answer": "5"})
    assert result["reward"] == 0.0 and "TypeError" in result["authors_failure"]
    result = compat_grade("sudoku", "<answer>1</answer>", {"Puzzle": "31", "Solution": "3142243142131324"})
    assert result["reward"] == 0.0 and result["correct"] is False and "IndexError" in result["authors_failure"]


@pytest.mark.timeout(300)  # a hang guard (fails only if this never finishes), not a speed test
def test_compat_soft_format_linear_version_equals_the_regex_and_is_fast():
    import re

    pattern = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>")
    pieces = ["<reasoning>", "</reasoning>", "<answer>", "</answer>", " ", "\n", "x"]
    rng = random.Random(1)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        assert authors_soft_format(text) == bool(pattern.match(text)), text
    for task, row in [("gsm8k", {"answer": "#### 5"}), ("math500", {"solution": "\\boxed{5}", "answer": "5"}),
                      ("countdown", {"numbers": [1, 2, 3], "target": 6}), ("sudoku", SUDOKU)]:
        for text in ["<reasoning>" + "</reasoning> <answer>" * 20_000, "<answer>" * 100_000, "1" * 1_000_000,
                     "\\boxed{" * 20_000, "</answer>" * 100_000]:
            compat_grade(task, text, row)


def test_summary_and_library_entry_point():
    graded = grading.grade_rows("countdown", [{"numbers": [1, 2, 3], "target": 6, "completion": "<answer>1+2+3</answer>"},
                                              {"numbers": [1, 2, 3], "target": 6, "completion": "<answer>1+2</answer>"}])
    assert grading.summarize(graded) == {"n": 2, "accuracy": 0.5, "mean_reward": pytest.approx(0.55)}
    assert grading.summarize([]) == {"n": 0, "accuracy": 0.0, "mean_reward": 0.0}


def test_linear_compat_parsers_equal_the_reference_regexes():
    """The authors' regexes are quadratic on adversarial text; our linear versions must match them exactly."""
    import re

    from egspo.tasks.authors_compat import common, countdown, gsm8k, sudoku

    rng = random.Random(2)
    pieces = ["<answer>", "</answer>", "<|eot_id|>", "```", "\\boxed{", "}", "=", "1234", "5678", "9", " ", "\n",
              "x", "+", "(", ")", "."]
    sudoku_patterns = [r"<answer>.*?```\s*([\d\s]+)```", r"<answer>(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)",
                       r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)", r".*?(\d{16})\s*</answer>",
                       r"\b(\d{16})\b"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        assert common.tag_blocks(text) == re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL), text
        m = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
        assert common.first_block(text) == (m.group(1) if m else None), text
        assert gsm8k._boxed_braces_same_line(text) == re.findall(r"\\boxed{(.*?)}", text), text
        expected = ""
        for pattern in sudoku_patterns:
            m = re.search(pattern, text, re.DOTALL)
            if m and m.group(1).strip():
                expected = re.sub(r"\s", "", m.group(1).strip())
                break
        assert sudoku.sudoku_eval_extract(text) == expected, text
        m = re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", text)
        no_box = text.replace("\\boxed", "")
        m = re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", no_box)
        assert countdown.countdown_eval_extract(no_box) == (m.group(1).strip() if m else no_box), no_box
