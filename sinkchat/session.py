"""Persistent chats: a :class:`Chat` saved as it happens, resumable in an instant.

:class:`SessionLibrary` is the folder of saved sessions (database, KV snapshots, locks).
:class:`Session` is a chat bound to one saved session: it has the same interface as
``Chat`` for the UIs, commits every message as it happens, and after each reply saves a
KV snapshot in the background, so resuming loads the cache instead of reading the
history again.  A snapshot that is missing, damaged or made for other settings is never
fatal: the cache is rebuilt from the saved messages, and :attr:`Session.note` says so.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from models.errors import ModelError
from models.llama_model import backend_version
from models.sampler import SamplingSettings
from sinkchat.chat import Chat, ReplyInfo
from sinkchat.errors import SinkchatError
from sinkchat.export import ExportedSession, from_json, to_json, to_markdown
from sinkchat.locks import LockFileError, SessionLock, SessionLockedError
from sinkchat.snapshot import (
    SUFFIX,
    Fingerprint,
    SnapshotError,
    SnapshotHeader,
    crc32,
    messages_digest,
    model_identity,
    read_snapshot,
    write_snapshot,
)
from sinkchat.stats import ChatStats
from sinkchat.store import SessionInfo, SessionSettings, SessionStore, StoredMessage, StoreError

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 0.25
"""How often a streaming reply is written to the database."""
DETACHED = "no saved session is open"


class SessionLibrary:
    """The saved sessions in one folder: ``sessions.db``, ``snapshots/*.kv``, ``locks/*.lock``."""

    def __init__(
        self,
        folder: Path,
        *,
        max_snapshots: int = 32,
        max_snapshot_bytes: int = 8 << 30,
        snapshots_in_memory: int = 0,
    ) -> None:
        self.folder = folder
        self.store = SessionStore(folder)
        self.snapshots = folder / "snapshots"
        self.locks = folder / "locks"
        self.max_snapshots = max_snapshots
        self.max_snapshot_bytes = max_snapshot_bytes
        self.snapshots_in_memory = snapshots_in_memory
        """How many of the newest snapshots are also kept in RAM: switching between them reads no file
        (``sinkchat serve --max-conversations``)."""
        self._recent: OrderedDict[str, tuple[SnapshotHeader, bytes]] = OrderedDict()
        self._recent_lock = threading.Lock()

    def remember(self, session_id: str, header: SnapshotHeader, kv: bytes) -> None:
        """Keep a session's newest snapshot in memory too (the least recently used one goes)."""
        if self.snapshots_in_memory <= 0:
            return
        with self._recent_lock:
            self._recent[session_id] = (header, kv)
            self._recent.move_to_end(session_id)
            while len(self._recent) > self.snapshots_in_memory:
                self._recent.popitem(last=False)

    def recall(self, session_id: str) -> tuple[SnapshotHeader, bytes] | None:
        """The snapshot kept in memory for a session, if any."""
        with self._recent_lock:
            found = self._recent.get(session_id)
            if found is not None:
                self._recent.move_to_end(session_id)
            return found

    def forget(self, session_id: str) -> None:
        with self._recent_lock:
            self._recent.pop(session_id, None)

    def snapshot_path(self, session_id: str) -> Path:
        return self.snapshots / f"{session_id}{SUFFIX}"

    def lock(self, session_id: str) -> SessionLock:
        info = self.store.get(session_id)
        return SessionLock.acquire(self.locks / f"{session_id}.lock", f"session {info.short_id}")

    def is_open(self, session_id: str) -> bool:
        """True while some sinkchat process (this one included) has the session open."""
        return SessionLock.is_locked(self.locks / f"{session_id}.lock")

    def delete(self, session_id: str) -> None:
        """Delete a session, its snapshot and lock file; refused while it is open somewhere."""
        if self.store.unwritable:
            raise StoreError(f"cannot delete session {session_id[:8]}: {self.store.unwritable}")
        with self.lock(session_id):
            self.store.delete(session_id)
            self.snapshot_path(session_id).unlink(missing_ok=True)
            self.forget(session_id)
        (self.locks / f"{session_id}.lock").unlink(missing_ok=True)

    def export(self, session_id: str, fmt: str) -> str:
        info, messages = self.store.get(session_id), self.store.messages(session_id)
        if fmt == "json":
            return to_json(info, messages)
        if fmt == "md":
            return to_markdown(info, messages)
        raise SinkchatError(f"unknown export format {fmt!r}: use md or json")

    def import_json(self, text: str | bytes) -> SessionInfo:
        """Add an exported session; it keeps its id unless that id is already taken here."""
        doc: ExportedSession = from_json(text)
        if self.store.unwritable:
            raise StoreError(f"cannot import: {self.store.unwritable}")
        sid = None if self.store.exists(doc.id) or not _is_id(doc.id) else doc.id
        info = self.store.create(
            model_path=doc.model_path,
            system_prompt=doc.system_prompt,
            settings=doc.settings,
            title=doc.title if doc.title_custom else "",
            session_id=sid,
            created_at=doc.created_at,
            updated_at=doc.updated_at,
        )
        messages = [StoredMessage(**m.model_dump()) for m in doc.messages]
        self.store.add_messages(info.id, messages, touch=False)
        if doc.title and not doc.title_custom:
            with self.store._tx() as db:  # the derived title comes along as it was
                db.execute("UPDATE sessions SET title = ? WHERE id = ?", (doc.title, info.id))
        return self.store.get(info.id)

    def prune_snapshots(self, keep: str | None = None) -> int:
        """Bound the snapshots: the most recently used sessions' only, at most ``max_snapshots`` files
        and ``max_snapshot_bytes`` together (``keep``, the open session, always stays).

        Orphans (deleted sessions) and temporary files of killed writers go too.  Returns
        how many files were removed.
        """
        if not self.snapshots.is_dir():
            return 0
        files = {p.stem: p for p in self.snapshots.iterdir() if p.suffix == SUFFIX}
        wanted, total = set(), 0
        if keep in files:
            wanted.add(keep)
            total += _size(files[keep])
        for info in self.store.list():
            if len(wanted) >= self.max_snapshots:
                break
            path = files.get(info.id)
            if path is None or info.id in wanted:
                continue
            size = _size(path)
            if total + size > self.max_snapshot_bytes:
                continue
            wanted.add(info.id)
            total += size
        removed = 0
        for path in self.snapshots.iterdir():
            if _stale_tmp(path) or (path.suffix == SUFFIX and path.stem not in wanted):
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # a read-only folder: the snapshots stay, nothing is lost
                    log.debug("cannot remove %s: %s", path, exc)
                    continue
                removed += 1
        return removed

    def close(self) -> None:
        self.store.close()


def _is_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _stale_tmp(path: Path) -> bool:
    """A snapshot's temporary file whose writer is gone (``.ID.kv.PID.tmp``), or any over an hour old."""
    if not path.name.endswith(".tmp"):
        return False
    pid = path.name[: -len(".tmp")].rpartition(".")[2]
    if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
        return True
    return time.time() - _mtime(path) > 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


class _SnapshotWriter:
    """Writes snapshots on a background thread, newest first: a reply never waits for the disk."""

    def __init__(self) -> None:
        self._pending: dict[Path, tuple[SnapshotHeader, bytes]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self.last_error: str | None = None
        self.last_seconds: float | None = None

    def submit(self, path: Path, header: SnapshotHeader, kv: bytes) -> None:
        with self._cond:
            self._pending[path] = (header, kv)  # an older pending snapshot of the same session is dropped
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sinkchat-snapshots", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None
                    self._cond.notify_all()
                    return
                path, (header, kv) = self._pending.popitem()
                self._busy = True
            started = time.perf_counter()
            try:
                header = header.model_copy(update={"kv_bytes": len(kv), "kv_crc32": crc32(kv)})
                write_snapshot(path, header, kv)
                self.last_error = None
            except OSError as exc:  # a full disk costs the instant resume, never a message
                self.last_error = f"could not save the KV snapshot: {exc.strerror or exc}"
                log.info("%s (%s)", self.last_error, path)
            finally:
                self.last_seconds = time.perf_counter() - started
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted snapshot is on disk; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)


class Session:
    """A chat bound to a saved session; the UIs use it exactly like a :class:`Chat`."""

    def __init__(self, chat: Chat, library: SessionLibrary, info: SessionInfo, lock: SessionLock | None) -> None:
        self.chat = chat
        self.library = library
        self.info = info
        self._lock = lock
        self._writer = _SnapshotWriter()
        self._reply_id: int | None = None
        self._identity: tuple[Path, str] | None = None
        self.note: str | None = None
        """What happened on resume (e.g. the cache was rebuilt, and why), for the UI to show once."""
        self.resume_tokens = 0
        """Tokens evaluated while resuming: 0 when the snapshot was up to date."""
        self.save_error: str | None = None
        """Why the last reply could not be saved (a full disk ...); the UIs show it."""
        self.unsaved: str | None = None
        """Why this whole session is not being saved (a full disk or read-only folder at start)."""
        self._save = True
        """False: new chats are unsaved on purpose (``Session.new(save=False)``, ``--no-save``)."""
        self._default_save = True
        self._unsaved_why = "--no-save"
        self._origin: str | None = info.settings.origin
        self.max_tokens: int | None = info.settings.max_tokens
        """The reply limit chosen for this session (0: no limit; None: never chosen)."""
        self.restored_from: str | None = None
        """Where the last open found its cache: "memory", "snapshot", or None (rebuilt, or nothing to restore)."""

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def new(cls, chat: Chat, library: SessionLibrary, *, save: bool = True) -> Session:
        """Start a new saved session for ``chat``'s current conversation settings (no messages yet).

        When nothing can be saved, the chat still starts, unsaved, and :attr:`note` says why.
        ``save=False`` starts it unsaved on purpose (so do its later new chats); the store is not touched.
        """
        session = cls(chat, library, _blank_info(chat), None)
        session._save = session._default_save = save
        session._open_new()
        return session

    @classmethod
    def detached(cls, chat: Chat, library: SessionLibrary) -> Session:
        """A session object bound to no saved session yet: a server opens, starts and switches them later."""
        session = cls(chat, library, _blank_info(chat), None)
        session.unsaved = DETACHED
        return session

    def detach(self) -> None:
        """Give up the open session (it stays saved as it is) and leave the chat empty, bound to nothing."""
        self._writer.flush()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if not self.unsaved:
            self._forget_if_empty(self.id)
        self.chat.reset(None, raw=True)
        self.info, self.unsaved, self.note, self.resume_tokens, self.save_error = (
            _blank_info(self.chat),
            DETACHED,
            None,
            0,
            None,
        )
        self.restored_from = None

    def start(
        self, system_prompt: str | None, messages: Sequence[dict[str, str]] = (), *, origin: str | None = None
    ) -> int:
        """A new saved session that begins with ``messages`` (finished exchanges, e.g. an API client's history).

        The cache holds the system prompt and the newest exchanges that fit; all of them
        are saved.  Returns how many exchanges are cached.
        """
        self._save = self._default_save
        self._origin = origin
        if messages:
            kept = self.chat.load_history(messages, system_prompt)
        else:
            self.chat.reset(system_prompt)
            kept = 0
        self._switch_to(None)
        if messages and not self.unsaved:
            stored = [StoredMessage(role=m["role"], content=m["content"]) for m in messages]  # type: ignore[arg-type]
            if self._saving(self.library.store.add_messages, self.id, stored):
                self.info = self.library.store.get(self.id)
                self.save_snapshot()
        return kept

    def append_history(self, messages: Sequence[dict[str, str]]) -> None:
        """Add finished exchanges after the last one (only they are read) and save them."""
        self.chat.append_history(messages)
        if not self.unsaved:
            stored = [StoredMessage(role=m["role"], content=m["content"]) for m in messages]  # type: ignore[arg-type]
            if self._saving(self.library.store.add_messages, self.id, stored):
                self.save_snapshot()

    def _open_new(self) -> None:
        if not self._save:
            self._go_unsaved(self._unsaved_why)
            return
        store, chat = self.library.store, self.chat
        try:
            settings = self._settings().model_copy(update={"origin": self._origin})
            info = store.create(model_path=str(chat.model.path), system_prompt=chat.system_prompt, settings=settings)
        except StoreError as exc:
            self._go_unsaved(exc)
            return
        try:
            self._lock = self.library.lock(info.id)
        except LockFileError as exc:
            self._saving(store.delete, info.id)
            self._go_unsaved(exc)
            return
        self.info = info

    def _go_unsaved(self, exc: Exception | str) -> None:
        self.info, self.unsaved = _blank_info(self.chat), str(exc)
        self.note = f"this chat is not being saved: {exc}"
        log.info("%s", self.note)

    @classmethod
    def resume(cls, chat: Chat, library: SessionLibrary, session_id: str) -> Session:
        """Open a saved session in ``chat``: from its snapshot when it fits, else rebuilt from its messages.

        A session in a store that cannot be written opens unsaved (nobody can change it meanwhile).
        """
        unwritable = library.store.unwritable
        lock = None
        try:
            lock = library.lock(session_id)
        except LockFileError:
            if not unwritable:
                raise
        try:
            session = cls(chat, library, library.store.get(session_id), lock)
            if unwritable:
                session.unsaved = f"cannot save: {unwritable}"
            session._load()
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return session

    def _load(self) -> None:
        store, sid = self.library.store, self.info.id
        stored = store.messages(sid)
        interrupted = sum(m.status == "streaming" for m in stored)
        if interrupted and not self.unsaved:
            self._saving(store.mark_interrupted, sid)
        messages = as_exchanges(stored)
        sampling = self.info.settings.sampling
        if sampling:
            try:
                self.chat.sampling = SamplingSettings.model_validate(sampling)
            except ValueError:
                log.warning("ignoring the saved sampling settings of %s", sid)
        system_prompt = self.info.system_prompt
        notes = [f"{interrupted} reply was interrupted when sinkchat stopped"] if interrupted == 1 else []
        if interrupted > 1:
            notes.append(f"{interrupted} replies were interrupted when sinkchat stopped")
        started = time.perf_counter()
        self.restored_from = None
        why = self._try_snapshot(messages, system_prompt)
        if why is None:
            log.info("resumed %s from its snapshot (%d tokens read)", sid, self.resume_tokens)
        else:
            kept = self.chat.load_history(messages, system_prompt)
            self.resume_tokens = self.chat.engine.n_cached
            if messages:
                notes.append(
                    f"{why}: rebuilt the cache from the saved messages ({kept} of {len(messages) // 2} exchanges fit, "
                    f"{time.perf_counter() - started:.1f} s)"
                )
        damaged = sum(m.damaged_text for m in stored) + self.info.damaged_text
        if damaged:
            notes.append(f"{damaged} saved field(s) held bytes that are not UTF-8; they are shown as \ufffd")
        if self.unsaved:
            notes.append(f"this chat is not being saved: {self.unsaved}")
        elif self.info.model_path != str(self.chat.model.path):
            self._saving(store.update, sid, model_path=str(self.chat.model.path))
        self.note = "; ".join(notes) or None
        if not self.unsaved:
            self.library.prune_snapshots(keep=sid)

    def _try_snapshot(self, messages: list[dict[str, str]], system_prompt: str | None) -> str | None:
        """Restore from the snapshot (the one kept in memory first); None on success, else why it could not be used."""
        recalled = self.library.recall(self.info.id)
        if recalled is not None and self._restore(*recalled, messages, system_prompt) is None:
            self.restored_from = "memory"
            return None
        path = self.library.snapshot_path(self.info.id)
        try:
            header, kv = read_snapshot(path)
        except SnapshotError as exc:
            return str(exc) if path.exists() else "no snapshot"
        why = self._restore(header, kv, messages, system_prompt)
        if why is None:
            self.restored_from = "snapshot"
        return why

    def _restore(
        self, header: SnapshotHeader, kv: bytes, messages: list[dict[str, str]], system_prompt: str | None
    ) -> str | None:
        differences = header.fingerprint.differences(self.fingerprint())
        if differences:
            return "the snapshot was made for " + ", ".join(differences)
        n_system = 1 if system_prompt else 0
        covered = 2 * header.state.group
        if header.n_messages != n_system + covered or covered > len(messages):
            return "the snapshot does not match the saved messages"
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        if messages_digest(system + messages[:covered]) != header.messages_digest:
            return "the saved messages changed after the snapshot"
        try:
            self.resume_tokens = self.chat.restore(header.state, kv, messages, system_prompt)
        except (SinkchatError, ModelError) as exc:
            log.warning("snapshot of %s not usable: %s", self.info.id, exc)
            return f"the snapshot could not be loaded ({exc})"
        return None

    def fingerprint(self) -> Fingerprint:
        options, sinks = self.chat.context.options, self.chat.sinks
        return Fingerprint(
            model=self._model_identity(),
            n_ctx=self.chat.n_ctx,
            type_k=options.type_k,
            type_v=options.type_v,
            flash_attn=options.flash_attn,
            sink_tokens=sinks.sink_tokens,
            keep_system_prompt=sinks.keep_system_prompt,
            llama_cpp=backend_version(),
            chat_template=self.chat.template_digest,
            swa_full=self.chat.context.swa_full,
        )

    def _model_identity(self) -> str:
        path = self.chat.model.path
        if self._identity is None or self._identity[0] != path:
            self._identity = (path, model_identity(path))
        return self._identity[1]

    # -- the Chat interface --------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def title(self) -> str:
        return self.info.title

    @property
    def model_name(self) -> str:
        return self.chat.model_name

    @property
    def device(self) -> str:
        return self.chat.device

    @property
    def n_ctx(self) -> int:
        return self.chat.n_ctx

    @property
    def messages(self) -> list[dict[str, str]]:
        return self.chat.messages

    @property
    def system_prompt(self) -> str | None:
        return self.chat.system_prompt

    @property
    def sampling(self) -> SamplingSettings:
        return self.chat.sampling

    @sampling.setter
    def sampling(self, value: SamplingSettings) -> None:
        self.chat.sampling = value
        if not self.unsaved:
            self._saving(self.library.store.update, self.id, settings=self._settings())

    def remember_max_tokens(self, limit: int | None) -> None:
        """Keep the reply limit chosen in this session (None: no limit), so a resume restores it."""
        self.max_tokens = 0 if limit is None else limit
        if not self.unsaved:
            self._saving(self.library.store.update, self.id, settings=self._settings())

    def _settings(self) -> SessionSettings:
        return _settings_of(self.chat).model_copy(update={"max_tokens": self.max_tokens, "origin": self._origin})

    @property
    def stats(self) -> ChatStats:
        return self.chat.stats

    @property
    def busy(self) -> bool:
        return self.chat.busy

    @property
    def last_reply(self) -> ReplyInfo | None:
        return self.chat.last_reply

    @property
    def chat_problem(self) -> str | None:
        return self.chat.chat_problem

    @property
    def notes(self) -> list[str]:
        return self.chat.notes

    def generate(self, prompt: str, *, max_tokens: int | None = None, stop_at_eos: bool = True) -> Iterator[str]:
        """Continue raw text (a base model); continuations are not saved as messages."""
        return self.chat.generate(prompt, max_tokens=max_tokens, stop_at_eos=stop_at_eos)

    def cancel(self) -> None:
        self.chat.cancel()

    def send(self, text: str, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        """Stream a reply like :meth:`Chat.send`; question and reply are saved as they happen."""
        if self.chat.busy:
            yield from self.chat.send(text)  # raises BusyError, touching nothing
            return
        if self.unsaved:
            yield from self.chat.send(text, max_tokens=max_tokens, stop=stop)
            return
        store = self.library.store
        n_before = len(self.chat.messages)
        self.save_error = None
        try:
            user_id, reply_id = store.begin_exchange(self.id, text)
            if not self.info.title:
                self.info = store.get(self.id)
        except StoreError as exc:  # e.g. a full disk: the chat goes on, unsaved, and says so
            self._save_failed(exc)
            yield from self.chat.send(text, max_tokens=max_tokens, stop=stop)
            return
        stream = self.chat.send(text, max_tokens=max_tokens, stop=stop)
        try:
            yield from self._checkpointed(stream, reply_id)
        finally:
            stream.close()  # a consumer that stops early must not leave the chat holding its lock
            if len(self.chat.messages) == n_before:  # cancelled before the model read it
                self._saving(store.drop_exchange, user_id, reply_id)
            else:
                self._finish(reply_id)

    def regenerate(self, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        if self.unsaved:
            yield from self.chat.regenerate(max_tokens=max_tokens, stop=stop)
            return
        store = self.library.store
        stored = store.messages(self.id)
        stream = self.chat.regenerate(max_tokens=max_tokens, stop=stop)
        first = next(stream, None)  # raises (nothing to regenerate, busy) before anything is touched
        reply_id = stored[-1].id if stored and stored[-1].role == "assistant" else None
        if reply_id is None:
            raise SinkchatError("the saved session has no reply to regenerate")
        if not self._saving(store.restart_reply, reply_id):
            yield from _prepend(first, stream)
            return
        try:
            yield from self._checkpointed(_prepend(first, stream), reply_id)
        finally:
            stream.close()
            self._finish(reply_id)

    def rewind(self, exchanges: int) -> None:
        """Go back ``exchanges`` exchanges (to resend an edited message); the saved session follows."""
        self.chat.rewind(exchanges)
        if not self.unsaved and self._saving(self.library.store.drop_last, self.id, 2 * exchanges):
            self.save_snapshot()

    def _checkpointed(self, stream: Iterator[str], reply_id: int) -> Iterator[str]:
        store, pieces, saved_at = self.library.store, [], time.monotonic()
        for piece in stream:
            pieces.append(piece)
            if time.monotonic() - saved_at >= CHECKPOINT_SECONDS and self.save_error is None:
                self._saving(store.checkpoint, reply_id, "".join(pieces))
                saved_at = time.monotonic()
            yield piece

    def _finish(self, reply_id: int) -> None:
        """Commit the finished reply (the chat has closed the turn), then snapshot the cache."""
        reply = self.chat.messages[-1]["content"] if self.chat.messages else ""
        end = self.chat.last_reply
        if self._saving(self.library.store.finish, reply_id, reply, end.finish_reason if end else None):
            self.save_snapshot()

    def _saving(self, write: Callable[..., object], *args: object, **kwargs: object) -> bool:
        """Run a database write; a failure is kept in :attr:`save_error` instead of ending the chat."""
        try:
            write(*args, **kwargs)
            return True
        except StoreError as exc:
            self._save_failed(exc)
            return False

    def _save_failed(self, exc: StoreError) -> None:
        self.save_error = f"this chat is not being saved: {exc}"
        log.info("%s", self.save_error)  # the UIs show it; a log line would say it twice

    def save_snapshot(self) -> None:
        """Capture the cache now; the file is written in the background."""
        if self.unsaved:
            return
        try:
            state, kv = self.chat.capture()
        except (SinkchatError, ModelError) as exc:
            log.warning("no snapshot for %s: %s", self.id, exc)
            return
        header = SnapshotHeader(
            fingerprint=self.fingerprint(),
            state=state,
            n_messages=len(self.chat.messages),
            messages_digest=messages_digest(self.chat.messages),
            kv_bytes=0,
            kv_crc32=0,
        )
        self.library.remember(self.id, header, kv)
        self._writer.submit(self.library.snapshot_path(self.id), header, kv)

    def reset(self, system_prompt: str | None = None, *, save: bool | None = None) -> None:
        """A new chat is a new saved session; the current one stays in the library.

        ``save=False`` makes it unsaved: an incognito chat.  Without ``save``, the run's own
        choice applies again (saved, unless it was started with ``--no-save``).
        """
        self._save = self._default_save if save is None else save
        if save is False and self._default_save:
            self._unsaved_why = "an incognito chat"
        elif not self._default_save:
            self._unsaved_why = "--no-save"
        self.chat.reset(system_prompt)
        self._switch_to(None)

    def rebuild(self, system_prompt: str | None | object = ...) -> int:
        """Change the system prompt (or refill the cache) and remember it."""
        from sinkchat.chat import KEEP

        kept = self.chat.rebuild(KEEP if system_prompt is ... else system_prompt)
        if not self.unsaved and self._saving(self.library.store.update, self.id, system_prompt=self.chat.system_prompt):
            self.save_snapshot()
        return kept

    def switch(self, session_id: str) -> None:
        """Open another saved session in the same model and cache (this one is saved first)."""
        if session_id == self.id:
            return
        self._switch_to(session_id)

    def _switch_to(self, session_id: str | None) -> None:
        store = self.library.store
        if session_id is not None and store.unwritable:
            raise StoreError(f"cannot open another session here: {store.unwritable}")
        new_lock = self.library.lock(session_id) if session_id else None
        self._writer.flush()
        old, left, was_saved = self._lock, self.id, not self.unsaved
        self._lock, self.note, self.resume_tokens, self.unsaved, self.save_error = None, None, 0, None, None
        if old is not None:
            old.release()
        if was_saved:
            self._forget_if_empty(left)
        if session_id is None:
            self._open_new()
        else:
            self._lock, self.info = new_lock, store.get(session_id)
            self.max_tokens, self._origin = self.info.settings.max_tokens, self.info.settings.origin
            self._load()

    def delete_current(self) -> None:
        """Delete this session and start a new one in its place."""
        sid, saved = self.id, not self.unsaved
        if saved and self.library.store.unwritable:
            raise StoreError(f"cannot delete session {sid[:8]}: {self.library.store.unwritable}")
        self.chat.reset(self.chat.system_prompt)
        self._switch_to(None)
        if saved:
            self.library.delete(sid)

    def _forget_if_empty(self, session_id: str) -> None:
        """A chat left without a single message is not worth a line in the sessions list."""
        try:
            info = self.library.store.get(session_id)
            if info.n_messages == 0 and not info.title_custom:
                self.library.delete(session_id)
        except (SinkchatError, OSError) as exc:  # another process opened it meanwhile, or it is gone
            log.debug("kept empty session %s: %s", session_id, exc)

    def flush(self, timeout: float | None = None) -> bool:
        return self._writer.flush(timeout)

    def close(self, *, close_chat: bool = True) -> None:
        """Finish writing the snapshot, give up the session, and free the model (unless told not to)."""
        self._writer.flush(timeout=60)
        if self._lock is not None:
            self._lock.release()
        if not self.unsaved:
            self._forget_if_empty(self.id)
        if close_chat:
            self.chat.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_exchanges(stored: Sequence[StoredMessage]) -> list[dict[str, str]]:
    """Saved messages as strict user/assistant pairs for the model.

    A gap (a message lost with a damaged part of the database) becomes an empty turn,
    so the chat stays well formed; the database itself is left as it is.
    """
    out: list[dict[str, str]] = []
    for m in stored:
        expected = "user" if len(out) % 2 == 0 else "assistant"
        if m.role != expected:
            out.append({"role": expected, "content": ""})
        out.append({"role": m.role, "content": m.content})
    if len(out) % 2:
        out.append({"role": "assistant", "content": ""})
    return out


def _prepend(first: str | None, stream: Iterator[str]) -> Iterator[str]:
    """A reply whose first piece was already taken from its stream."""
    if first is not None:
        yield first
    yield from stream


def _blank_info(chat: Chat) -> SessionInfo:
    """A session that exists only in memory: what an unsaved chat is."""
    now = datetime.now(UTC)
    return SessionInfo(
        id=uuid.uuid4().hex,
        title="",
        created_at=now,
        updated_at=now,
        model_path=str(chat.model.path),
        system_prompt=chat.system_prompt,
        settings=_settings_of(chat),
    )


def _settings_of(chat: Chat) -> SessionSettings:
    return SessionSettings(
        sampling=chat.sampling.model_dump(mode="json"), n_ctx=chat.n_ctx, chat_template=chat.template_spec
    )


__all__ = ["Session", "SessionLibrary", "SessionLockedError"]
