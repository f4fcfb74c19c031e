"""GSM8K: data, the d1 prompt, the d1 reward composition with its intended semantics, and the numeric grader.

Rows use the original schema: ``question`` and ``answer`` (worked solution ending in ``#### <number>``). The gold is
the number after the last ``####`` (thousands separators removed; negatives allowed). There is no tiny style.

Answer extraction (intended semantics; docs/graders.md lists where this differs from the authors' code): the answer is
the last closed ``<answer>`` block, with one wrapping ``\\boxed{}`` removed and Unicode decimal digits read as ASCII.
It is *numeric* when it contains exactly one number (optional sign, digits with optional ``,`` thousands groups, optional
decimals and exponent; text such as units or ``$`` around it is allowed), and *correct* when that number equals the
gold exactly (rational comparison: ``18.0`` = ``18``, ``2,125`` = ``2125``).

Reward (the d1 composition, max 4.0):

    xml     = 0.125 * #{tags among "<reasoning>\\n", "\\n</reasoning>\\n", "\\n<answer>\\n", "\\n</answer>" occurring
              exactly once} - 0.001 * #non-space characters after the last "</answer>", floored at 0
    soft    = 0.5 if the text is  <reasoning> ... </reasoning> <answer> ... </answer>  (any whitespace, multi-line)
    strict  = 0.5 if the text is exactly "<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>" (+ whitespace),
              one block each, multi-line contents allowed
    integer = 0.5 if the whole answer is one integer (sign and thousands separators allowed)
    correct = 2.0 if correct
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from egspo.tasks.answers import SYSTEM_PROMPT, ascii_digits, chat_prompt, check_style, last_answer, unbox
from egspo.tasks.base import Row, Task
from egspo.tasks.sources import split_rows

HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"
HUB_VALIDATION_SIZE = 256

# exponents are limited to 3 digits so that no answer can make Fraction() build a huge integer
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][+-]?\d{1,3}(?!\d))?")
_INTEGER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")
_XML_TAGS = ("<reasoning>\n", "\n</reasoning>\n", "\n<answer>\n", "\n</answer>")
_AFTER_REASONING = re.compile(r"\s*<answer>")
_NO_TAG = r"(?:(?!</?(?:reasoning|answer)>).)*"  # any text (newlines included) without a reasoning/answer tag
_STRICT = re.compile(rf"<reasoning>\n{_NO_TAG}\n</reasoning>\n<answer>\n{_NO_TAG}\n</answer>\s*", re.DOTALL)


def gold_number(answer: str) -> Fraction:
    """The number after the last ``####`` of a GSM8K solution (ValueError if there is none)."""
    if not isinstance(answer, str) or "####" not in answer:
        raise ValueError(f"GSM8K answer has no '#### <number>' line: {str(answer)[-80:]!r}")
    text = answer.rsplit("####", 1)[1].strip()
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"GSM8K gold {text!r} is not a number") from None


def _clean_answer(completion: str) -> str | None:
    block = last_answer(completion)
    if block is None:
        return None
    return ascii_digits(unbox(block)).replace("\u2212", "-").strip()


def parse_number(text: str) -> Fraction | None:
    """The single number in ``text`` (None if it has no number or more than one)."""
    found = _NUMBER.findall(text)
    if len(found) != 1:
        return None
    try:
        return Fraction(found[0].replace(",", ""))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def soft_format(text: str) -> bool:
    """``re.match(r"\\s*<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>", text, re.DOTALL)``, decided in linear
    time (the regex backtracks quadratically on text with many ``</reasoning>`` and no ``</answer>``)."""
    if not text.lstrip().startswith("<reasoning>"):
        return False
    last_close = text.rfind("</answer>")
    pos = text.find("<reasoning>") + len("<reasoning>")
    while (pos := text.find("</reasoning>", pos)) >= 0:
        pos += len("</reasoning>")
        m = _AFTER_REASONING.match(text, pos)
        if m:
            return last_close >= m.end()
    return False


def reward_components(completion: str, gold: Fraction) -> dict[str, float]:
    """The five d1 reward terms with their intended semantics (see the module docstring)."""
    answer = _clean_answer(completion)
    xml = sum(0.125 for tag in _XML_TAGS if completion.count(tag) == 1)
    if "</answer>" in completion:
        xml -= 0.001 * len(completion.rsplit("</answer>", 1)[1].strip())
    value = parse_number(answer) if answer is not None else None
    return {
        "xmlcount_reward": max(0.0, xml),
        "soft_format_reward": 0.5 if soft_format(completion) else 0.0,
        "strict_format_reward": 0.5 if _STRICT.fullmatch(completion) else 0.0,
        "int_reward": 0.5 if answer is not None and _INTEGER.fullmatch(answer) else 0.0,
        "correctness_reward": 2.0 if value is not None and value == gold else 0.0,
    }


class GSM8KTask(Task):
    name = "gsm8k"
    required_fields = ("answer",)

    def load(self, split: str, source: str = "hub", **kwargs: Any) -> list[Row]:
        rows = split_rows("gsm8k", split, source, test=(HUB_ID, HUB_CONFIG), train=(HUB_ID, HUB_CONFIG),
                          n_validation=kwargs.get("n_validation", HUB_VALIDATION_SIZE), seed=kwargs.get("seed", 0))
        for i, row in enumerate(rows):
            for field in ("question", "answer"):
                if field not in row:
                    raise ValueError(f"gsm8k {source} row {i}: missing field {field!r}")
            gold_number(row["answer"])  # every row must have a numeric gold
        return rows

    def prompt(self, row: Row, style: str = "d1", tokenizer: Any = None) -> str:
        if check_style(style) == "tiny":
            raise ValueError("gsm8k has no tiny prompt style (the tiny preset uses sudoku and countdown)")
        return chat_prompt(SYSTEM_PROMPT + "\n\n" + row["question"], tokenizer)

    def target(self, row: Row, style: str = "tiny") -> str:
        """The original worked solution in the d1 format (``style="d1"``); there is no tiny style."""
        if check_style(style) == "tiny":
            raise ValueError("gsm8k has no tiny style")
        reasoning, _ = row["answer"].rsplit("####", 1)
        reasoning = re.sub(r"<<[^>]*>>", "", reasoning).strip()
        gold = gold_number(row["answer"])
        return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{_format(gold)}\n</answer>"

    def reward(self, completion: str, row: Row) -> float:
        return float(sum(reward_components(completion, gold_number(row["answer"])).values()))

    def grade(self, completion: str, row: Row) -> dict[str, Any]:
        parts = reward_components(completion, gold_number(row["answer"]))
        answer = _clean_answer(completion)
        value = parse_number(answer) if answer is not None else None
        return {"correct": parts["correctness_reward"] > 0, "reward": float(sum(parts.values())),
                "extracted": None if value is None else _format(value), "reward_components": parts}


def _format(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else str(float(value))


TASK = GSM8KTask()
