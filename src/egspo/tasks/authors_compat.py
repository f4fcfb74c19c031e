"""Compatibility mode: what the EGSPO authors' training rewards and evaluation parsers return.

Reproduces, from the behavioural description in ``shared/data/reference_rewards/README.md`` and its data (no
reference code was available or copied), the values of the authors' ``reward_func.py`` / ``math500_utils.py``
(training) and ``eval/parse_and_get_acc.py`` (evaluation) at commit a7d618b, quirks included, so tables can show the
paper's own numbers next to our graders (``egspo grade --compat authors``). Two departures, both forced:

- Countdown expressions are never ``eval``-ed: :func:`egspo.tasks.arith.evaluate_python` reproduces ``eval`` on the
  authors' character whitelist (``//`` and ``**`` included) by an AST walk.
- Where the authors' code raises (an unbalanced ``\\boxed{`` in a MATH solution, a short Sudoku puzzle, ...) or would
  hang (an integer power beyond ``arith.MAX_INT_BITS`` bits, e.g. ``9**9**9``), the score is 0 and the result says so
  (``authors_failure``).

Each ``<task>_compat(completion, row)`` returns ``{"reward": training reward, "correct": eval-time correctness, ...}``
with the individual values as extra keys. ``reward`` is the trainer's total: GSM8K the sum of its five functions,
MATH correctness + format, Countdown / Sudoku the single reward.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

from egspo.tasks.arith import ArithError, ArithLimitError, evaluate_python

Row = dict[str, Any]
COMPAT_TASKS = ("gsm8k", "math500", "countdown", "sudoku")


# ==== GSM8K ==========================================================================================================
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


def _tag_blocks(text: str, open_tag: str = "<answer>", close_tag: str = "</answer>") -> list[str]:
    """``re.findall(open + "(.*?)" + close, text, re.DOTALL)`` in linear time."""
    out, pos = [], 0
    while (start := text.find(open_tag, pos)) >= 0:
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            break  # no later opening tag can close either
        out.append(text[start + len(open_tag) : end])
        pos = end + len(close_tag)
    return out


def _first_block(text: str) -> str | None:
    """``re.search(r"<answer>(.*?)</answer>", text, re.DOTALL).group(1)`` (None without a match), linear."""
    start = text.find("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start + len("<answer>"))
    return None if end < 0 else text[start + len("<answer>") : end]


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
    block = _first_block(text)
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


# ==== MATH (Hendrycks-style boxed extraction and string normalisation) ===============================================
def last_boxed_only_string(text: str) -> str | None:
    idx = text.rfind("\\boxed")
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    if idx < 0:
        idx = text.rfind("\\fbox")
        if idx < 0:
            return None
    depth = 0
    for i in range(idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[idx : i + 1]
    return None


def remove_boxed(text: str) -> str:
    """Raises TypeError for None and AssertionError for anything that is not ``\\boxed{...}`` / ``\\boxed ...``."""
    if "\\boxed " in text:
        assert text.startswith("\\boxed ")
        return text[len("\\boxed ") :]
    assert text.startswith("\\boxed{") and text.endswith("}")
    return text[len("\\boxed{") : -1]


def _fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr[0] == "{":  # IndexError on an empty tail, as in the reference
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b = substr[0], substr[1]
        if b != "{":
            new_str += "{" + a + "}{" + b + "}" + substr[2:]
        else:
            new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    if len(string.split("/")) != 2:
        return string
    a, b = string.split("/")
    a_int, b_int = int(a), int(b)  # ValueError propagates (is_equiv then compares raw strings)
    if string != f"{a_int}/{b_int}":
        return string
    return "\\frac{" + str(a_int) + "}{" + str(b_int) + "}"


def _remove_right_units(string: str) -> str:
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        assert len(splits) == 2
        return splits[0]
    return string


def _fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split[0] != "{":  # IndexError for a dangling \sqrt
            new_string += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new_string += "\\sqrt" + split
    return new_string


def strip_string(string: str) -> str:
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = _remove_right_units(string)
    string = string.replace("\\%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


def is_equiv(str1: str | None, str2: str | None) -> bool:
    if str1 is None and str2 is None:
        return True
    if str1 is None or str2 is None:
        return False
    try:
        return strip_string(str1) == strip_string(str2)
    except Exception:  # the reference falls back to raw equality on any error
        return str1 == str2


def math_train_extract(text: str) -> str:
    boxed = last_boxed_only_string(text)
    if boxed is None:
        return text  # remove_boxed(None) raises; the completion is compared whole
    try:
        return remove_boxed(boxed)
    except AssertionError:
        return boxed  # e.g. \fbox{...}: found, not unwrapped


def math_eval_extract(text: str) -> str:
    boxed = last_boxed_only_string(text)
    if boxed is not None:
        try:
            parsed = remove_boxed(boxed)
        except AssertionError:
            parsed = boxed
        if parsed:
            return parsed
    elif "\\boxed" not in text:
        return text
    # an unbalanced or empty box: fall back to the FIRST closed answer block
    block = _first_block(text)
    if block is not None:
        return block.strip()
    return parsed if boxed is not None else text


def math_format_reward(text: str) -> float:
    """0.5 * ([answer tag] + (1 if "\\x08oxed" after it else 0.5)): ``"\\boxed"`` in the reference is a backspace."""
    tagged = "<answer>" in text
    region = text.split("<answer>", 1)[1] if tagged else text
    return 0.5 * ((1.0 if tagged else 0.0) + (1.0 if "\x08oxed" in region else 0.5))


def math500_compat(completion: str, row: Row) -> dict[str, Any]:
    gold_boxed = last_boxed_only_string(str(row["solution"]))
    if gold_boxed is None:
        return _failure("remove_boxed(None) raises TypeError: the solution has no balanced \\boxed{}",
                        format_reward=math_format_reward(completion))
    try:
        gold_train = remove_boxed(gold_boxed)
    except AssertionError:
        return _failure("remove_boxed raises AssertionError on the solution's box",
                        format_reward=math_format_reward(completion))
    extracted = math_train_extract(completion)
    correctness = 2.0 if is_equiv(extracted, gold_train) else 0.0
    fmt = math_format_reward(completion)
    eval_extracted = math_eval_extract(completion)
    return {"reward": correctness + fmt, "correct": is_equiv(eval_extracted, str(row["answer"])),
            "reward_components": {"correctness_reward": correctness, "format_reward": fmt},
            "extracted": extracted, "eval_extracted": eval_extracted}


# ==== Countdown =======================================================================================================
_WHITELIST = re.compile(r"^[\d+\-*/().\s]+$")


class _Hang(Exception):
    pass


def _numbers_match(expr: str, numbers) -> bool:
    try:
        return sorted(int(n) for n in re.findall(r"\d+", expr)) == sorted(int(n) for n in numbers)
    except ValueError:  # e.g. a digit run beyond Python's int-string limit; the reference catches it too
        return False


def _evaluate(expr: str):
    """The reference's evaluate_equation: whitelist, then eval (here: the bounded AST walk). None on failure."""
    if not _WHITELIST.match(expr):
        return None
    try:
        return evaluate_python(expr)
    except ArithLimitError as exc:
        raise _Hang(str(exc)) from None
    except ArithError:
        return None


