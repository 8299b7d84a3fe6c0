"""A scripted stand-in for ``sinkchat.Chat``: the UI tests run without a model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from models.sampler import SamplingSettings
from sinkchat.errors import BusyError, SinkchatError
from sinkchat.locks import SessionLockedError
from sinkchat.settings import Settings
from sinkchat.stats import ChatStats


@dataclass
class FakeReply:
    finish_reason: str
    n_tokens: int


@dataclass
class FakeChat:
    """Replies with scripted text, piece by piece, and keeps stats that move like a sink cache's."""

    replies: list[str] = field(default_factory=lambda: ["Hello! How can I help?"])
    delay: float = 0.0
    prompt_delay: float = 0.0
    model_name: str = "fake-model.Q4_K_M"
    device: str = "CPU"
    n_ctx: int = 256
    system_prompt: str | None = None
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    messages: list[dict[str, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    last_reply: FakeReply | None = None
    closed: bool = False
    chat_problem: str | None = None
    notes: list[str] = field(default_factory=list)
    rebuild_delay: float = 0.0
    """Seconds a rebuild takes (a long re-read), holding the chat like the real one."""

    def __post_init__(self) -> None:
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self.n_cached = self.n_pinned = 21
        self.shifts = self.evicted = 0
        self.activity: str | None = None
        self.progress: tuple[int, int] | None = None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def stats(self) -> ChatStats:
        return ChatStats(
            n_ctx=self.n_ctx,
            n_cached=self.n_cached,
            n_pinned=self.n_pinned,
            shifts=self.shifts,
            evicted_tokens=self.evicted,
            fallbacks=0,
            can_shift=True,
            activity=self.activity,
            progress=self.progress,
            tokens_per_second=42.0 if self.last_reply else None,
            prompt_tokens_per_second=None,
            last_shift_ms=None,
            rss_bytes=180 * 2**20,
        )

    def _add_tokens(self, n: int) -> None:
        self.n_cached += n
        while self.n_cached > self.n_ctx:
            self.shifts += 1
            self.evicted += 60
            self.n_cached -= 60

    def _stream(self, max_tokens: int | None) -> Iterator[str]:
        text = self.replies[self._next % len(self.replies)]
        self._next += 1
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        out, finish = [], "eos"
        for i, piece in enumerate(pieces):
            if self._cancel.is_set():
                finish = "cancelled"
                break
            if max_tokens is not None and i >= max_tokens:
                finish = "length"
                break
            time.sleep(self.delay)
            self._add_tokens(1)
            out.append(piece)
            yield piece
        self.messages.append({"role": "assistant", "content": "".join(out)})
        self.last_reply = FakeReply(finish, len(out))

    def send(self, text: str, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        with self._lock:
            self._cancel.clear()
            self.calls.append(f"send:{text}")
            time.sleep(self.prompt_delay)
            if self._cancel.is_set():  # cancelled while "reading" the prompt: dropped, like Chat does
                self.last_reply = FakeReply("cancelled", 0)
                return
            self.messages.append({"role": "user", "content": text})
            self._add_tokens(len(text) // 4 + 5)
            yield from self._stream(max_tokens)

    def generate(self, prompt: str, *, max_tokens: int | None = None, stop_at_eos: bool = True) -> Iterator[str]:
        with self._lock:
            self._cancel.clear()
            self.calls.append(f"generate:{prompt}")
            self._add_tokens(len(prompt) // 4 + 1)
            yield from self._stream(max_tokens)
            self.messages.pop()  # a continuation is not a chat message

    def regenerate(self, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        with self._lock:
            if not self.messages or self.messages[-1]["role"] != "assistant":
                raise SinkchatError("there is no reply to regenerate yet")
            self._cancel.clear()
            self.calls.append("regenerate")
            self.messages.pop()
            yield from self._stream(max_tokens)

    def cancel(self) -> None:
        self._cancel.set()

    def reset(self, system_prompt: str | None = None) -> None:
        self.calls.append(f"reset:{system_prompt}")
        self.system_prompt = system_prompt
        self.messages = []
        self.n_cached = self.n_pinned

    def rewind(self, exchanges: int) -> None:
        with self._lock:
            self.calls.append(f"rewind:{exchanges}")
            del self.messages[len(self.messages) - 2 * exchanges :]

    def rebuild(self, system_prompt: str | None = None) -> int:
        if not self._lock.acquire(blocking=False):
            raise BusyError(f"the chat is {self.activity or 'busy'}; wait for it to finish")
        try:
            self.calls.append(f"rebuild:{system_prompt}")
            self.activity = "re-reading the history"
            steps = 10
            for i in range(steps):
                self.progress = (i * 100, steps * 100)
                time.sleep(self.rebuild_delay / steps)
            self.system_prompt = system_prompt
            return len(self.messages) // 2
        finally:
            self.activity = self.progress = None
            self._lock.release()

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    """A ``ChatFactory`` that hands out FakeChats and records what was loaded."""

    def __init__(self, **chat_options: object) -> None:
        self.options = chat_options
        self.loaded: list[Path] = []
        self.chats: list[FakeChat] = []

    def __call__(self, path: Path, settings: Settings) -> FakeChat:
        self.loaded.append(path)
        chat = FakeChat(model_name=path.stem, n_ctx=settings.cache.n_ctx, **self.options)  # type: ignore[arg-type]
        self.chats.append(chat)
        return chat


class FakeSession:
    """A FakeChat bound to a saved session in a real (temporary) SessionStore."""

    def __init__(self, chat: FakeChat, source: FakeSessions, session_id: str | None) -> None:
        self.chat, self.source = chat, source
        self.note: str | None = None
        self.save_error: str | None = None
        self.unsaved: str | None = None
        self._open(session_id)

    def _open(self, session_id: str | None) -> None:
        store = self.source.store
        if session_id is None:
            self.info = store.create(model_path=f"/models/{self.chat.model_name}.gguf")
            self.chat.messages = []
        else:
            if session_id in self.source.locked:
                raise SessionLockedError(f"session {session_id[:8]} is open in another sinkchat (process 4242)")
            self.info = store.get(session_id)
            self.chat.messages = [{"role": m.role, "content": m.content} for m in store.messages(session_id)]
            self.note = self.source.note

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def title(self) -> str:
        return self.info.title

    def __getattr__(self, name: str):  # noqa: ANN204 - everything else is the chat's
        return getattr(self.chat, name)

    @property
    def max_tokens(self) -> int | None:
        return self.info.settings.max_tokens

    def remember_max_tokens(self, limit: int | None) -> None:
        settings = self.info.settings.model_copy(update={"max_tokens": 0 if limit is None else limit})
        self.source.store.update(self.id, settings=settings)
        self.info = self.source.store.get(self.id)

    def send(self, text: str, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        store = self.source.store
        if self.unsaved:
            yield from self.chat.send(text, max_tokens=max_tokens, stop=stop)
            return
        _, reply = store.begin_exchange(self.id, text)
        yield from self.chat.send(text, max_tokens=max_tokens, stop=stop)
        store.finish(reply, self.chat.messages[-1]["content"], "eos")
        self.info = store.get(self.id)

    def regenerate(self, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        return self.chat.regenerate(max_tokens=max_tokens, stop=stop)

    def rewind(self, exchanges: int) -> None:
        self.chat.rewind(exchanges)
        self.source.store.drop_last(self.id, 2 * exchanges)

    def reset(self, system_prompt: str | None = None, *, save: bool | None = None) -> None:
        self.chat.reset(system_prompt)
        self.unsaved = "an incognito chat" if save is False else None
        if save is False:
            self.chat.messages = []
            self.info = self.info.model_copy(update={"id": "f" * 32, "title": ""})
        else:
            self._open(None)

    def switch(self, session_id: str) -> None:
        self.source.switched.append(session_id)
        self._open(session_id)

    def delete_current(self) -> None:
        old = self.id
        self._open(None)
        self.source.store.delete(old)

    def close(self) -> None:
        self.chat.close()


class FakeSessions:
    """A SessionSource over a real SessionStore; ``locked`` ids act as open in another process."""

    def __init__(self, folder: Path, resume: str | None = None, note: str | None = None) -> None:
        from sinkchat.store import SessionStore

        self.store = SessionStore(folder)
        self.locked: set[str] = set()
        self.switched: list[str] = []
        self.resume, self.note = resume, note

    @property
    def notice(self) -> str | None:
        return self.store.recovery

    def list(self, search: str | None = None):  # noqa: ANN201
        return self.store.list(search=search)

    def messages(self, session_id: str):  # noqa: ANN201
        return self.store.messages(session_id)

    def rename(self, session_id: str, title: str) -> None:
        self.store.rename(session_id, title)

    def delete(self, session_id: str) -> None:
        if session_id in self.locked:
            raise SessionLockedError(f"session {session_id[:8]} is open in another sinkchat (process 4242)")
        self.store.delete(session_id)

    def open(self, chat: FakeChat, session_id: str | None) -> FakeSession:
        if session_id is None and self.resume is not None:
            session_id, self.resume = self.resume, None
        return FakeSession(chat, self, session_id)
