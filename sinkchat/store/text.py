"""Text in and out of SQLite that one bad byte can never take down.

SQLite stores whatever bytes it is given; Python's default decoder raises on the first
invalid UTF-8 byte, and one such row would stop every listing.  Reads replace what
cannot be decoded (U+FFFD) and count it, so the store can say which session had it;
writes replace lone surrogates (what undecodable input becomes in Python), which
SQLite's encoder would refuse.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

_SURROGATE = re.compile(r"[\ud800-\udfff]")


class TolerantText:
    """A ``text_factory``: strict UTF-8 where possible, replacement where not, and a count."""

    def __init__(self) -> None:
        self.replaced = 0

    def __call__(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.replaced += 1
            return raw.decode("utf-8", "replace")


class Row(sqlite3.Row):
    """A row that knows whether any of its text had undecodable bytes."""

    damaged: bool = False


def tolerant(db: sqlite3.Connection) -> sqlite3.Connection:
    """Make ``db`` decode text tolerantly and mark the rows where it had to."""
    decoder = TolerantText()
    seen = [0]

    def row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
        out = Row(cursor, values)
        out.damaged = decoder.replaced != seen[0]  # decoding happens as the row is stepped, before this
        seen[0] = decoder.replaced
        return out

    db.text_factory = decoder
    db.row_factory = row
    return db


def clean(text: str | None) -> str | None:
    """Text SQLite can store: lone surrogates (undecodable input) become U+FFFD."""
    if text is None:
        return None
    return _SURROGATE.sub("\ufffd", text)
