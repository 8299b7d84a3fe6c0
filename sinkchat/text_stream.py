"""Turning token pieces into safe-to-emit text.

Token pieces are bytes and can end in the middle of a UTF-8 character, and a stop string
can span several tokens.  These helpers hold back exactly what may still change.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class Utf8Joiner:
    """Joins byte pieces and returns only complete characters."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Finds stop strings in streamed text, holding back a possible stop-string prefix.

    ``push`` returns ``(text_to_emit, stopped)``.  Once stopped, the text from the stop
    string on is dropped and nothing more is accepted.
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self._stops = [s for s in stops if s]
        self._pending = ""
        self.stopped: str | None = None

    def push(self, text: str) -> tuple[str, bool]:
        if self.stopped is not None:
            return "", True
        if not self._stops:
            return text, False
        buf = self._pending + text
        hits = [(buf.find(s), s) for s in self._stops]
        hits = [(i, s) for i, s in hits if i >= 0]
        if hits:
            index, stop = min(hits)
            self.stopped = stop
            self._pending = ""
            return buf[:index], True
        hold = self._held_suffix(buf)
        self._pending = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        """Release what was held back (the stream ended without a stop string)."""
        out, self._pending = self._pending, ""
        return out

    def _held_suffix(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
