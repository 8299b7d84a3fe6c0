"""Saved sessions: a SQLite database (WAL) in the user's data dir.

Every message is committed the moment it exists.  A reply is inserted as ``streaming``
together with its question, checkpointed as it grows, and marked ``complete`` when it
ends; if the process dies first, the next owner of the session marks it
``interrupted``.  WAL keeps every committed write safe across a killed process, and
lets other processes read (``sinkchat sessions list``) while a chat is writing.

A damaged database file is never deleted: it is moved aside, whatever can still be read
is copied into a fresh one, and :attr:`SessionStore.recovery` says what happened.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sinkchat import schema
from sinkchat.errors import SinkchatError

log = logging.getLogger(__name__)

DB_NAME = "sessions.db"
TITLE_LENGTH = 60

Status = Literal["complete", "streaming", "interrupted"]


class StoreError(SinkchatError):
    """The sessions database cannot be used (or a session cannot be found)."""


class _Damaged(Exception):
    """The database file is readable but its integrity check fails."""


_DAMAGE_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _DAMAGE_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


class SessionSettings(BaseModel):
    """What a session remembers about how it was chatting (beside model and system prompt)."""

    model_config = ConfigDict(extra="ignore")

    sampling: dict[str, Any] = Field(default_factory=dict)
    n_ctx: int | None = None
    chat_template: str | None = None
    """The ``--chat-template`` it was chatting with (None: the model's own)."""


class SessionInfo(BaseModel):
    """One session, as listed."""

    id: str
    title: str
    title_custom: bool = False
    created_at: datetime
    updated_at: datetime
    model_path: str | None = None
    system_prompt: str | None = None
    settings: SessionSettings = Field(default_factory=SessionSettings)
    n_messages: int = 0

    @property
    def model_name(self) -> str:
        return Path(self.model_path).stem if self.model_path else "?"

    @property
    def short_id(self) -> str:
        return self.id[:8]


class StoredMessage(BaseModel):
    """One message of a session; the system prompt lives on the session, not here."""

    id: int | None = None
    role: Literal["user", "assistant"]
    content: str
    status: Status = "complete"
    finish: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def title_from(text: str) -> str:
    """A title from the first message: its first non-empty line, shortened at a word."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    if len(line) <= TITLE_LENGTH:
        return line
    cut = line[: TITLE_LENGTH - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > TITLE_LENGTH // 2 else cut) + "…"


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _now() -> float:
    return time.time()


class SessionStore:
    """Thread-safe access to the sessions database (one connection, one lock)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / DB_NAME
        self.recovery: str | None = None
        """Set when a damaged database was moved aside: what was recovered, and where the old file is."""
        self._lock = threading.RLock()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the sessions folder {folder}: {exc.strerror or exc}") from exc
        try:
            self._db = self._open(self.path)
        except _Damaged as exc:
            self._db = self._recover(exc)
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                self._db = self._recover(exc)
            else:
                raise StoreError(f"cannot open the sessions database {self.path}: {exc}") from exc

    # -- opening -----------------------------------------------------------------------

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        db.row_factory = sqlite3.Row
        return db

    def _open(self, path: Path) -> sqlite3.Connection:
        db = self._connect(path)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # in WAL: safe against a killed process
            db.execute("PRAGMA foreign_keys = ON")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _Damaged(f"integrity check failed: {check}")
            schema.upgrade(db, newer_than_known=self._too_new)
        except BaseException:
            db.close()
            raise
        return db

    def _too_new(self, version: int) -> Exception:
        return StoreError(
            f"{self.path} was written by a newer sinkchat (schema {version}, this one knows {schema.VERSION}); "
            "upgrade sinkchat to open it"
        )

    def _recover(self, error: Exception) -> sqlite3.Connection:
        """Move the damaged file aside, start a fresh database and copy over what is readable."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{DB_NAME}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))
        db = self._open(self.path)
        sessions, messages = _salvage(aside, db)
        self.recovery = (
            f"the sessions database was damaged ({error}); recovered {sessions} sessions and "
            f"{messages} messages into a new one. The damaged file is kept at {aside}"
        )
        log.warning("%s", self.recovery)
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite failures (a full disk, a locked file) become a :class:`StoreError`."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreError(f"cannot save to the sessions database {self.path}: {exc}") from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the sessions database {self.path}: {exc}") from exc

    # -- sessions ----------------------------------------------------------------------

    def create(
        self,
        *,
        model_path: str | None = None,
        system_prompt: str | None = None,
        settings: SessionSettings | None = None,
        title: str = "",
        session_id: str | None = None,
        created_at: datetime | None = None,
        updated_at: datetime | None = None,
    ) -> SessionInfo:
        sid = session_id or uuid.uuid4().hex
        now = created_at.timestamp() if created_at else _now()
        updated = updated_at.timestamp() if updated_at else now
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (id, title, title_custom, created_at, updated_at, model_path, system_prompt,"
                " settings) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    title,
                    int(bool(title)),
                    now,
                    updated,
                    model_path,
                    system_prompt,
                    (settings or SessionSettings()).model_dump_json(),
                ),
            )
        return self.get(sid)

    _SELECT = "SELECT s.*, (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS n_messages FROM sessions s"

    @staticmethod
    def _info(row: sqlite3.Row) -> SessionInfo:
        try:
            settings = SessionSettings.model_validate_json(row["settings"] or "{}")
        except ValueError:
            settings = SessionSettings()
        return SessionInfo(
            id=row["id"],
            title=row["title"],
            title_custom=bool(row["title_custom"]),
            created_at=_ts(row["created_at"]),
            updated_at=_ts(row["updated_at"]),
            model_path=row["model_path"],
            system_prompt=row["system_prompt"],
            settings=settings,
            n_messages=row["n_messages"],
        )

    def get(self, session_id: str) -> SessionInfo:
        rows = self._read(f"{self._SELECT} WHERE s.id = ?", (session_id,))
        if not rows:
            raise StoreError(f"no session {session_id}")
        return self._info(rows[0])

    def exists(self, session_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM sessions WHERE id = ?", (session_id,)))

    def list(self, search: str | None = None, limit: int | None = None) -> list[SessionInfo]:
        """Sessions, most recently used first; ``search`` matches titles and message text."""
        where, args = "", []
        if search and search.strip():
            where, args = self._search_clause(search.strip())
        sql = f"{self._SELECT} {where} ORDER BY s.updated_at DESC, s.created_at DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [self._info(row) for row in self._read(sql, args)]

    def _search_clause(self, text: str) -> tuple[str, list[Any]]:
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        title = "s.title LIKE ? ESCAPE '\\'"
        if self._read("SELECT 1 FROM sqlite_master WHERE name = 'messages_fts'"):
            phrase = '"' + text.replace('"', '""') + '"'  # the user's words as one literal phrase
            content = (
                "s.id IN (SELECT m.session_id FROM messages m JOIN messages_fts f ON f.rowid = m.id"
                " WHERE messages_fts MATCH ?)"
            )
            return f"WHERE {title} OR {content}", [like, phrase]
        content = "s.id IN (SELECT session_id FROM messages WHERE content LIKE ? ESCAPE '\\')"
        return f"WHERE {title} OR {content}", [like, like]

    def resolve(self, ref: str) -> str:
        """A session id from an id, a unique prefix of one, or ``last``."""
        ref = ref.strip()
        if ref == "last":
            rows = self._read("SELECT id FROM sessions ORDER BY updated_at DESC, created_at DESC LIMIT 1")
            if not rows:
                raise StoreError("there are no saved sessions yet")
            return rows[0]["id"]
        if not ref or not all(c in "0123456789abcdef" for c in ref.lower()):
            raise StoreError(f"{ref!r} is not a session id (see: sinkchat sessions list)")
        rows = self._read("SELECT id, title FROM sessions WHERE id LIKE ? LIMIT 6", (ref.lower() + "%",))
        if not rows:
            raise StoreError(f"no session with id {ref} (see: sinkchat sessions list)")
        if len(rows) > 1:
            names = ", ".join(f"{r['id'][:12]} ({r['title'] or 'untitled'})" for r in rows[:5])
            raise StoreError(f"{ref} matches several sessions: {names}; give more of the id")
        return rows[0]["id"]

    def rename(self, session_id: str, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            raise StoreError("a title cannot be empty")
        with self._tx() as db:
            if not db.execute(
                "UPDATE sessions SET title = ?, title_custom = 1 WHERE id = ?", (title, session_id)
            ).rowcount:
                raise StoreError(f"no session {session_id}")

    def delete(self, session_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            if not db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount:
                raise StoreError(f"no session {session_id}")

    def update(
        self,
        session_id: str,
        *,
        model_path: str | None = None,
        system_prompt: str | None | object = ...,
        settings: SessionSettings | None = None,
    ) -> None:
        """Remember a changed model, system prompt or settings (``...``/None: unchanged)."""
        sets, args = ["updated_at = ?"], [_now()]
        if model_path is not None:
            sets.append("model_path = ?")
            args.append(model_path)
        if system_prompt is not ...:
            sets.append("system_prompt = ?")
            args.append(system_prompt)
        if settings is not None:
            sets.append("settings = ?")
            args.append(settings.model_dump_json())
        with self._tx() as db:
            db.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE id = ?", (*args, session_id))

    # -- messages ----------------------------------------------------------------------

    def messages(self, session_id: str) -> list[StoredMessage]:
        rows = self._read(
            "SELECT id, role, content, status, finish, created_at FROM messages WHERE session_id = ? ORDER BY seq",
            (session_id,),
        )
        return [
            StoredMessage(
                id=r["id"],
                role=r["role"],
                content=r["content"],
                status=r["status"],
                finish=r["finish"],
                created_at=_ts(r["created_at"]),
            )
            for r in rows
        ]

    def begin_exchange(self, session_id: str, text: str) -> tuple[int, int]:
        """Commit a user message and an empty ``streaming`` reply together; their row ids."""
        now = _now()
        with self._tx() as db:
            seq = db.execute("SELECT coalesce(max(seq), 0) FROM messages WHERE session_id = ?", (session_id,))
            n = int(seq.fetchone()[0])
            user = db.execute(
                "INSERT INTO messages (session_id, seq, role, content, created_at) VALUES (?, ?, 'user', ?, ?)",
                (session_id, n + 1, text, now),
            ).lastrowid
            reply = db.execute(
                "INSERT INTO messages (session_id, seq, role, content, status, created_at)"
                " VALUES (?, ?, 'assistant', '', 'streaming', ?)",
                (session_id, n + 2, now),
            ).lastrowid
            db.execute(
                "UPDATE sessions SET updated_at = ?, title = CASE WHEN title_custom = 0 AND title = ''"
                " THEN ? ELSE title END WHERE id = ?",
                (now, title_from(text), session_id),
            )
        assert user is not None and reply is not None
        return user, reply

    def restart_reply(self, message_id: int) -> None:
        """A regenerated reply replaces the old one in place, streaming again."""
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET content = '', status = 'streaming', finish = NULL, created_at = ? WHERE id = ?",
                (_now(), message_id),
            )

    def checkpoint(self, message_id: int, content: str) -> None:
        """Save the reply so far (it stays ``streaming``)."""
        with self._tx() as db:
            db.execute("UPDATE messages SET content = ? WHERE id = ?", (content, message_id))

    def finish(self, message_id: int, content: str, finish: str | None, status: Status = "complete") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET content = ?, status = ?, finish = ? WHERE id = ?",
                (content, status, finish, message_id),
            )
            db.execute(
                "UPDATE sessions SET updated_at = ? WHERE id = (SELECT session_id FROM messages WHERE id = ?)",
                (_now(), message_id),
            )

    def drop_exchange(self, user_id: int, reply_id: int) -> None:
        """Forget a question that was cancelled before the model read it."""
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE id IN (?, ?)", (user_id, reply_id))

    def mark_interrupted(self, session_id: str) -> int:
        """Replies still ``streaming`` belonged to a process that died: say so.  Returns how many."""
        with self._tx() as db:
            return db.execute(
                "UPDATE messages SET status = 'interrupted', finish = 'interrupted'"
                " WHERE session_id = ? AND status = 'streaming'",
                (session_id,),
            ).rowcount

    def add_messages(self, session_id: str, messages: Sequence[StoredMessage]) -> None:
        """Append finished messages (import)."""
        with self._tx() as db:
            n = int(
                db.execute("SELECT coalesce(max(seq), 0) FROM messages WHERE session_id = ?", (session_id,)).fetchone()[
                    0
                ]
            )
            db.executemany(
                "INSERT INTO messages (session_id, seq, role, content, status, finish, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (session_id, n + i, m.role, m.content, m.status, m.finish, m.created_at.timestamp())
                    for i, m in enumerate(messages, start=1)
                ],
            )


def _salvage(damaged: Path, into: sqlite3.Connection) -> tuple[int, int]:
    """Copy the rows that can still be read from a damaged database; (sessions, messages) copied.

    A truncated file is first padded to the size its header claims (on a scratch copy):
    SQLite refuses a file shorter than its header says, even where the pages it needs
    are intact.  A message whose text is lost keeps its place, marked as lost.
    """
    scratch = damaged.with_name(damaged.name + ".salvage")
    try:
        shutil.copyfile(damaged, scratch)
        _pad_to_header_size(scratch)
        old = sqlite3.connect(f"file:{scratch}?mode=ro", uri=True, isolation_level=None)
    except (OSError, sqlite3.Error):
        scratch.unlink(missing_ok=True)
        return 0, 0
    old.row_factory = sqlite3.Row
    n_sessions = n_messages = 0
    into.execute("BEGIN IMMEDIATE")
    try:
        for row in _readable(old, "SELECT * FROM sessions"):
            keys = [k for k in row.keys() if k in _SESSION_COLUMNS]  # noqa: SIM118 (Row iterates values)
            into.execute(
                f"INSERT OR IGNORE INTO sessions ({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                [row[k] for k in keys],
            )
            n_sessions += 1
        known = {r["id"] for r in into.execute("SELECT id FROM sessions")}
        for m in _message_rows(old):
            if m["session_id"] not in known:
                continue
            try:
                content = old.execute("SELECT content FROM messages WHERE id = ?", (m["id"],)).fetchone()[0]
                status = "interrupted" if m["status"] == "streaming" else m["status"]
            except sqlite3.Error:
                content, status = "[lost: this message was in a damaged part of the database]", "interrupted"
            into.execute(
                "INSERT OR IGNORE INTO messages (session_id, seq, role, content, status, finish, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (m["session_id"], m["seq"], m["role"], content, status, m["finish"], m["created_at"]),
            )
            n_messages += 1
        into.execute("COMMIT")
    except sqlite3.Error:
        into.execute("ROLLBACK")
        raise
    finally:
        old.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{scratch}{suffix}").unlink(missing_ok=True)
    return n_sessions, n_messages


def _message_rows(db: sqlite3.Connection) -> list[sqlite3.Row]:
    """Message metadata, row by row: a damaged page then costs only the rows on it."""
    columns = "id, session_id, seq, role, status, finish, created_at"
    rows = {r["id"]: r for r in _readable(db, f"SELECT {columns} FROM messages")}
    top = _readable(db, "SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
    for rowid in range(1, int(top[0]["seq"]) + 1 if top else 0):
        if rowid not in rows:
            found = _readable(db, f"SELECT {columns} FROM messages WHERE id = ?", (rowid,))
            if found:
                rows[rowid] = found[0]
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


_SESSION_COLUMNS = {
    "id",
    "title",
    "title_custom",
    "created_at",
    "updated_at",
    "model_path",
    "system_prompt",
    "settings",
}


def _readable(db: sqlite3.Connection, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
    """The rows a query yields before the damage stops it."""
    rows: list[sqlite3.Row] = []
    try:
        for row in db.execute(sql, args):
            rows.append(row)
    except sqlite3.Error as exc:
        log.warning("stopped reading damaged rows: %s", exc)
    return rows
