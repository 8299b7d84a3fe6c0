"""Sessions as files: Markdown to read, JSON to move a session between machines."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from sinkchat.errors import SinkchatError
from sinkchat.store import SessionInfo, SessionSettings, StoredMessage
from sinkchat.turns import alternates

if TYPE_CHECKING:
    from sinkchat.store import SessionStore

FORMAT = "sinkchat.session"


class ExportError(SinkchatError):
    """A file that is not a sinkchat session export."""


class ExportedMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str
    status: Literal["complete", "interrupted"] = "complete"
    finish: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ExportedSession(BaseModel):
    """The JSON export: everything needed to continue the chat elsewhere (no KV cache)."""

    format: Literal["sinkchat.session"] = FORMAT
    version: Literal[1] = 1
    id: str
    title: str = ""
    title_custom: bool = False
    created_at: datetime
    updated_at: datetime
    model_path: str | None = None
    system_prompt: str | None = None
    settings: SessionSettings = Field(default_factory=SessionSettings)
    messages: list[ExportedMessage]


def to_json(info: SessionInfo, messages: list[StoredMessage]) -> str:
    doc = ExportedSession(
        id=info.id,
        title=info.title,
        title_custom=info.title_custom,
        created_at=info.created_at,
        updated_at=info.updated_at,
        model_path=info.model_path,
        system_prompt=info.system_prompt,
        settings=info.settings,
        messages=[
            ExportedMessage(
                role=m.role,
                content=m.content,
                status="complete" if m.status == "complete" else "interrupted",
                finish=m.finish,
                created_at=m.created_at,
            )
            for m in messages
        ],
    )
    return doc.model_dump_json(indent=2) + "\n"


def from_json(text: str | bytes) -> ExportedSession:
    try:
        doc = ExportedSession.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ExportError(f"not a sinkchat session export ({where}: {first['msg']})") from None
    if not alternates([m.role for m in doc.messages]):
        raise ExportError("the exported messages must alternate user, assistant, starting with a user message")
    return doc


def _heading(text: str, limit: int = 200) -> str:
    """A title as one heading line: a title imported from elsewhere may be any length."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def to_markdown(info: SessionInfo, messages: list[StoredMessage]) -> str:
    """A readable transcript.  Message text is written as it is: it is the user's data."""
    lines = [f"# {_heading(info.title) or 'Untitled chat'}", ""]
    lines.append(f"- session: `{info.id}`")
    lines.append(f"- model: {_heading(info.model_name)}")
    lines.append(f"- started: {info.created_at.astimezone().strftime('%Y-%m-%d %H:%M')}")
    lines.append("")
    if info.system_prompt:
        lines += ["## System", "", info.system_prompt, ""]
    for m in messages:
        heading = "User" if m.role == "user" else "Assistant"
        if m.status != "complete":
            heading += " (interrupted)"
        lines += [f"## {heading}", "", m.content, ""]
    return "\n".join(lines).rstrip() + "\n"


class _Said(Protocol):
    role: str
    content: str


def conversation_digest(system_prompt: str | None, messages: Sequence[_Said]) -> str:
    """What makes two sessions the same chat: the system prompt and every message's role and text."""
    doc = [system_prompt or "", [[m.role, m.content] for m in messages]]
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode("utf-8")).hexdigest()


def already_here(store: SessionStore, doc: ExportedSession) -> SessionInfo | None:
    """The session of ``store`` that holds the same chat as ``doc``: an earlier import of it, or its original.

    The same chat is the same system prompt and messages; the one with the export's own id
    comes first.  A session that went on after the export is another chat: importing adds it.
    """
    digest = conversation_digest(doc.system_prompt, doc.messages)
    candidates = [info for info in store.list() if info.n_messages == len(doc.messages)]
    candidates.sort(key=lambda info: info.id != doc.id)
    for info in candidates:
        if conversation_digest(info.system_prompt, store.messages(info.id)) == digest:
            return info
    return None
