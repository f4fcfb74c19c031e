"""What the authors' scorers of every task family share: the answer-tag scans (their regexes, in linear time) and
the result of a score whose reference code would raise or hang."""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]


def tag_blocks(text: str, open_tag: str = "<answer>", close_tag: str = "</answer>") -> list[str]:
    """``re.findall(open + "(.*?)" + close, text, re.DOTALL)`` in linear time."""
    out, pos = [], 0
    while (start := text.find(open_tag, pos)) >= 0:
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            break  # no later opening tag can close either
        out.append(text[start + len(open_tag) : end])
        pos = end + len(close_tag)
    return out


def first_block(text: str) -> str | None:
    """``re.search(r"<answer>(.*?)</answer>", text, re.DOTALL).group(1)`` (None without a match), linear."""
    start = text.find("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start + len("<answer>"))
    return None if end < 0 else text[start + len("<answer>") : end]


def failure(why: str, reward: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {"reward": reward, "correct": False, "authors_failure": why, **extra}
