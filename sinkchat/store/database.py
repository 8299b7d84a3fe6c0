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

import errno
import logging
import os
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sinkchat.errors import SinkchatError
from sinkchat.store import schema
from sinkchat.store.salvage import salvage
from sinkchat.store.text import Row, clean, tolerant
from sinkchat.store.wal import inspect

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
    max_tokens: int | None = None
    """The reply limit chosen for it (0: no limit; None: never chosen, the configured one applies)."""
    origin: str | None = None
    """Where it was started when not in a chat window: "api" for ``sinkchat serve``."""


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
    damaged_text: bool = False
    """Its title or settings held bytes that are not UTF-8 (shown replaced by U+FFFD)."""

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
    damaged_text: bool = Field(False, exclude=True)
    """Its text held bytes that are not UTF-8 (shown replaced by U+FFFD)."""


def title_from(text: str) -> str:
    """A title from the first message: its first non-empty line, shortened at a word."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = " ".join(line.split())
    if len(line) <= TITLE_LENGTH:
        return line
    cut = line[: TITLE_LENGTH - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > TITLE_LENGTH // 2 else cut) + "…"


_OPEN: dict[Path, int] = {}
"""Databases this process has open: their log is live, and probing their ``-shm`` lock would drop ours."""


def _in_use(shm: Path) -> bool:
    """True while another process has the database open (SQLite holds a lock on the ``-shm`` DMS byte)."""
    if sys.platform == "win32" or not shm.is_file():  # pragma: no cover - no POSIX locks on Windows
        return False
    import fcntl

    try:
        fd = os.open(shm, os.O_RDWR)
    except OSError:
        return False  # cannot open it for writing: nobody here can be writing the log either
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 128)
        return False
    finally:
        os.close(fd)


def _why_unwritable(folder: Path, error: Exception) -> str:
    """The user's words for why the sessions database cannot be written."""
    code = getattr(error, "errno", None)
    text = str(getattr(error, "strerror", None) or error)
    if (
        code in (errno.EROFS, errno.EACCES, errno.EPERM)
        or "readonly" in text
        or (folder.is_dir() and not os.access(folder, os.W_OK))
    ):
        return f"the sessions folder {folder} is read-only ({text})"
    try:
        full = shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        full = False
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or "full" in text or full:
        return f"the disk holding {folder} is full ({text})"
    return f"the sessions database {folder / DB_NAME} cannot be written ({text})"


def _ts(value: object) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, UTC)


