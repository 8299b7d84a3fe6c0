"""The conversation pool: one model, many conversations, served one request at a time.

Every request runs on a single worker thread, in arrival order.  A chat request is matched
to the saved session it continues (:mod:`sinkchat.serve.matching`), that session's cache
is swapped into the context (from memory or its snapshot file, as a resumed session
would be), only the messages the cache has not seen are read, and the reply streams back
through callbacks.  So a conversation's cache never holds another's tokens, and a long
history is never read again.  Conversations are ordinary saved sessions: ``sinkchat run
--resume`` continues them, and they survive a restart.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from models.errors import ModelError
from models.sampler import SamplingSettings
from sinkchat.errors import BusyError, SinkchatError
from sinkchat.locks import SessionLockedError
from sinkchat.serve.matching import ConversationIndex, Pair, Turn, common_exchanges, pair_messages, same_text
from sinkchat.serve.protocol import ApiError
from sinkchat.session import DETACHED, Session, as_exchanges
from sinkchat.store import StoreError
from sinkchat.text_stream import StopMatcher

log = logging.getLogger(__name__)

ORIGIN = "api"


@dataclass
class Facts:
    """What a request cost and did to its conversation's cache; sent in ``sinkchat`` and ``X-Sinkchat-*``."""

    session: str | None
    action: str
    """new, continued, regenerated, rewound (an edited history), or completion (raw text)."""
    restored: str | None = None
    """Where the conversation's cache came from when it was not the one in the context: memory or snapshot."""
    rebuilt: bool = False
    """The cache was refilled from the messages (an unknown or edited history, a snapshot that did not fit)."""
    reason: str | None = None
    evaluated_tokens: int = 0
    """Tokens read before the first token of the reply: restoring, history, the new message."""
    reused_tokens: int = 0
    """Tokens of the prompt that were already in the cache."""
    prompt_tokens: int = 0
    """Tokens in the cache when the reply began: the prompt as the model saw it."""
    shifts: int = 0
    evicted_tokens: int = 0
    n_cached: int = 0
    n_pinned: int = 0
    n_ctx: int = 0
    base: tuple[int, int] = field(default=(0, 0), repr=False)
    """The conversation's shift and eviction counters before this request (not reported)."""

    def headers(self) -> dict[str, str]:
        out = {
            "X-Sinkchat-Action": self.action,
            "X-Sinkchat-Rebuilt": "true" if self.rebuilt else "false",
            "X-Sinkchat-Evaluated-Tokens": str(self.evaluated_tokens),
            "X-Sinkchat-Reused-Tokens": str(self.reused_tokens),
        }
        if self.session:
            out["X-Sinkchat-Session"] = self.session
        if self.restored:
            out["X-Sinkchat-Restored"] = self.restored
        return out

    def body(self) -> dict[str, Any]:
        out = asdict(self)
        del out["base"]
        return out


@dataclass
class Ready:
    """The prompt is read: the reply begins (the facts so far go in the response headers)."""

    facts: Facts


@dataclass
class Piece:
    text: str


@dataclass
class Done:
    finish_reason: str
    completion_tokens: int
    facts: Facts


@dataclass
class Failed:
    error: ApiError


Event = Ready | Piece | Done | Failed


@dataclass
class Job:
    """One request waiting for, or holding, the model."""

    emit: Callable[[Event], None]
    sampling: SamplingSettings
    max_tokens: int | None
    stop: Sequence[str] = ()
    turn: Turn | None = None
    pin: str | None = None
    """A conversation named by the client (``X-Sinkchat-Session``, ``prompt_cache_key``)."""
    prompt: str | None = None
    """Raw text to continue (``/v1/completions``) instead of a chat turn."""
    kind: Literal["chat", "completion"] = "chat"
    cancelled: threading.Event = field(default_factory=threading.Event)


