"""What the UI needs from a chat, and how it gets one.

The UI talks to ``sinkchat.Chat`` (the session manager) through this protocol only, so
tests can drive every screen with a fake, and no widget ever reaches llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from models.sampler import SamplingSettings
from sinkchat.settings import Settings
from sinkchat.stats import ChatStats


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

    @property
    def stats(self) -> ChatStats: ...
    @property
    def busy(self) -> bool: ...
    @property
    def last_reply(self) -> ReplyEnd | None: ...
    def send(self, text: str, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]: ...
    def regenerate(self, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]: ...
    def cancel(self) -> None: ...
    def reset(self, system_prompt: str | None = None) -> None: ...
    def rebuild(self, system_prompt: str | None = ...) -> int: ...
    def close(self) -> None: ...


ChatFactory = Callable[[Path, Settings], ChatBackend]
"""Loads a model into a chat; runs in a worker thread."""


def load_chat(path: Path, settings: Settings) -> ChatBackend:
    from sinkchat.chat import Chat

    return Chat.load(path, **settings.load_options())
