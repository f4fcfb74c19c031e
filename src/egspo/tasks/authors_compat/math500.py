"""MATH-500 as the authors score it (``math500_utils.py``, ``parse_and_get_acc.py``): Hendrycks-style boxed extraction
and string normalisation; training reward = correctness (2 if ``is_equiv``) + format."""

from __future__ import annotations

from typing import Any

from egspo.tasks.authors_compat.common import Row, failure, first_block


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
    block = first_block(text)
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
        return failure("remove_boxed(None) raises TypeError: the solution has no balanced \\boxed{}",
                        format_reward=math_format_reward(completion))
    try:
        gold_train = remove_boxed(gold_boxed)
    except AssertionError:
        return failure("remove_boxed raises AssertionError on the solution's box",
                        format_reward=math_format_reward(completion))
    extracted = math_train_extract(completion)
    correctness = 2.0 if is_equiv(extracted, gold_train) else 0.0
    fmt = math_format_reward(completion)
    eval_extracted = math_eval_extract(completion)
    return {"reward": correctness + fmt, "correct": is_equiv(eval_extracted, str(row["answer"])),
            "reward_components": {"correctness_reward": correctness, "format_reward": fmt},
            "extracted": extracted, "eval_extracted": eval_extracted}
