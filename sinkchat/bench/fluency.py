"""Model-free fluency heuristics, the same for every policy.

1. The seeds' heuristic: degenerate text uses few distinct characters.  A window of 256
   characters of fluent English uses about 27 to 35; a model stuck on a token ("the the
   the", "!!!!", newlines) drops below 26.  Naive: repetitive prose can dip below it too
   (Dickens' "It was the best of times..." does), and gibberish with capitals stays above.
2. Loops: a window that compresses (zlib) below 40% of its size repeats itself.  Shakespeare's
   plays never go below 54%, fluent replies stay above 60%, a loop like "I love you. I love
   you." is at 9%.  It catches the long loops the first heuristic misses.
"""

from __future__ import annotations

import zlib
from collections import Counter

WINDOW = 256
MIN_DISTINCT = 26
MAX_COMPRESSION = 0.4
LOOP_STEP = 16
SHORT = 32
SHORT_DISTINCT = 10
"""A shorter reply is judged whole: 32+ characters drawn from fewer than 10 is a loop ("!!!!", newlines)."""


def distinct_profile(text: str, window: int = WINDOW) -> list[int]:
    """Distinct characters in each window of ``text`` ending at each offset >= ``window``."""
    if len(text) < window:
        return [len(set(text))] if text else []
    counts = Counter(text[:window])
    profile = [len(counts)]
    for i in range(window, len(text)):
        counts[text[i]] += 1
        old = text[i - window]
        counts[old] -= 1
        if not counts[old]:
            del counts[old]
        profile.append(len(counts))
    return profile


def first_loss(text: str, window: int = WINDOW, min_distinct: int = MIN_DISTINCT) -> int | None:
    """Character offset where fluency is first lost (the end of the first poor window), or None."""
    if len(text) < window:
        return None
    for i, distinct in enumerate(distinct_profile(text, window)):
        if distinct < min_distinct:
            return i + window
    return None


def compression_profile(text: str, window: int = WINDOW, step: int = LOOP_STEP) -> list[tuple[int, float]]:
    """``(end offset, compressed size / size)`` of windows of ``text`` every ``step`` characters."""
    result = []
    for end in range(window, len(text) + 1, step):
        raw = text[end - window : end].encode("utf-8")
        result.append((end, len(zlib.compress(raw, 9)) / len(raw)))
    return result


def first_loop(text: str, window: int = WINDOW, max_ratio: float = MAX_COMPRESSION) -> int | None:
    """Character offset where the text first loops (the end of the first window that compresses too well)."""
    for end, ratio in compression_profile(text, window):
        if ratio < max_ratio:
            return end
    return None


def is_failure(reply: str, *, window: int = WINDOW, min_distinct: int = MIN_DISTINCT) -> bool:
    """A chat reply fails when some full window of it is degenerate or loops, or when it is a short loop.

    Replies shorter than a window are judged only for loops: a short fluent answer
    ("Paris.") uses few distinct characters and is no failure.
    """
    return failure_reason(reply, window=window, min_distinct=min_distinct) is not None


def failure_reason(reply: str, *, window: int = WINDOW, min_distinct: int = MIN_DISTINCT) -> str | None:
    """Why :func:`is_failure` fails a reply: ``"loop"`` (it compresses like a loop), ``"few characters"``
    (only the distinct-character count, which fluent prose can dip below), ``"short loop"``; None if it passes.
    """
    if len(reply) >= window:
        if first_loop(reply, window) is not None:
            return "loop"
        return "few characters" if first_loss(reply, window, min_distinct) is not None else None
    return "short loop" if len(reply) >= SHORT and len(set(reply.strip())) < SHORT_DISTINCT else None
