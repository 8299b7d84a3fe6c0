"""What the UI needs from a chat and from the saved sessions, and how it gets them.

The UI talks to ``sinkchat`` (``Chat``, ``Session``, ``SessionLibrary``) through these
protocols only, so tests can drive every screen with fakes, and no widget ever reaches
llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from models.sampler import SamplingSettings
from sinkchat.settings import Settings
from sinkchat.stats import ChatStats
from sinkchat.store import SessionInfo, StoredMessage


class ReplyEnd(Protocol):
    finish_reason: str
    n_tokens: int


class ChatBackend(Protocol):
    model_name: str
    device: str
    n_ctx: int
    messages: list[dict[str, str]]
    sampling: SamplingSettings
    system_prompt: str | None
    chat_problem: str | None
    """Why the model cannot chat (a base model without a chat template): the UI continues text instead."""
    notes: list[str]
    """What sinkchat decided for this model (sliding-window cache, system prompt placement), shown once."""

    @property
    def stats(self) -> ChatStats: ...
    @property
    def busy(self) -> bool: ...
    @property
    def last_reply(self) -> ReplyEnd | None: ...
    def send(self, text: str, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]: ...
    def generate(self, prompt: str, *, max_tokens: int | None = None, stop_at_eos: bool = True) -> Iterator[str]: ...
    def regenerate(self, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]: ...
    def cancel(self) -> None: ...
    def reset(self, system_prompt: str | None = None) -> None: ...
    def rebuild(self, system_prompt: str | None = ...) -> int: ...
    def rewind(self, exchanges: int) -> None: ...
    def close(self) -> None: ...


ChatFactory = Callable[[Path, Settings], ChatBackend]
"""Loads a model into a chat; runs in a worker thread."""


def load_chat(path: Path, settings: Settings) -> ChatBackend:
    from sinkchat.chat import Chat

    return Chat.load(path, **settings.load_options())


class SessionBackend(ChatBackend, Protocol):
    """A chat bound to a saved session (``sinkchat.session.Session``)."""

    id: str
    title: str
    note: str | None
    save_error: str | None

    def switch(self, session_id: str) -> None: ...
    def delete_current(self) -> None: ...


class SessionSource(Protocol):
    """The saved sessions, as the UI sees them.  ``open`` runs in a worker thread."""

    def list(self, search: str | None = None) -> list[SessionInfo]: ...
    def messages(self, session_id: str) -> list[StoredMessage]: ...
    def rename(self, session_id: str, title: str) -> None: ...
    def delete(self, session_id: str) -> None: ...
    def open(self, chat: ChatBackend, session_id: str | None) -> SessionBackend: ...


class LibrarySessions:
    """:class:`SessionSource` over a ``SessionLibrary``; the first ``open`` follows the command line's plan."""

    def __init__(self, library, plan=None, given: frozenset[str] = frozenset()) -> None:  # noqa: ANN001
        self.library = library
        self.plan = plan
        self.given = given

    @property
    def notice(self) -> str | None:
        """What opening the store found (damage recovered, a lost log), to show once."""
        return self.library.store.recovery

    def list(self, search: str | None = None) -> list[SessionInfo]:
        return self.library.store.list(search=search)

    def messages(self, session_id: str) -> list[StoredMessage]:
        return self.library.store.messages(session_id)

    def rename(self, session_id: str, title: str) -> None:
        self.library.store.rename(session_id, title)

    def delete(self, session_id: str) -> None:
        self.library.delete(session_id)

    def open(self, chat: ChatBackend, session_id: str | None) -> SessionBackend:
        from sinkchat.opening import OpenPlan, open_session

        plan, given = self.plan, self.given
        self.plan, self.given = None, frozenset()
        if session_id is not None and not self.library.store.exists(session_id):
            session_id = None  # an empty chat is forgotten when closed: continue in a new one
        if plan is None or session_id is not None:
            plan = OpenPlan(Path(), {}, session_id)
            given = frozenset()
        return open_session(chat, self.library, plan, given)  # type: ignore[arg-type,return-value]