def _close(result, target) -> bool:
    try:
        return bool(abs(result - target) < 1e-5)
    except (TypeError, ValueError, OverflowError):
        return False


def countdown_train_reward(completion: str, numbers, target) -> float:
    blocks = _tag_blocks(completion)
    if not blocks:
        return 0.0
    expr = blocks[-1].strip()
    if not _numbers_match(expr, numbers):
        return 0.1
    result = _evaluate(expr)
    if result is None:
        return 0.1
    return 1.0 if _close(result, target) else 0.1


def countdown_eval_extract(text: str) -> str:
    if "\\boxed" in text:
        try:
            expr = remove_boxed(last_boxed_only_string(text))
        except (TypeError, AssertionError):
            block = _first_block(text)
            expr = block.strip() if block is not None else text
    else:
        expr = text  # answer tags are ignored: the whole generation is the candidate
    expr = expr.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
    # re.search(r"([0-9+\-*/() ]+)=[0-9. ]+", expr), linear: the first maximal run of those characters that is
    # followed by "=" and a digit, dot or space (the run's start is the leftmost match start)
    for run in re.finditer(r"[0-9+\-*/() ]+", expr):
        if expr[run.end() : run.end() + 1] == "=" and expr[run.end() + 1 : run.end() + 2] in set("0123456789. "):
            if run.end() + 1 < len(expr):
                return run.group(0).strip()
    return expr


def countdown_compat(completion: str, row: Row) -> dict[str, Any]:
    numbers, target = row["numbers"], row["target"]
    try:
        reward = countdown_train_reward(completion, numbers, target)
    except _Hang as exc:
        return _failure(f"the training reward would hang: {exc}")
    expr = countdown_eval_extract(completion)
    value: Any = None
    correct = False
    if _numbers_match(expr, numbers):
        try:
            result = _evaluate(expr)
        except _Hang as exc:
            return _failure(f"the eval parser would hang: {exc}", reward=reward)
        value = float("inf") if result is None else result
        correct = _close(value, target)
    return {"reward": reward, "correct": correct, "eval_extracted": expr,
            "eval_value": value if isinstance(value, (int, float)) else (None if value is None else str(value))}