def _text(value: object) -> str:
    """A text column as text, whatever type a damaged row holds there."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _now() -> float:
    return time.time()


class SessionStore:
    """Thread-safe access to the sessions database (one connection, one lock).

    A store that cannot write (a full disk, a read-only folder) still opens: it reads
    the file as it is (or, with no file, starts empty in memory), and every write raises
    a :class:`StoreError` that says why, so listing and showing work and a chat goes on unsaved.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / DB_NAME
        self.recovery: str | None = None
        """Set when damage was found: what was recovered or lost, and where the damaged files are kept."""
        self.unwritable: str | None = None
        """Why nothing can be saved (None: the store writes normally)."""
        self._lock = threading.RLock()
        self._key = self.path.absolute()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._db = self._open_read_only(exc)
            return
        self._key = self.path.resolve()  # one database, however its folder was named
        wal_damage = self._check_wal()
        try:
            self._db = self._open(self.path)
        except _Damaged as exc:
            self._db = self._recover(exc)
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                self._db = self._recover(exc)
            else:
                self._db = self._open_read_only(exc)
        if wal_damage:
            self.recovery = "; ".join(filter(None, [wal_damage, self.recovery]))
        _OPEN[self._key] = _OPEN.get(self._key, 0) + 1

    # -- opening -----------------------------------------------------------------------

    @staticmethod
    def _connect(target: Path | str, *, uri: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=10, uri=uri)
        return tolerant(db)

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

    def _open_read_only(self, error: Exception) -> sqlite3.Connection:
        """The file as it is, for reading, when it cannot be written; else an empty store in memory."""
        self.unwritable = _why_unwritable(self.folder, error)
        log.info("sessions database not writable: %s", self.unwritable)
        if self.path.is_file():
            # immutable=1 reads the main file alone, for when the -shm index cannot be made either
            for query in ("mode=ro", "mode=ro&immutable=1"):
                try:
                    db = self._connect(f"{self.path.resolve().as_uri()}?{query}", uri=True)
                    db.execute("SELECT count(*) FROM sessions").fetchone()
                    return db
                except sqlite3.Error as exc:
                    log.debug("read-only open (%s) failed: %s", query, exc)
        db = self._connect(":memory:")
        schema.upgrade(db, newer_than_known=self._too_new)
        return db

    def _too_new(self, version: int) -> Exception:
        return StoreError(
            f"{self.path} was written by a newer sinkchat (schema {version}, this one knows {schema.VERSION}); "
            "upgrade sinkchat to open it"
        )

    def _check_wal(self) -> str | None:
        """Look at the write-ahead log a killed process left, before SQLite replays (and drops) it."""
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        if self._key in _OPEN or not wal.is_file() or _in_use(shm):
            return None  # a live connection owns the log: it is not ours to judge
        report = inspect(wal, shm)
        if report is None or report.damage is None:
            return None
        kept = self.path.with_name(f"{DB_NAME}-wal.damaged-{datetime.now().strftime('%Y%m%d-%H%M%S')}")
        # Replaying a log cut before what was already copied into the main file would roll those
        # pages back to older versions: then the main file alone is the newest sound state.
        rolls_back = report.backfilled is not None and report.valid < report.backfilled
        try:
            if rolls_back:
                wal.replace(kept)
                shm.unlink(missing_ok=True)
            else:
                shutil.copyfile(wal, kept)
            where = f"; the damaged log is kept at {kept}"
        except OSError:
            where = ""
        lost = report.lost_frames
        if lost == 0:
            log.info("the write-ahead log was damaged (%s) but all of it is in the main file%s", report.damage, where)
            return None
        amount = "some committed changes" if lost is None else f"{lost} committed page writes"
        return (
            f"the write-ahead log {wal.name} was damaged ({report.damage}): {amount} not yet in the main file "
            f"are lost, so the last messages saved before sinkchat stopped may be missing or marked interrupted{where}"
        )

    def _recover(self, error: Exception) -> sqlite3.Connection:
        """Move the damaged file aside, start a fresh database and copy over what is readable."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{DB_NAME}.damaged-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.replace(Path(f"{aside}{suffix}"))
            db = self._open(self.path)
        except (OSError, sqlite3.Error) as exc:
            return self._open_read_only(exc)
        found = salvage(aside, db)
        self.recovery = (
            f"the sessions database was damaged ({error}); {found.describe()} into a new one. "
            f"The damaged file is kept at {aside}"
        )
        log.info("%s", self.recovery)
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if _OPEN.get(self._key, 0) > 1:
                _OPEN[self._key] -= 1
            else:
                _OPEN.pop(self._key, None)

    @contextmanager
    def _tx(self, *, checkpoint: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite failures (a full disk, a locked file) become a :class:`StoreError`.

        After it commits, the log is copied into the main file (``checkpoint``), so a
        damaged ``-wal`` can cost at most the reply being written, never a finished one.
        """
        with self._lock:
            if self.unwritable:
                raise StoreError(f"cannot save: {self.unwritable}")
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
            if checkpoint:
                self._checkpoint(db)

    @staticmethod
    def _checkpoint(db: sqlite3.Connection) -> None:
        """Copy the log into the main file and empty it, waiting at most a moment for a reader.

        An empty log has nothing a damaged disk could replay wrongly.  A reader in another
        process (``sessions list``) can hold it for an instant; then the next write does it.
        """
        try:
            db.execute("PRAGMA busy_timeout = 100")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.debug("checkpoint skipped: %s", exc)
        finally:
            db.execute("PRAGMA busy_timeout = 10000")

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
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
                    clean(title),
                    int(bool(title)),
                    now,
                    updated,
                    clean(model_path),
                    clean(system_prompt),
                    (settings or SessionSettings()).model_dump_json(),
                ),
            )
        return self.get(sid)

    _SELECT = "SELECT s.*, (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS n_messages FROM sessions s"

    @staticmethod
    def _info(row: Row) -> SessionInfo:
        """A session from its row; a field of the wrong type (a damaged row) falls back, never raises."""
        try:
            settings = SessionSettings.model_validate_json(_text(row["settings"]) or "{}")
        except ValueError:
            settings = SessionSettings()
        return SessionInfo(
            id=_text(row["id"]),
            title=_text(row["title"]),
            title_custom=bool(row["title_custom"]),
            created_at=_ts(row["created_at"]),
            updated_at=_ts(row["updated_at"]),
            model_path=_text(row["model_path"]) if row["model_path"] is not None else None,
            system_prompt=_text(row["system_prompt"]) if row["system_prompt"] is not None else None,
            settings=settings,
            n_messages=row["n_messages"],
            damaged_text=row.damaged,
        )

    def get(self, session_id: str) -> SessionInfo:
        rows = self._read(f"{self._SELECT} WHERE s.id = ?", (session_id,))
        if not rows:
            raise StoreError(f"no session {session_id}")
        return self._info(rows[0])

    def stamps(self) -> dict[str, float]:
        """Every session's last change (a Unix time): cheap enough to ask before each API request."""
        return {_text(r["id"]): float(r["updated_at"] or 0) for r in self._read("SELECT id, updated_at FROM sessions")}

    def named(self, title: str) -> str | None:
        """The newest session given exactly this title by a person or client (none: None)."""
        rows = self._read(
            "SELECT id FROM sessions WHERE title_custom = 1 AND title = ? ORDER BY updated_at DESC LIMIT 1", (title,)
        )
        return _text(rows[0]["id"]) if rows else None

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
        title = clean(" ".join(title.split())) or ""
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
            args.append(clean(model_path))
        if system_prompt is not ...:
            sets.append("system_prompt = ?")
            args.append(clean(system_prompt))  # type: ignore[arg-type]
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
                role=r["role"] if r["role"] in ("user", "assistant") else "user",
                content=_text(r["content"]),
                status=r["status"] if r["status"] in ("complete", "streaming", "interrupted") else "interrupted",
                finish=_text(r["finish"]) if r["finish"] is not None else None,
                created_at=_ts(r["created_at"]),
                damaged_text=r.damaged,
            )
            for r in rows
        ]

    def begin_exchange(self, session_id: str, text: str) -> tuple[int, int]:
        """Commit a user message and an empty ``streaming`` reply together; their row ids."""
        text = clean(text) or ""
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
        with self._tx(checkpoint=False) as db:
            db.execute("UPDATE messages SET content = ? WHERE id = ?", (clean(content), message_id))

    def finish(self, message_id: int, content: str, finish: str | None, status: Status = "complete") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET content = ?, status = ?, finish = ? WHERE id = ?",
                (clean(content), status, finish, message_id),
            )
            db.execute(
                "UPDATE sessions SET updated_at = ? WHERE id = (SELECT session_id FROM messages WHERE id = ?)",
                (_now(), message_id),
            )

    def drop_last(self, session_id: str, n_messages: int) -> None:
        """Forget a session's last ``n_messages`` messages (the chat went back to an earlier point)."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE session_id = ? ORDER BY seq DESC LIMIT ?)",
                (session_id, n_messages),
            )
            db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (_now(), session_id))

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

    def add_messages(self, session_id: str, messages: Sequence[StoredMessage], *, touch: bool = True) -> None:
        """Append finished messages (an import, or a history an API client brought along).

        A session without a title takes it from the first user message, as a chat does.
        ``touch=False`` keeps the session's last-change time (an import keeps the exported one).
        """
        first = next((m.content for m in messages if m.role == "user"), None)
        with self._tx() as db:
            if first is not None:
                db.execute(
                    "UPDATE sessions SET title = CASE WHEN title_custom = 0 AND title = ''"
                    " THEN ? ELSE title END WHERE id = ?",
                    (title_from(clean(first) or ""), session_id),
                )
            if touch:
                db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (_now(), session_id))
            n = int(
                db.execute("SELECT coalesce(max(seq), 0) FROM messages WHERE session_id = ?", (session_id,)).fetchone()[
                    0
                ]
            )
            db.executemany(
                "INSERT INTO messages (session_id, seq, role, content, status, finish, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (session_id, n + i, m.role, clean(m.content), m.status, m.finish, m.created_at.timestamp())
                    for i, m in enumerate(messages, start=1)
                ],
            )
