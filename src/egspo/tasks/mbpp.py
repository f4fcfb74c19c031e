"""MBPP (sanitized test split, 257 problems): data, the d1-style code prompt with the test asserts, and pass@1.

Rows keep their original schema. The sanitized config has ``prompt`` (the description), ``code``, ``test_imports``,
``test_list``; the full config (and ``../shared/data/mbpp_sample.jsonl``) has ``text``, ``code``,
``test_setup_code``, ``test_list``, ``challenge_test_list``. Both are read. Sources: ``"hub"``
(``google-research-datasets/mbpp``, config ``sanitized``, the requested split) or a local file.

Prompt: the original MBPP wording ("You are an expert Python programmer, and here is your task: ... Your code should
pass these tests:" followed by the asserts of ``test_list``) inside the d1 reasoning/answer format.

Grading: the extracted code runs as the candidate; every assert of ``test_list`` is one test, run after the
candidate with ``test_imports`` / ``test_setup_code`` as trusted set-up. The functions the asserts call that the
reference ``code`` defines are declared entry points (they may shadow builtins). Reward = fraction of asserts passed
+ format bonus; grade = all asserts pass (``challenge_test_list`` is not used, as in the standard protocol).
"""

from __future__ import annotations

from typing import Any

from egspo.sandbox.runner import Program
from egspo.tasks.base import Row
from egspo.tasks.code import CodeTask, called_names, code_prompt, defined_names, extract_code, require
from egspo.tasks.sources import check_split, hub_rows, is_path_source, read_table

HUB_ID = "google-research-datasets/mbpp"
HUB_CONFIG = "sanitized"


def description(row: Row) -> str:
    text = row.get("prompt", row.get("text"))
    if not isinstance(text, str):
        raise ValueError(f"mbpp row {row.get('task_id')!r} has neither 'prompt' (sanitized) nor 'text' (full)")
    return text


def test_setup(row: Row) -> str:
    imports = row.get("test_imports") or []
    if isinstance(imports, str):
        imports = [imports]
    return "\n".join([*imports, row.get("test_setup_code") or ""]).strip() + "\n"


def entry_points(row: Row) -> tuple[str, ...]:
    called = set().union(*(called_names(t) for t in row["test_list"])) if row["test_list"] else set()
    return tuple(sorted(called & defined_names(row.get("code") or "")))


class MBPPTask(CodeTask):
    name = "mbpp"
    required_fields = ("test_list",)

    def load(self, split: str, source: str = "hub", **kwargs: Any) -> list[Row]:
        check_split(split)
        if source == "tiny":
            raise ValueError("mbpp has no tiny-preset data (the tiny preset uses sudoku and countdown)")
        rows = read_table(source) if is_path_source(source) else hub_rows(HUB_ID, HUB_CONFIG, split)
        for i, row in enumerate(rows):
            if "test_list" not in row or not isinstance(row["test_list"], list) or not row["test_list"]:
                raise ValueError(f"mbpp {source} row {i}: field 'test_list' missing or empty")
            description(row)
        return rows

    def prompt(self, row: Row, style: str = "d1", tokenizer: Any = None) -> str:
        require(row, ("test_list",), self.name)
        tests = "\n".join(row["test_list"])
        problem = (f"You are an expert Python programmer, and here is your task: {description(row).strip()} "
                   f"Your code should pass these tests:\n\n{tests}")
        return code_prompt(problem, style, tokenizer)

    def program(self, completion: str, row: Row) -> Program:
        require(row, self.required_fields, self.name)
        if not row["test_list"]:
            raise ValueError(f"mbpp row {row.get('task_id')!r}: empty test_list")
        return Program(code=extract_code(completion), tests=tuple(row["test_list"]), test_setup=test_setup(row),
                       entry_points=entry_points(row))


TASK = MBPPTask()
