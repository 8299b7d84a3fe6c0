"""Saved sessions: the SQLite database, its schema, and what to do when it is damaged."""

from sinkchat.store.database import (
    DB_NAME,
    TITLE_LENGTH,
    SessionInfo,
    SessionSettings,
    SessionStore,
    Status,
    StoredMessage,
    StoreError,
    title_from,
)

__all__ = [
    "DB_NAME",
    "TITLE_LENGTH",
    "SessionInfo",
    "SessionSettings",
    "SessionStore",
    "Status",
    "StoreError",
    "StoredMessage",
    "title_from",
]
