"""Copy what can still be read out of a damaged sessions database.

Rows are read one query at a time and, where a query stops at a damaged page, row by
row, so damage costs only the rows on it.  Messages whose session row is lost are not
dropped: their session is rebuilt from its id, with a title from its first question.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinkchat.store.text import clean, tolerant

log = logging.getLogger(__name__)

LOST = "[lost: this message was in a damaged part of the database]"

SESSION_COLUMNS = (
    "id",
    "title",
    "title_custom",
    "created_at",
    "updated_at",
    "model_path",
    "system_prompt",
    "settings",
)


@dataclass
class Salvaged:
    """What a salvage copied."""

    sessions: int = 0
    messages: int = 0
    rebuilt: int = 0
    """Sessions whose own row was lost, rebuilt from their messages."""
    problems: list[str] = field(default_factory=list)
    """The distinct read errors met on the way (each logged once)."""

    def describe(self) -> str:
        text = f"recovered {self.sessions} sessions and {self.messages} messages"
        if self.rebuilt:
            text += (
                f" ({self.rebuilt} session{'s' if self.rebuilt > 1 else ''} rebuilt from {'their' if self.rebuilt > 1 else 'its'}"
                " messages: title, model and system prompt were lost)"
            )
        return text


def salvage(damaged: Path, into: sqlite3.Connection) -> Salvaged:
    """Copy the rows that can still be read from ``damaged`` into the fresh database ``into``.

    A truncated file is first padded to the size its header claims (on a scratch copy):
    SQLite refuses a file shorter than its header says, even where the pages it needs
    are intact.  A message whose text is lost keeps its place, marked as lost.
    """
    found = Salvaged()
    scratch = damaged.with_name(damaged.name + ".salvage")
    try:
        shutil.copyfile(damaged, scratch)
        _pad_to_header_size(scratch)
        old = tolerant(sqlite3.connect(f"file:{scratch}?mode=ro", uri=True, isolation_level=None))
    except (OSError, sqlite3.Error) as exc:
        scratch.unlink(missing_ok=True)
        found.problems.append(str(exc))
        return found
    into.execute("BEGIN IMMEDIATE")
    try:
        for row in _readable(old, "SELECT * FROM sessions", found=found):
            keys = [k for k in row.keys() if k in SESSION_COLUMNS]  # noqa: SIM118 (Row iterates values)
            into.execute(
                f"INSERT OR IGNORE INTO sessions ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                [row[k] for k in keys],
            )
            found.sessions += 1
        known = {r[0] for r in into.execute("SELECT id FROM sessions")}
        messages = []
        for m in _message_rows(old, found):
            try:
                content = old.execute("SELECT content FROM messages WHERE id = ?", (m["id"],)).fetchone()[0]
                status = "interrupted" if m["status"] == "streaming" else m["status"]
            except sqlite3.Error:
                content, status = LOST, "interrupted"
            messages.append((m, content, status))
        for sid, first in _orphans(messages, known).items():
            into.execute(
                "INSERT INTO sessions (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (sid, *first),
            )
            found.rebuilt += 1
            found.sessions += 1
        for m, content, status in messages:
            into.execute(
                "INSERT OR IGNORE INTO messages (session_id, seq, role, content, status, finish, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (m["session_id"], m["seq"], m["role"], clean(content), status, m["finish"], m["created_at"]),
            )
            found.messages += 1
        into.execute("COMMIT")
    except sqlite3.Error:
        into.execute("ROLLBACK")
        raise
    finally:
        old.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{scratch}{suffix}").unlink(missing_ok=True)
    return found


def _orphans(messages: list[tuple[Any, str, str]], known: set[str]) -> dict[str, tuple[str, float, float]]:
    """Sessions to rebuild for messages whose session row is gone: id -> (title, created, updated)."""
    from sinkchat.store.database import title_from

    out: dict[str, tuple[str, float, float]] = {}
    for m, content, _ in messages:
        sid = m["session_id"]
        if not isinstance(sid, str) or sid in known:
            continue
        title, created, updated = out.get(sid, ("", m["created_at"], m["created_at"]))
        if not title and m["role"] == "user" and content != LOST:
            title = title_from(content)
        out[sid] = (title, min(created, m["created_at"]), max(updated, m["created_at"]))
    return {sid: (f"(recovered) {title}".strip(), c, u) for sid, (title, c, u) in out.items()}


def _message_rows(db: sqlite3.Connection, found: Salvaged) -> list[Any]:
    """Message metadata, row by row: a damaged page then costs only the rows on it."""
    columns = "id, session_id, seq, role, status, finish, created_at"
    rows = {r["id"]: r for r in _readable(db, f"SELECT {columns} FROM messages", found=found)}
    top = _readable(db, "SELECT seq FROM sqlite_sequence WHERE name = 'messages'", found=found)
    # without the sequence row, look a little past the highest id seen: rows behind a damaged page
    highest = int(top[0]["seq"]) if top else max(rows, default=0) + 256
    for rowid in range(1, highest + 1):
        if rowid not in rows:
            got = _readable(db, f"SELECT {columns} FROM messages WHERE id = ?", (rowid,), found=found)
            if got:
                rows[rowid] = got[0]
    return [rows[k] for k in sorted(rows)]


def _pad_to_header_size(path: Path) -> None:
    with path.open("r+b") as f:
        header = f.read(100)
        if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
            return
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        claimed = page_size * int.from_bytes(header[28:32], "big")
        if claimed > path.stat().st_size:
            f.truncate(claimed)


def _readable(db: sqlite3.Connection, sql: str, args: Sequence[Any] = (), *, found: Salvaged) -> list[Any]:
    """The rows a query yields before the damage stops it."""
    rows: list[Any] = []
    try:
        for row in db.execute(sql, args):
            rows.append(row)
    except sqlite3.Error as exc:
        if str(exc) not in found.problems:
            found.problems.append(str(exc))
            log.debug("stopped reading damaged rows: %s", exc)
    return rows