class ConversationPool:
    """Owns the session (and through it the model); its worker thread is the only one that touches them."""

    def __init__(self, session: Session, *, max_queue: int = 32, default_system: str | None = None) -> None:
        self.session = session
        self.default_system = default_system
        """The system prompt of a request that brings none (``sinkchat serve --system``)."""
        self.chat = session.chat
        self.index = ConversationIndex()
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._current: Job | None = None
        self._current_lock = threading.Lock()
        self.served = 0
        self._thread = threading.Thread(target=self._run, name="sinkchat-serve", daemon=True)
        self._thread.start()

    # -- the server's side -----------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a request; refused (429) when too many already wait."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise ApiError(
                429,
                f"the server is busy: {self._jobs.maxsize} requests are already waiting for the model",
                type="rate_limit_error",
                code="server_busy",
            ) from None

    def cancel(self, job: Job) -> None:
        """The client went away: drop the request, or stop its reply after the current token."""
        job.cancelled.set()
        with self._current_lock:
            if self._current is job:
                self.chat.cancel()

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    @property
    def busy(self) -> bool:
        return self._current is not None

    def close(self, timeout: float = 30) -> None:
        """Stop the reply in progress, finish, and close the session (its snapshot is written)."""
        with self._current_lock:
            if self._current is not None:
                self._current.cancelled.set()
                self.chat.cancel()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit(Failed(ApiError(503, "the server is shutting down", type="server_error", code="shutdown")))
        self._jobs.put(None)
        self._thread.join(timeout)
        self.session.close()

    # -- the worker ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancelled.is_set():
                continue
            with self._current_lock:
                self._current = job
            try:
                self._serve(job)
            except ApiError as exc:
                job.emit(Failed(exc))
            except SessionLockedError as exc:
                job.emit(Failed(ApiError(409, str(exc), code="conversation_locked")))
            except BusyError as exc:  # cannot happen with one worker; kept truthful if it does
                job.emit(Failed(ApiError(409, str(exc), code="busy")))
            except (SinkchatError, ModelError, StoreError) as exc:
                log.warning("request failed: %s", exc)
                job.emit(Failed(ApiError(500, str(exc), type="server_error", code="model_error")))
            except Exception as exc:  # a bug must not take the server down: the next request is served
                log.exception("request failed")
                job.emit(
                    Failed(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error", code="internal"))
                )
            finally:
                with self._current_lock:
                    self._current = None
                self.served += 1

    def _serve(self, job: Job) -> None:
        chat = self.chat
        decoded = chat.context.decoded
        stops = StopFilter(job.stop)
        if job.kind == "completion":
            facts, stream = self._open_completion(job, stops)
        else:
            facts, stream = self._open_chat(job)
        if job.cancelled.is_set():  # the client left while its history was read: no reply to write
            stream.close()
            return
        ready = False
        try:
            for piece in stream:
                if not ready:
                    ready = True
                    self._measure(facts, decoded)
                    job.emit(Ready(facts))
                job.emit(Piece(piece))
                if job.cancelled.is_set():
                    chat.cancel()
        finally:
            stream.close()
        if not ready:
            self._measure(facts, decoded)
            job.emit(Ready(facts))
        self._measure(facts, decoded, final=True)
        if facts.session is not None:
            self.index.invalidate(facts.session)
        reply = chat.last_reply
        finish = "stop" if stops.hit else (reply.finish_reason if reply else "cancelled")
        job.emit(Done({"eos": "stop"}.get(finish, finish), reply.n_tokens if reply else 0, facts))

    def _measure(self, facts: Facts, decoded: int, *, final: bool = False) -> None:
        """Fill in the facts: what was read before the reply (at its first token), the cache after it (at the end)."""
        chat, stats = self.chat, self.chat.stats
        if not final:
            facts.evaluated_tokens = chat.context.decoded - decoded - chat.generated_tokens
        else:
            reply = chat.last_reply
            if reply is not None and reply.n_context:
                facts.prompt_tokens = reply.n_context
                facts.reused_tokens = max(0, reply.n_context - facts.evaluated_tokens)
        base_shifts, base_evicted = facts.base
        facts.shifts = stats.shifts - base_shifts
        facts.evicted_tokens = stats.evicted_tokens - base_evicted
        facts.n_cached, facts.n_pinned, facts.n_ctx = stats.n_cached, stats.n_pinned, stats.n_ctx

    # -- chat requests ---------------------------------------------------------------

    def _open_chat(self, job: Job) -> tuple[Facts, Iterator[str]]:
        """Bring the request's conversation into the context and read what it lacks; the reply's stream."""
        session, chat, turn = self.session, self.chat, job.turn
        assert turn is not None
        if turn.system is None and self.default_system:
            turn = replace(turn, system=self.default_system)
        if chat.chat_problem:
            raise ApiError(400, chat.chat_problem, code="model_cannot_chat")
        facts = self._pinned(job, turn) if job.pin else self._matched(turn)
        chat.sampling = job.sampling
        if facts.action == "regenerated":
            stream = session.regenerate(max_tokens=job.max_tokens, stop=job.stop)
        else:
            stream = session.send(turn.user, max_tokens=job.max_tokens, stop=job.stop)
        facts.session = None if session.unsaved else session.id
        return facts, stream

    def _refresh(self) -> None:
        store = self.session.library.store

        def load(sid: str) -> tuple[str | None, list[Pair]]:
            info = store.get(sid)
            return info.system_prompt, _pairs(as_exchanges(store.messages(sid)))

        try:
            self.index.refresh(store.stamps(), load)
        except StoreError as exc:  # an unreadable store: every request starts a conversation of its own
            log.warning("cannot read the saved conversations: %s", exc)

    def _matched(self, turn: Turn) -> Facts:
        self._refresh()
        match = self.index.find(turn)
        if match is not None:
            facts = self._switch(match.session_id)
            saved = self._saved()
            if (
                match.action == "continue"
                and _same_system(self.session.system_prompt, turn.system)
                and common_exchanges(saved, turn.history) == len(saved)
            ):
                facts.action = "continued"
                self._append(facts, match.extra)
                return facts
            if (
                match.action == "regenerate"
                and _same_system(self.session.system_prompt, turn.system)
                and common_exchanges(saved, turn.history) == len(turn.history) == len(saved) - 1
                and same_text(saved[-1][0], turn.user)
            ):
                facts.action = "regenerated"
                return facts
            log.info("conversation %s changed before it could be used; starting a new one", match.session_id)
        return self._start(turn)

    def _start(self, turn: Turn, title: str | None = None) -> Facts:
        """A conversation the server has not seen: the system prompt and the newest exchanges that fit."""
        session = self.session
        kept = session.start(turn.system, turn.messages(), origin=ORIGIN)
        if title and not session.unsaved:
            session.library.store.rename(session.id, title)
            session.info = session.library.store.get(session.id)
        facts = Facts(session=session.id, action="new", base=self._counters())
        if turn.history:
            facts.rebuilt = True
            facts.reason = (
                f"a history this server has not seen (or an edited one): the cache holds the system prompt and "
                f"the newest {kept} of {len(turn.history)} exchanges"
            )
        return facts

    def _switch(self, session_id: str) -> Facts:
        """Make ``session_id`` the conversation in the context (no work when it already is)."""
        session = self.session
        facts = Facts(session=session_id, action="continued")
        if session.unsaved == DETACHED or session.id != session_id:
            session.switch(session_id)
            facts.restored = session.restored_from
            if session.restored_from is None and session.messages:
                facts.rebuilt = True
                facts.reason = session.note
        facts.base = self._counters()
        return facts

    def _counters(self) -> tuple[int, int]:
        stats = self.chat.stats
        return stats.shifts, stats.evicted_tokens

    def _saved(self) -> list[Pair]:
        return _pairs([m for m in self.session.messages if m["role"] != "system"])

    def _pinned(self, job: Job, turn: Turn) -> Facts:
        """A conversation the client names: it follows the client's history, edits included.

        An edit cuts the conversation back to the first difference in place, so the name (or
        id) stays with it; what was cut is first kept in a copy, so no saved message is lost.
        """
        store, name = self.session.library.store, job.pin or ""
        sid = _resolve(store, name)
        if sid is None:
            return self._start(turn, title=name)
        facts = self._switch(sid)
        session = self.session
        saved = self._saved()
        same_system = _same_system(session.system_prompt, turn.system)
        common = common_exchanges(saved, turn.history) if same_system else 0
        if same_system and common == len(saved) == len(turn.history):
            return facts
        if (
            same_system
            and common == len(turn.history)
            and len(saved) == common + 1
            and same_text(saved[-1][0], turn.user)
        ):
            facts.action = "regenerated"
            return facts
        if not same_system or common < len(saved):
            facts.action = "rewound"
            if not session.unsaved:
                kept = self._keep_copy(sid)
                facts.reason = (
                    f"the history differs from the saved one; the saved version is kept as session {kept[:8]}"
                )
        if not same_system:
            session.rebuild(turn.system)
            facts.rebuilt = True
            saved = self._saved()
            common = common_exchanges(saved, turn.history)
        if common < len(saved):
            before = self.chat.rebuilds
            session.rewind(len(saved) - common)
            if self.chat.rebuilds != before:
                facts.rebuilt = True
        self._append(facts, turn.history[common:])
        return facts

    def _keep_copy(self, session_id: str) -> str:
        """A copy of a saved conversation as it is now (before a client's edit changes it); its id."""
        store = self.session.library.store
        info = store.get(session_id)
        copy = store.create(
            model_path=info.model_path,
            system_prompt=info.system_prompt,
            settings=info.settings,
            title=f"{info.title or 'untitled'} (before an edit)",
        )
        store.add_messages(copy.id, [m.model_copy(update={"id": None}) for m in store.messages(session_id)])
        return copy.id

    def _append(self, facts: Facts, pairs: Sequence[Pair]) -> None:
        """Read exchanges the client brings that the conversation lacks (refilled instead when they do not fit)."""
        if not pairs:
            return
        before = self.chat.rebuilds
        self.session.append_history(pair_messages(pairs))
        if self.chat.rebuilds != before:
            facts.rebuilt = True
            facts.reason = f"{len(pairs)} new exchanges did not fit: the cache holds the newest that fit"

    # -- raw completions -------------------------------------------------------------

    def _open_completion(self, job: Job, stops: StopFilter) -> tuple[Facts, Iterator[str]]:
        """Raw text in an empty cache: the conversation that was in it stays saved and comes back on demand."""
        session, chat = self.session, self.chat
        if session.unsaved != DETACHED:
            session.detach()
        else:
            chat.reset(None, raw=True)
        chat.sampling = job.sampling
        stream = stops.apply(chat.generate(job.prompt or "", max_tokens=job.max_tokens), chat.cancel)
        return Facts(session=None, action="completion", base=self._counters()), stream


class StopFilter:
    """Ends raw generation at the first stop string (the text from it on is dropped)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)
        self.hit = False

    def apply(self, stream: Iterator[str], cancel: Callable[[], None]) -> Iterator[str]:
        matcher = StopMatcher(self.stops)
        try:
            for piece in stream:
                text, hit = matcher.push(piece)
                if text:
                    yield text
                if hit:
                    self.hit = True
                    cancel()
                    for _ in stream:  # the generator ends at the cancel and records the reply
                        pass
                    return
            tail = matcher.flush()
            if tail:
                yield tail
        finally:
            stream.close()


def _resolve(store: Any, name: str) -> str | None:
    """A session id from a client's name for it: an id, a title given to it, or a unique id prefix."""
    if store.exists(name):
        return name
    named = store.named(name)
    if named is not None:
        return named
    if len(name) >= 8 and all(c in "0123456789abcdef" for c in name):
        try:
            return store.resolve(name)
        except (SinkchatError, StoreError):
            return None
    return None


def _pairs(messages: Sequence[dict[str, str]]) -> list[Pair]:
    return [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages) - 1, 2)]


def _same_system(a: str | None, b: str | None) -> bool:
    return same_text(a or "", b or "")
