"""GSM8K: data, the d1 prompt, the d1 reward composition with its intended semantics, and the numeric grader.

Rows use the original schema: ``question`` and ``answer`` (worked solution ending in ``#### <number>``). The gold is
the number after the last ``####`` (thousands separators removed; negatives allowed). There is no tiny style.

Answer extraction (intended semantics; docs/graders.md lists where this differs from the authors' code): the answer is
the last closed ``<answer>`` block, with one wrapping ``\\boxed{}`` removed and Unicode decimal digits read as ASCII.
It is read as a careful human reads a number (:func:`normalize_answer`, :func:`parse_number`): thousands groups
separated by ``,``, ``{,}``, ``\\,``, a space, a thin or no-break space (``1 000 000``, ``1{,}000``); a minus written
``-``, ``−`` (U+2212) or ``–`` (en dash), also with a space before the digits at the start (``- 10``) or before ``$``
(``-$10``); unit exponents (``ft^2``, ``\\text{m}^{3}``) are part of the unit, not numbers; a number followed by
``thousand`` / ``million`` / ``billion`` / ``trillion`` is scaled (``1.45 million`` = 1450000). It is *numeric* when,
so read, it holds one number, or several that all have the same value (a final number restated in a sentence,
``18. She earns 18 dollars``); text such as units or ``$`` around it is allowed. It is *correct* when that number
equals the gold exactly (rational comparison: ``18.0`` = ``18``, ``2,125`` = ``2125``).

Reward (the d1 composition, max 4.0):

    xml     = 0.125 * #{tags among "<reasoning>\\n", "\\n</reasoning>\\n", "\\n<answer>\\n", "\\n</answer>" occurring
              exactly once} - 0.001 * #non-space characters after the last "</answer>", floored at 0
    soft    = 0.5 if the text is  <reasoning> ... </reasoning> <answer> ... </answer>  (any whitespace, multi-line)
    strict  = 0.5 if the text is exactly "<reasoning>\\n...\\n</reasoning>\\n<answer>\\n...\\n</answer>" (+ whitespace),
              one block each, multi-line contents allowed
    integer = 0.5 if the whole (normalised) answer is one integer (sign and thousands separators allowed)
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
_SCALE = re.compile(r"\s*(thousand|million|billion|trillion)\b", re.IGNORECASE)
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
# thousands groups with one consistent separator: {,} / \, / space / thin space / narrow or plain no-break space
_SPACED_GROUPS = re.compile(r"(?<![\d.,])\d{1,3}(\{,\}|\\,|[ \u2009\u202f\u00a0])\d{3}(?:\1\d{3})*(?![\d])")
_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2012": "-", "\ufe63": "-", "\uff0d": "-"})
_SPACED_SIGN = re.compile(r"(^|[(=:$])(\s*)([+-])\s+(?=\d)")
_SIGN_BEFORE_DOLLAR = re.compile(r"([+-])\s*\\?\$\s*(?=\d)")
_UNIT_EXPONENT = re.compile(r"(?<=[A-Za-z}])\s*\^\s*(?:\{\s*[+-]?\d+\s*\}|[+-]?\d+)")
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


def normalize_answer(text: str) -> str:
    """``text`` with every thousands separator written ``,``, every minus written ``-`` and attached to its digits
    where it is a sign (``- 10``, ``-$10``), and unit exponents (``ft^2``) removed."""
    text = ascii_digits(text).translate(_MINUS_SIGNS)
    text = _SPACED_GROUPS.sub(lambda m: m.group(0).replace(m.group(1), ","), text)
    text = _SIGN_BEFORE_DOLLAR.sub(r"\1", text)
    text = _SPACED_SIGN.sub(r"\1\2\3", text)
    return _UNIT_EXPONENT.sub("", text).strip()


def _clean_answer(completion: str) -> str | None:
    block = last_answer(completion)
    if block is None:
        return None
    return normalize_answer(unbox(block))


def parse_number(text: str) -> Fraction | None:
    """The number ``text`` (already :func:`normalize_answer`-ed) states: its one number, or the common value of all
    its numbers (a restated final number); a number followed by a scale word is scaled. None when ``text`` has no
    number or numbers of different values."""
    values = set()
    for m in _NUMBER.finditer(text):
        try:
            value = Fraction(m.group(0).replace(",", ""))
        except (ValueError, ZeroDivisionError, OverflowError):
            return None
        scale = _SCALE.match(text, m.end())
        values.add(value * _SCALES[scale.group(1).lower()] if scale else value)
    return values.pop() if len(values) == 1 else None


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
    prompt_fields = ("question",)

    def check_row(self, row: Row, where: str, for_prompt: bool = True) -> Row:
        row = super().check_row(row, where, for_prompt)
        try:
            gold_number(row["answer"])
        except ValueError as exc:
            raise ValueError(f"{where}: field 'answer': {exc}") from None
        return row

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
