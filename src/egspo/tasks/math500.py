"""MATH-500: data, the d1 prompt, reward and a math-verify grader.

Rows use the MATH-500 schema: ``problem``, ``solution``, ``answer`` (plus ``subject``, ``level``, ``unique_id``).
Training rows come from the MATH training problems the d1 family uses (``ankner/math-500``, split ``train``); where a
row has no ``answer`` field it is the last ``\\boxed{}`` of its ``solution``. There is no tiny style.

Answer extraction (intended semantics; see docs/graders.md): the final answer is the last ``\\boxed{...}`` inside the
last closed ``<answer>`` block, or that block's whole text if it has no box (an unclosed box: no answer); without a closed answer block, the last
``\\boxed{...}`` of the completion (the prompt asks for the box); otherwise there is no answer. Equivalence with the
gold ``answer`` is decided by ``math_verify.verify(parse("\\boxed{gold}"), parse("\\boxed{prediction}"))`` (no hand-written
normaliser). Reward: format 0.5 when the last closed answer block contains a non-empty ``\\boxed{}``, + 2.0 when
correct.

Every check runs in a worker process (:mod:`egspo.tasks.verify_worker`) that the caller waits for at most
``MATH_VERIFY_TIMEOUT`` seconds, from any thread (math-verify's own ``signal.alarm`` works only in the main thread and
cannot stop a long C-level operation such as a huge integer power); an unfinished check counts as incorrect.
"""

from __future__ import annotations

import re
from typing import Any

from egspo.tasks.answers import SYSTEM_PROMPT, boxed_contents, chat_prompt, check_style, last_answer, unbox
from egspo.tasks.base import Row, Task
from egspo.tasks.sources import split_rows

TEST_HUB_ID = "HuggingFaceH4/MATH-500"
TRAIN_HUB_ID = "ankner/math-500"
HUB_VALIDATION_SIZE = 256
MATH_VERIFY_TIMEOUT = 5
#: predictions longer than this are not final answers (and would make math-verify slow and its logs huge)
MAX_ANSWER_CHARS = 1000

D1_INSTRUCTIONS = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. \nRespond in the format specified above.\n\n"
)


def extract_prediction(completion: str) -> str | None:
    """The final-answer text (see the module docstring), without its box; ``None`` if there is none."""
    block = last_answer(completion)
    if block is not None:
        boxes = boxed_contents(block)
        if not boxes and re.search(r"\\(?:boxed|fbox)\s*\{", block):
            return None  # a box that never closes is not an answer
        text = unbox(boxes[-1]) if boxes else block
    else:
        boxes = boxed_contents(completion)
        if not boxes:
            return None
        text = unbox(boxes[-1])
    text = text.strip()
    return text if text else None


def is_equivalent(gold: str, prediction: str | None) -> bool:
    """math-verify equivalence of ``prediction`` to ``gold``; never raises, never blocks longer than the timeout."""
    from egspo.tasks.verify_worker import verify_equivalent

    if prediction is None or len(prediction) > MAX_ANSWER_CHARS:
        return False
    return verify_equivalent(gold, prediction, MATH_VERIFY_TIMEOUT)


def has_boxed_answer(completion: str) -> bool:
    block = last_answer(completion)
    return block is not None and any(b.strip() for b in boxed_contents(block))


def normalize(row: Row, where: str) -> Row:
    if "answer" in row:
        return row
    boxes = boxed_contents(str(row.get("solution", "")), commands=("\\boxed",))
    if not boxes:
        raise ValueError(f"{where}: missing field 'answer' and no \\boxed{{}} in 'solution'")
    return {**row, "answer": unbox(boxes[-1])}


class Math500Task(Task):
    name = "math500"
    required_fields = ("answer",)
    prompt_fields = ("problem",)

    def check_row(self, row: Row, where: str, for_prompt: bool = True) -> Row:
        return super().check_row(normalize(row, where), where, for_prompt)

    def load(self, split: str, source: str = "hub", **kwargs: Any) -> list[Row]:
        rows = split_rows("math500", split, source, test=(TEST_HUB_ID, None), train=(TRAIN_HUB_ID, None),
                          n_validation=kwargs.get("n_validation", HUB_VALIDATION_SIZE), seed=kwargs.get("seed", 0))
        out = []
        for i, row in enumerate(rows):
            if "problem" not in row:
                raise ValueError(f"math500 {source} row {i}: missing field 'problem'")
            out.append(normalize(row, f"math500 {source} row {i}"))
        return out

    def prompt(self, row: Row, style: str = "d1", tokenizer: Any = None) -> str:
        if check_style(style) == "tiny":
            raise ValueError("math500 has no tiny prompt style (the tiny preset uses sudoku and countdown)")
        return chat_prompt(SYSTEM_PROMPT + "\n\n" + D1_INSTRUCTIONS + row["problem"], tokenizer)

    def target(self, row: Row, style: str = "tiny") -> str:
        if check_style(style) == "tiny":
            raise ValueError("math500 has no tiny style")
        return f"<reasoning>\n{row.get('solution', '').strip()}\n</reasoning>\n<answer>\n\\boxed{{{row['answer']}}}\n</answer>"

    def reward(self, completion: str, row: Row) -> float:
        return self.grade(completion, row)["reward"]

    def grade(self, completion: str, row: Row) -> dict[str, Any]:
        prediction = extract_prediction(completion)
        correct = is_equivalent(str(row["answer"]), prediction)
        fmt = 0.5 if has_boxed_answer(completion) else 0.0
        return {"correct": correct, "reward": fmt + (2.0 if correct else 0.0), "extracted": prediction,
                "reward_components": {"format_reward": fmt, "correctness_reward": 2.0 if correct else 0.0}}


TASK = Math500Task()
