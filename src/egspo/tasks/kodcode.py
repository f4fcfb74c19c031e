"""KodCode-Light-RL-10K: the code RL training data (10k synthetic problems with pytest unit tests).

Rows keep the original schema: ``question``, ``solution`` (reference code), ``test`` (a pytest module that does
``from solution import ...``), ``test_info`` (list of ``{function_name, function_declaration, docstring,
parameter_list}``), plus ``question_id``, ``subset``, ``style``, ``gpt_difficulty`` and the pass statistics. The hub
dataset has only a ``train`` split; ``validation`` is carved from it (``n_validation`` rows, seeded), disjoint from
``train``; there is no test split (evaluation uses HumanEval and MBPP).

Prompt: the question, the expected function declaration(s) from ``test_info`` when present, in the d1 format.
Grading: the extracted code is importable as module ``solution``; the ``test`` module runs under pytest in the
sandbox; every collected test item is one test. Reward = fraction of tests passed + format bonus (DESIGN §4:
"code = fraction of unit tests passed (+ format)"); grade = all tests pass.
"""

from __future__ import annotations

from typing import Any

from egspo.sandbox.runner import Program
from egspo.tasks.base import Row
from egspo.tasks.code import CodeTask, code_prompt, extract_code, require
from egspo.tasks.sources import carve_validation, check_split, hub_rows, is_path_source, read_table

HUB_ID = "KodCode/KodCode-Light-RL-10K"
HUB_VALIDATION_SIZE = 200


def declarations(row: Row) -> list[str]:
    info = row.get("test_info") or []
    if isinstance(info, dict):  # a single entry stored as an object
        info = [info]
    return [d["function_declaration"].strip() for d in info
            if isinstance(d, dict) and isinstance(d.get("function_declaration"), str) and d["function_declaration"]]


class KodCodeTask(CodeTask):
    name = "kodcode"
    required_fields = ("test",)
    prompt_fields = ("question",)
    timeout_s = 15.0  # pytest start-up inside the sandbox

    def load(self, split: str, source: str = "hub", **kwargs: Any) -> list[Row]:
        check_split(split)
        if source == "tiny":
            raise ValueError("kodcode has no tiny-preset data (the tiny preset uses sudoku and countdown)")
        if split == "test":
            raise ValueError("kodcode has no test split (it is training data; evaluate on humaneval / mbpp)")
        rows = read_table(source) if is_path_source(source) else hub_rows(HUB_ID, None, "train")
        for i, row in enumerate(rows):
            for name in ("question", "test"):
                if not isinstance(row.get(name), str) or not row[name].strip():
                    raise ValueError(f"kodcode {source} row {i}: field {name!r} missing or empty")
        train, validation = carve_validation(rows, kwargs.get("n_validation", min(HUB_VALIDATION_SIZE, len(rows) // 10)),
                                             kwargs.get("seed", 0))
        return train if split == "train" else validation

    def prompt(self, row: Row, style: str = "d1", tokenizer: Any = None) -> str:
        require(row, ("question",), self.name)
        problem = row["question"].strip()
        decls = declarations(row)
        if decls:
            problem += "\n\nUse this function declaration:\n" + "\n".join(decls)
        return code_prompt(problem, style, tokenizer)

    def program(self, completion: str, row: Row) -> Program:
        require(row, self.required_fields, self.name)
        return Program(code=extract_code(completion), test_module=row["test"])


TASK = KodCodeTask()
