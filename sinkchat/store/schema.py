"""The sessions database schema and its upgrade steps.

The version lives in ``PRAGMA user_version``.  Step ``i`` upgrades a database from
version ``i`` to ``i + 1``; a new sinkchat appends a step and never edits an old one, so
every database ever written can be brought up to date in order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Step = Callable[[sqlite3.Connection], None]


def _core_tables(db: sqlite3.Connection) -> None:
    """Version 1: sessions and their messages."""
    _script(
        db,
        """
        CREATE TABLE IF NOT EXISTS sessions (
            id            TEXT PRIMARY KEY,
            title         TEXT NOT NULL DEFAULT '',
            title_custom  INTEGER NOT NULL DEFAULT 0,
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL,
            model_path    TEXT,
            system_prompt TEXT,
            settings      TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE IF NOT EXISTS messages (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            seq         INTEGER NOT NULL,
            role        TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            content     TEXT NOT NULL,
            status      TEXT NOT NULL DEFAULT 'complete'
                        CHECK (status IN ('complete', 'streaming', 'interrupted')),
            finish      TEXT,
            created_at  REAL NOT NULL,
            UNIQUE (session_id, seq)
        );
        CREATE INDEX IF NOT EXISTS sessions_by_update ON sessions (updated_at DESC);
        """,
    )


def _script(db: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: ``executescript`` would commit the step's transaction first."""
    statement = ""
    for part in script.split(";"):
        statement += part + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                db.execute(statement)
            statement = ""


def fts5_available(db: sqlite3.Connection) -> bool:
    try:
        db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        db.execute("DROP TABLE temp.fts5_probe")
        return True
    except sqlite3.OperationalError:
        return False


def _search_index(db: sqlite3.Connection) -> None:
    """Version 2: a full-text index of message contents, filled from the existing rows.

    Without FTS5 in this SQLite build, search falls back to ``LIKE`` and no index is made.
    """
    if not fts5_available(db):
        return
    _script(
        db,
        """
        CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id');
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
            INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
        END;
        INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
        """,
    )


STEPS: list[Step] = [_core_tables, _search_index]
VERSION = len(STEPS)


def upgrade(db: sqlite3.Connection, *, newer_than_known: Callable[[int], Exception]) -> int:
    """Bring the database to :data:`VERSION`, one committed step at a time; returns the old version.

    ``db`` must be in autocommit mode (``isolation_level=None``): each step and its
    version bump commit together, or not at all.
    """
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    if found > VERSION:
        raise newer_than_known(found)
    for version in range(found, VERSION):
        db.execute("BEGIN IMMEDIATE")
        try:
            STEPS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return found