# ==== Sudoku ==========================================================================================================
_FENCE = re.compile(r"```\s*([\d\s]+)```")
_AFTER_CLOSE = re.compile(r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)", re.DOTALL)
_DIGITS_BEFORE_CLOSE = re.compile(r"(\d{16})\s*</answer>")
_DIGITS_16 = re.compile(r"\b(\d{16})\b")


def _sudoku_candidates(text: str):
    """The reference's five patterns in order, each as its first match's group (or None), in linear time:
    1 ``<answer>.*?```\\s*([\\d\\s]+)```` 2 ``<answer>(.*?)(?:<|eot_id|>|<|endoftext|>|</answer>)``
    3 ``</answer>\\s*(.*?)(?:<|eot_id|>|<|endoftext|>|$)`` 4 ``.*?(\\d{16})\\s*</answer>`` 5 ``\\b(\\d{16})\\b``
    (all DOTALL). A leading ``<answer>.*?`` or ``.*?`` only moves the search start: the first ``<answer>`` is the
    leftmost start that can match at all."""
    first_open = text.find("<answer>")
    if first_open >= 0:
        m = _FENCE.search(text, first_open + len("<answer>"))
        yield m.group(1) if m else None
        body = first_open + len("<answer>")
        ends = [e for e in (text.find(t, body) for t in ("<|eot_id|>", "<|endoftext|>", "</answer>")) if e >= 0]
        yield text[body : min(ends)] if ends else None
    m = _AFTER_CLOSE.search(text)
    yield m.group(1) if m else None
    m = _DIGITS_BEFORE_CLOSE.search(text)
    yield m.group(1) if m else None
    m = _DIGITS_16.search(text)
    yield m.group(1) if m else None


def sudoku_train_reward(completion: str, puzzle: str, solution: str) -> float:
    matches = _tag_blocks(completion)
    empty = [i for i in range(16) if puzzle[i] == "0"]  # IndexError for a short puzzle, as in the reference
    if not matches:
        return 0.0
    answer = "".join(ch for ch in matches[-1].strip() if ch.isdigit())
    correct = sum(1 for i in empty if i < len(answer) and answer[i] == solution[i])
    return correct / len(empty)  # ZeroDivisionError for a full puzzle, as in the reference


def sudoku_eval_extract(completion: str) -> str:
    for group in _sudoku_candidates(completion):
        if group is not None and group.strip():
            return re.sub(r"\s", "", group.strip())
    return ""


def sudoku_compat(completion: str, row: Row) -> dict[str, Any]:
    puzzle, solution = str(row["Puzzle"]), str(row["Solution"])
    try:
        reward = sudoku_train_reward(completion, puzzle, solution)
    except (IndexError, ZeroDivisionError) as exc:
        return _failure(f"sudoku_reward_func raises {exc.__class__.__name__}")
    if len(puzzle) != 16 or not puzzle.isdigit():
        return _failure("parse_sudoku_answers asserts on a question without a 16-digit puzzle", reward=reward)
    extracted = sudoku_eval_extract(completion)
    empty = [i for i in range(16) if puzzle[i] == "0"]
    cells = 0
    if extracted:
        extracted = grid = (extracted + "0" * 16)[:16]  # padded with zeros / truncated to 16 characters
        try:
            cells = sum(1 for i in empty if grid[i] == solution[i])
        except IndexError:
            return _failure("parse_sudoku_answers raises IndexError on a short solution", reward=reward)
    accuracy = cells / len(empty) if empty else 0.0
    return {"reward": reward, "correct": accuracy == 1.0, "eval_extracted": extracted, "eval_correct_cells": cells,
            "eval_empty_cells": len(empty), "eval_accuracy": accuracy}


# ==== dispatch ========================================================================================================
def _failure(why: str, reward: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {"reward": reward, "correct": False, "authors_failure": why, **extra}


_COMPAT = {"gsm8k": gsm8k_compat, "math500": math500_compat, "countdown": countdown_compat, "sudoku": sudoku_compat}
#: row fields each compat scorer reads
COMPAT_FIELDS = {"gsm8k": ("answer",), "math500": ("solution", "answer"), "countdown": ("numbers", "target"),
                 "sudoku": ("Puzzle", "Solution")}


def compat_grade(task: str, completion: str, row: Row) -> dict[str, Any]:
    """The authors' training reward (``reward``) and eval correctness (``correct``) for one completion."""
    if task not in _COMPAT:
        raise ValueError(f"--compat authors supports {', '.join(COMPAT_TASKS)}; not {task!r}")
    return _COMPAT[task](completion, row)
