"""Shared pieces of the task modules: the d1-family system prompt, the tiny alphabet, answer-tag and ``\\boxed{}``
extraction, and digit normalisation.

Conventions of our (intended-semantics) graders, used by every task:

- The answer is the content of the LAST *closed* ``<answer>...</answer>`` block (see :func:`last_answer`) (the d1 training rewards read the last
  block; the reasoning may quote drafts). An unclosed ``<answer>`` is not an answer.
- Any Unicode decimal digit (category Nd: fullwidth, Arabic-Indic, ...) is read as the same ASCII digit; superscripts
  and other digit-like symbols are not decimal digits and are left alone.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from typing import Any

#: The d1 family's system prompt (the response format every d1-style prompt asks for).
SYSTEM_PROMPT = (
    "Respond in the following format:\n"
    "<reasoning>\n"
    "...\n"
    "</reasoning>\n"
    "<answer>\n"
    "...\n"
    "</answer>\n"
)

#: Characters the tiny preset's prompts and targets may use (plus the special tokens below). The tiny tokenizer is
#: character-level over exactly this alphabet.
TINY_ALPHABET = "0123456789+-*/()=.,:; abcdefghijklmnopqrstuvwxyz"
#: Multi-character special tokens of the tiny tokenizer that completions contain.
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"

def last_answer(text: str) -> str | None:
    """Content of the last closed answer block, stripped; ``None`` if there is none.

    The block opens at the last ``<answer>`` that a ``</answer>`` follows and ends at the first ``</answer>`` after
    it, so ``<answer> tags ... <answer>56</answer>`` gives ``56`` and ``<answer><answer>1</answer></answer>`` gives
    ``1``."""
    close = text.rfind(ANSWER_CLOSE)
    if close < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, close)
    if start < 0:
        return None
    start += len(ANSWER_OPEN)
    return text[start : text.find(ANSWER_CLOSE, start)].strip()


def boxed_contents(text: str, commands: tuple[str, ...] = ("\\boxed", "\\fbox")) -> list[str]:
    """Contents of every brace-balanced ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, left to right.

    An unbalanced ``\\boxed{`` yields nothing; nested boxes yield the outer content (``\\boxed{\\boxed{x}}`` ->
    ``\\boxed{x}``; apply :func:`unbox` to strip all layers)."""
    out: list[str] = []
    pos = 0
    pattern = re.compile("(?:" + "|".join(re.escape(c) for c in commands) + r")\s*\{")
    while True:
        m = pattern.search(text, pos)
        if m is None:
            return out
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth:  # unbalanced: no later box can close either
            return out
        out.append(text[m.end() : i - 1])
        pos = i


_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")


def unbox(text: str) -> str:
    """Strip the ``\\boxed{...}`` / ``\\fbox{...}`` layers that wrap the whole (stripped) text."""
    text = text.strip()
    while (m := _BOX_START.match(text)) is not None:
        boxes = boxed_contents(text)
        if not boxes or m.end() + len(boxes[0]) + 1 != len(text):
            break
        text = boxes[0].strip()
    return text


def ascii_digits(text: str) -> str:
    """Replace every Unicode decimal digit (category Nd) by its ASCII digit."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(ch)) if unicodedata.category(ch) == "Nd" else ch for ch in text)


def chat_prompt(content: str, tokenizer: Any = None) -> str:
    """``content`` as one user turn, through the tokenizer's chat template when it has one."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
    return content


def check_tiny_text(text: str) -> str:
    """Return ``text`` if it uses only :data:`TINY_ALPHABET`, else raise ValueError naming the first bad character."""
    bad = [ch for ch in text if ch not in TINY_ALPHABET]
    if bad:
        raise ValueError(f"tiny-style text {text!r} uses {bad[0]!r}, outside the tiny alphabet {TINY_ALPHABET!r}")
    return text


def check_style(style: str) -> str:
    if style not in ("d1", "tiny"):
        raise ValueError(f"style must be 'd1' or 'tiny', got {style!r}")
    return style


def _int_text(value: int) -> int | str:
    """``value`` itself when Python can write it in decimal (``sys.get_int_max_str_digits``), else a string in
    scientific notation with 6 decimals (``"9.999999e+95423"``)."""
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0
    if not limit or abs(value).bit_length() * 0.30103 < limit - 2:
        return value
    exponent = math.log10(abs(value))
    whole = math.floor(exponent)
    return f"{'-' if value < 0 else ''}{10 ** (exponent - whole):.6f}e+{whole}"


def json_safe(value: Any) -> Any:
    """``value`` with everything a JSON writer cannot write replaced: integers too long for decimal text become
    strings in scientific notation, strings with lone surrogates (e.g. ``"\\ud800"`` read from JSON) get them
    escaped as ``\\uXXXX`` text, tuples become lists; dicts and lists are walked."""
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k) if isinstance(k, str) else k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
