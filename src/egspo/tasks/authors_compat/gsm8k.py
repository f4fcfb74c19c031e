"""GSM8K as the authors score it: the five training rewards of ``reward_func.py`` (XML count, soft and strict
format, integer answer, correctness) summed in the trainer's order, and ``parse_gsm_answers`` for eval correctness."""

from __future__ import annotations

import bisect
import re
from typing import Any

from egspo.tasks.authors_compat.common import Row, first_block


def _xml_answer(text: str) -> str:
    # the text after the LAST "<answer>" up to the next "</answer>" (or the end)
    return text.split("<answer>")[-1].split("</answer>")[0].strip()


def _hash_answer(text: str) -> str | None:
    return text.split("####")[1].strip() if "####" in text else None


def _count_xml(text: str) -> float:
    count = 0.0
    if text.count("<reasoning>\n") == 1:
        count += 0.125
    if text.count("\n</reasoning>\n") == 1:
        count += 0.125
    if text.count("\n<answer>\n") == 1:
        count += 0.125
        count -= len(text.split("\n</answer>\n")[-1]) * 0.001  # the whole text when the closing tag is absent
    if text.count("\n</answer>") == 1:
        count += 0.125
        count -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return count


_WS_ANSWER = re.compile(r"\s*<answer>")


def _boxed_braces_same_line(text: str) -> list[str]:
    """``re.findall(r"\\boxed{(.*?)}", text)`` (no DOTALL) in O(n log n)."""
    closes = [m.start() for m in re.finditer("}", text)]
    newlines = [m.start() for m in re.finditer("\n", text)]
    out, pos = [], 0
    while (start := text.find("\\boxed{", pos)) >= 0:
        body = start + len("\\boxed{")
        i = bisect.bisect_left(closes, body)
        j = bisect.bisect_left(newlines, body)
        if i < len(closes) and (j == len(newlines) or closes[i] < newlines[j]):
            out.append(text[body : closes[i]])
            pos = closes[i] + 1
        else:
            pos = body
    return out


def authors_soft_format(text: str) -> bool:
    """``re.match(r"<reasoning>.*?</reasoning>\\s*<answer>.*?</answer>", text)`` (no DOTALL: ``.`` stops at a
    newline), decided in O(n log n); the regex itself backtracks quadratically on adversarial text."""
    if not text.startswith("<reasoning>"):
        return False
    first_newline = text.find("\n")
    line_end = len(text) if first_newline < 0 else first_newline
    closes = [m.start() for m in re.finditer(re.escape("</answer>"), text)]
    newlines = [m.start() for m in re.finditer("\n", text)]
    pos = len("<reasoning>")
    while (pos := text.find("</reasoning>", pos)) >= 0 and pos + len("</reasoning>") <= line_end:
        pos += len("</reasoning>")
        m = _WS_ANSWER.match(text, pos)
        if not m:
            continue
        i = bisect.bisect_left(closes, m.end())  # first </answer> at or after the <answer>
        j = bisect.bisect_left(newlines, m.end())  # first newline after it
        if i < len(closes) and (j == len(newlines) or closes[i] + len("</answer>") <= newlines[j]):
            return True
    return False


def gsm8k_eval_ground_truth(answer: str) -> float | None:
    """The eval-time gold: digits (with separators) right after ``####``; a minus sign makes it ``None``."""
    m = re.search(r"####\s*(\d[\d,]*(?:\.\d+)?)", answer)
    return float(m.group(1).replace(",", "")) if m else None


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except (ValueError, OverflowError):
        return None


def gsm8k_eval_extract(text: str) -> float | None:
    """``parse_gsm_answers``: the first ``\\boxed{...}`` (up to the first ``}``) that yields a number (``float()``,
    else its first number), otherwise the FIRST closed answer block (``float()``, else its LAST number)."""
    for content in _boxed_braces_same_line(text):
        content = content.strip()
        if not content:
            continue
        value = _float_or_none(content)
        if value is None:
            numbers = re.findall(r"-?\d+\.?\d*", content)
            value = _float_or_none(numbers[0]) if numbers else None
        if value is not None:
            return value
    block = first_block(text)
    if block is not None and block.strip():
        content = block.strip()
        value = _float_or_none(content)
        if value is None:
            numbers = re.findall(r"-?\d+\.?\d*", content)
            value = _float_or_none(numbers[-1]) if numbers else None
        return value
    return None


def gsm8k_compat(completion: str, row: Row) -> dict[str, Any]:
    gold = _hash_answer(row["answer"])
    extracted = _xml_answer(completion)
    parts = {
        "xmlcount_reward": _count_xml(completion),
        "soft_format_reward": 0.5 if authors_soft_format(completion) else 0.0,
        "strict_format_reward": 0.5
        if re.match(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$", completion)
        else 0.0,
        "int_reward": 0.5 if extracted.isdigit() else 0.0,
        "correctness_reward": 2.0 if extracted == gold else 0.0,
    }
    reward = 0.0
    for value in parts.values():  # the trainer's order
        reward += value
    truth = gsm8k_eval_ground_truth(row["answer"])
    parsed = gsm8k_eval_extract(completion)
    return {"reward": reward, "correct": parsed is not None and truth is not None and parsed == truth,
            "reward_components": parts, "extracted": extracted, "eval_extracted": parsed,
            "eval_ground_truth": truth}
