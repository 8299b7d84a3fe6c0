"""The chat screen: conversation, composer, live cache gauge.

All llama.cpp work (loading, decoding, resetting) runs in thread workers of one group;
tokens come back in batches as messages, so keystrokes stay responsive while a reply
streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from textual import on, work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from models.errors import ModelError
from sinkchat.errors import SinkchatError
from sinkchat.safe_text import inert, inert_line
from sinkchat.store import StoredMessage
from tui import keys
from tui.backend import ChatBackend
from tui.screens.forms import SamplingChoice, SamplingScreen, SystemPromptScreen
from tui.screens.models import ModelPickerScreen
from tui.screens.sessions import SessionChoice, SessionsScreen
from tui.widgets.composer import Composer
from tui.widgets.messages import AssistantMessage, UserMessage
from tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from tui.app import SinkchatApp

BATCH_SECONDS = 0.05
"""Tokens reach the UI at most 20 times a second, in batches."""

FINISH_NOTES = {"cancelled": "stopped", "length": "max tokens reached", "stop": "stop string"}


def _resend(chat: ChatBackend, back: int, text: str, max_tokens: int | None) -> Iterator[str]:
    """Go back ``back`` exchanges, then send the edited message from there."""
    chat.rewind(back)  # type: ignore[attr-defined]
    yield from chat.send(text, max_tokens=max_tokens)


def user_message(error: BaseException) -> str:
    """What a person needs to read about a failure: the message for their errors, the type otherwise."""
    if isinstance(error, (ModelError, SinkchatError)):
        return str(error)
    if isinstance(error, ValidationError):
        from sinkchat.settings import describe_validation

        return describe_validation(error)
    return f"{type(error).__name__}: {error} (run with --verbose for details)"


class ChatScreen(Screen[None]):
    BINDINGS = keys.CHAT

    class ModelReady(Message):
        def __init__(
            self, chat: ChatBackend, path: Path, history: list[StoredMessage], old_closed: bool = False
        ) -> None:
            super().__init__()
            self.chat, self.path, self.history, self.old_closed = chat, path, history, old_closed

    class SessionOpened(Message):
        """Another saved session is now in the cache: show its messages."""

        def __init__(self, history: list[StoredMessage], note: str | None) -> None:
            super().__init__()
            self.history, self.note = history, note

    class Chunk(Message):
        def __init__(self, view: AssistantMessage, text: str) -> None:
            super().__init__()
            self.view, self.text = view, text

    class ReplyDone(Message):
        def __init__(
            self,
            view: AssistantMessage,
            note: str | None,
            dropped: UserMessage | None = None,
            failed: bool = False,
            regenerated: bool = False,
        ) -> None:
            super().__init__()
            self.view, self.note, self.dropped, self.failed = view, note, dropped, failed
            self.regenerated = regenerated

    class TaskDone(Message):
        def __init__(self, note: str, clear: bool = False) -> None:
            super().__init__()
            self.note, self.clear = note, clear

    def __init__(self) -> None:
        super().__init__()
        self.replying = False
        self.loading_model = False
        self.continuing = False
        """A base model is loaded: what the user types is continued as text, not answered."""
        self.replies_done = 0
        self.state = ""
        self.busy: str | None = None
        """What a background task is doing ("re-reading the history" ...), while no reply runs."""
        self.queued = False
        """A message was submitted during ``busy``: it waits in the composer and is sent when that ends."""

    @property
    def sink_app(self) -> SinkchatApp:
        return self.app  # type: ignore[return-value]

    @property
    def chat(self) -> ChatBackend | None:
        return self.sink_app.chat

    def compose(self) -> ComposeResult:
        yield Header(icon="⛁")
        yield VerticalScroll(id="messages")
        yield Composer()
        yield StatusBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#messages", VerticalScroll).anchor()
        self.query_one(Composer).focus()
        self.refresh_status()
        self.set_interval(0.25, self.refresh_status)

    def refresh_status(self) -> None:
        chat = self.chat
        state = self.state + (" · your message waits" if self.queued and self.busy else "")
        self.query_one(StatusBar).show(chat.stats if chat is not None else None, state)
        self.sub_title = f"{inert_line(chat.model_name)} · {chat.device}" if chat is not None else "no model"

    def set_state(self, state: str) -> None:
        self.state = state
        self.refresh_status()

    def begin_busy(self, what: str) -> None:
        """A background task starts: one visible state, and input is kept until it ends."""
        self.busy = what
        self.set_state(f"{what} …")

    def end_busy(self) -> None:
        """The task ended (or failed): a message typed meanwhile is sent now."""
        self.busy = None
        self.set_state("")
        if self.queued:
            self.queued = False
            composer = self.query_one(Composer)
            if composer.text.strip() and self.chat is not None:
                self.post_message(Composer.Submitted(composer.text))

    # -- models ----------------------------------------------------------------------------

    def load(self, path: Path) -> None:
        """Load a model off the UI thread; the current saved session (if any) continues in it."""
        self.begin_busy(f"loading {path.stem}")
        self.query_one("#messages").loading = True
        self.loading_model = True
        self.load_worker(path, self.chat)

    @work(thread=True, group="llm", exit_on_error=False, name="load")
    def load_worker(self, path: Path, old: ChatBackend | None) -> None:
        chat = self.sink_app.chat_factory(path, self.sink_app.settings)
        sessions = self.sink_app.sessions
        if sessions is None:
            self.post_message(self.ModelReady(chat, path, []))
            return
        reopen = getattr(old, "id", None)
        try:
            if old is not None:
                old.close()  # saves it and gives up its lock, so the new model can open it
            session = sessions.open(chat, reopen)
            history = sessions.messages(session.id)
        except BaseException:
            chat.close()
            if old is not None:
                self.sink_app.call_from_thread(self._lost_chat, old)
            raise
        self.post_message(self.ModelReady(session, path, history, old_closed=old is not None))

    def _lost_chat(self, old: ChatBackend) -> None:
        if self.sink_app.chat is old:
            self.sink_app.chat = None

    async def on_chat_screen_model_ready(self, message: ModelReady) -> None:
        old, app = self.chat, self.sink_app
        messages = self.query_one("#messages")
        messages.loading = False
        self.loading_model = False
        await self.show_history(message.history)
        self.notify(f"{message.chat.model_name} on {message.chat.device}", title="Model ready", markup=False)
        app.chat, app.model_path = message.chat, message.path
        self.restore_limit()
        self.show_note(getattr(message.chat, "note", None))
        self.set_mode(message.chat)
        self.end_busy()
        if old is not None and not message.old_closed:
            self.close_worker(old)

    async def show_history(self, history: list[StoredMessage]) -> None:
        """Replace the view with a saved conversation; replies cut off by a crash say so."""
        view = self.query_one("#messages", VerticalScroll)
        await view.remove_children()
        widgets: list[UserMessage | AssistantMessage] = []
        for stored in history:
            if stored.role == "user":
                widgets.append(UserMessage(stored.content))
            else:
                reply = AssistantMessage(stored.content)
                if stored.status != "complete":
                    reply.border_subtitle = "interrupted"
                elif stored.finish in FINISH_NOTES:
                    reply.border_subtitle = FINISH_NOTES[stored.finish]
                widgets.append(reply)
        if widgets:
            await view.mount_all(widgets)
        view.scroll_end(animate=False)
        view.anchor()

    def set_mode(self, chat: ChatBackend) -> None:
        """Chat, or continue text when the model cannot chat; say which, and what was decided for the model."""
        problem = getattr(chat, "chat_problem", None)
        self.continuing = problem is not None
        composer = self.query_one(Composer)
        composer.continuing(self.continuing)
        if problem is not None:
            self.notify(
                f"{problem} What you type is continued as text instead.",
                title="No chat template",
                severity="warning",
                timeout=20,
                markup=False,
            )
        for note in getattr(chat, "notes", []):
            self.notify(note, title="Model", timeout=12, markup=False)

    def show_note(self, note: str | None) -> None:
        chat = self.chat
        if note:
            self.notify(note, title="Session", timeout=15, markup=False)
            if chat is not None and getattr(chat, "note", None) == note:
                chat.note = None  # type: ignore[attr-defined]

    @work(thread=True, group="llm", exit_on_error=False)
    def close_worker(self, chat: ChatBackend) -> None:
        chat.close()

    # -- replies -----------------------------------------------------------------------------

    def ready(self, *, keep: bool = False) -> ChatBackend | None:
        """The chat, when nothing runs; else None, after saying truly what runs.

        With ``keep`` (a message was submitted) the message stays in the composer and is
        sent as soon as the running task ends; only a running reply refuses it outright.
        """
        if self.replying:
            self.notify("A reply is still running: Esc stops it.", severity="warning", markup=False)
            return None
        if self.busy is not None:
            if keep:
                self.queued = True
                self.notify(f"Wait: {self.busy}. Your message is kept and sent when it ends.", markup=False)
                self.refresh_status()
            else:
                self.notify(f"Wait: {self.busy}; try again when it ends.", severity="warning", markup=False)
            return None
        if self.chat is None:
            self.notify("No model is loaded yet.", severity="warning", markup=False)
            return None
        return self.chat

    @on(Composer.Recall)
    def recall(self, event: Composer.Recall) -> None:
        """Up/Down in the box: bring back one of your earlier messages to edit and resend from there."""
        composer = self.query_one(Composer)
        chat = self.chat
        mine = [m["content"] for m in (chat.messages if chat is not None else []) if m["role"] == "user"]
        if self.continuing or not mine:
            return
        back = composer.recalled + event.step
        if back > len(mine):
            self.app.bell()
            return
        self.set_recalled(back, mine[-back] if back > 0 else "")

    def set_recalled(self, back: int, text: str) -> None:
        composer = self.query_one(Composer)
        composer.recalled = back
        composer.text = text
        composer.move_cursor(composer.document.end if back == 0 else (0, 0))
        composer.border_title = (
            f"editing your message {back} back · Enter resends it, dropping what followed · Esc cancels"
            if back
            else None
        )

    @on(Composer.Submitted)
    async def send(self, event: Composer.Submitted) -> None:
        if self.ready(keep=True) is None:
            return
        composer = self.query_one(Composer)
        back = composer.recalled
        self.set_recalled(0, "")
        composer.clear()
        messages = self.query_one("#messages", VerticalScroll)
        if back:  # an edited earlier message: the chat goes back to before it, on screen too
            users = list(self.query(UserMessage))
            shown = list(messages.children)
            if back <= len(users) and users[-back] in shown:
                await messages.remove_children(shown[shown.index(users[-back]) :])
        question = UserMessage(event.text, title="text" if self.continuing else "you")
        await messages.mount(question)
        view = AssistantMessage(title="continuation" if self.continuing else "assistant")
        await messages.mount(view)
        messages.anchor()
        text, max_tokens = event.text, self.sink_app.max_tokens
        if self.continuing:  # a base model: continue the text (not saved as a chat)
            self.start_reply(view, lambda chat: chat.generate(text, max_tokens=max_tokens))
        elif back:
            self.start_reply(view, lambda chat: _resend(chat, back, text, max_tokens), question, rewound=back)
        else:
            self.start_reply(view, lambda chat: chat.send(text, max_tokens=max_tokens), question)

    def start_reply(
        self,
        view: AssistantMessage,
        run: Callable[[ChatBackend], Iterator[str]],
        question: UserMessage | None = None,
        *,
        regenerate: bool = False,
        rewound: int = 0,
    ) -> None:
        view.start()
        self.replying = True
        self.set_state("replying … (Esc stops)")
        self.reply_worker(view, run, question, regenerate, rewound)

    @work(thread=True, group="llm", exit_on_error=False, name="reply")
    def reply_worker(
        self,
        view: AssistantMessage,
        run: Callable[[ChatBackend], Iterator[str]],
        question: UserMessage | None,
        regenerate: bool,
        rewound: int = 0,
    ) -> None:
        chat = self.chat
        assert chat is not None
        pending: list[str] = []
        sent_at = time.monotonic()
        note: str | None = "error"
        n_messages = len(chat.messages) - 2 * rewound  # what the chat holds before the question is read
        dropped, failed = None, True
        try:
            for piece in run(chat):
                pending.append(piece)
                if time.monotonic() - sent_at >= BATCH_SECONDS:
                    self.post_message(self.Chunk(view, "".join(pending)))
                    pending, sent_at = [], time.monotonic()
            end = chat.last_reply
            note = FINISH_NOTES.get(end.finish_reason) if end is not None else None
            failed = False
        finally:
            if question is not None and len(chat.messages) == n_messages:
                dropped = question  # stopped (or failed) before the message was read: it was not sent
            if pending:
                self.post_message(self.Chunk(view, "".join(pending)))
            self.post_message(self.ReplyDone(view, note, dropped, failed, regenerated=regenerate))

    async def on_chat_screen_chunk(self, message: Chunk) -> None:
        await message.view.write(message.text)

    async def on_chat_screen_reply_done(self, message: ReplyDone) -> None:
        if message.dropped is not None:
            composer = self.query_one(Composer)
            if not composer.text:
                composer.text = message.dropped.text  # give the unsent message back
            await message.dropped.remove()
            await message.view.remove()
            if not message.failed:  # a failure says why in its own toast
                self.notify("Stopped before the message was read; it was not sent.", markup=False)
        elif not (message.failed and message.regenerated and await self.resync()):
            await message.view.finish(message.note)  # (a failed regenerate shows what the session holds)
        self.replying = False
        self.replies_done += 1
        self.set_state("")
        save_error = getattr(self.chat, "save_error", None)
        if save_error:
            self.notify(save_error, title="Not saved", severity="error", timeout=15, markup=False)

    def action_stop(self) -> None:
        if self.replying and self.chat is not None:
            self.chat.cancel()
        elif self.query_one(Composer).recalled:
            self.set_recalled(0, "")  # Esc leaves an earlier message unedited

    async def action_regenerate(self) -> None:
        chat = self.ready()
        if chat is None:
            return
        if self.continuing:
            self.notify("A base model continues text; there is no reply to regenerate.", severity="warning")
            return
        replies = list(self.query(AssistantMessage))
        if not replies:
            self.notify("There is no reply to regenerate yet.", severity="warning", markup=False)
            return
        await replies[-1].remove()
        view = AssistantMessage()
        await self.query_one("#messages", VerticalScroll).mount(view)
        max_tokens = self.sink_app.max_tokens
        self.start_reply(view, lambda chat: chat.regenerate(max_tokens=max_tokens), regenerate=True)

    def action_copy(self) -> None:
        focused = self.focused
        if isinstance(focused, (UserMessage, AssistantMessage)):
            text, what = focused.text, "message"
        else:
            replies = list(self.query(AssistantMessage))
            if not replies:
                self.notify("There is no reply to copy yet.", severity="warning", markup=False)
                return
            text, what = replies[-1].text, "last reply"
        self.app.copy_to_clipboard(inert(text))
        self.notify(f"Copied the {what} ({len(text)} characters).", markup=False)

    # -- chat settings ---------------------------------------------------------------------

    def action_new_chat(self) -> None:
        chat = self.ready()
        if chat is None:
            return

        def reset() -> str:
            chat.reset(chat.system_prompt)
            return "New chat"

        self.task_worker(reset, "starting a new chat", clear=True)

    def action_incognito_chat(self) -> None:
        """A new chat that is not saved (nothing reaches the sessions list); Ctrl+N saves again."""
        chat = self.ready()
        if chat is None:
            return
        if not hasattr(chat, "unsaved"):
            self.notify("Chats are not being saved in this run.", markup=False)
            return

        def reset() -> str:
            chat.reset(chat.system_prompt, save=False)  # type: ignore[call-arg]
            return "New incognito chat: it is not saved. Ctrl+N starts a saved one."

        self.task_worker(reset, "starting an incognito chat", clear=True)

    def action_system_prompt(self) -> None:
        chat = self.ready()
        if chat is None:
            return

        def apply(result: str | None) -> None:
            if result is None or self.chat is not chat or self.ready() is None:
                return

            def rebuild() -> str:
                kept = chat.rebuild(system_prompt=result or None)
                return f"System prompt set; {kept} recent exchange{'s' if kept != 1 else ''} re-read into the cache."

            self.task_worker(rebuild, "re-reading the history with the new system prompt")

        self.app.push_screen(SystemPromptScreen(chat.system_prompt), apply)

    def action_sampling(self) -> None:
        chat = self.chat
        if chat is None:
            self.notify("No model is loaded yet.", severity="warning", markup=False)
            return

        def apply(choice: SamplingChoice | None) -> None:
            if choice is None:
                return
            chat.sampling = choice.sampling
            self.sink_app.max_tokens = choice.max_tokens
            remember = getattr(chat, "remember_max_tokens", None)
            if remember is not None:  # a saved session keeps its reply limit, like its sampling
                remember(choice.max_tokens)
            limit = "no limit" if choice.max_tokens is None else f"max {choice.max_tokens} tokens"
            self.notify(
                f"temperature {choice.sampling.temperature}, top-p {choice.sampling.top_p}, {limit}", markup=False
            )

        self.app.push_screen(SamplingScreen(chat.sampling, self.sink_app.max_tokens), apply)

    def action_pick_model(self) -> None:
        if self.replying or self.busy is not None:
            self.ready()  # says truly what runs
            return
        app = self.sink_app

        def chosen(path: Path | None) -> None:
            if path is not None:
                self.load(path)

        self.app.push_screen(ModelPickerScreen(app.scan_models, app.settings.models_dir(), app.model_path), chosen)

    # -- saved sessions ----------------------------------------------------------------------

    def action_sessions(self) -> None:
        sessions = self.sink_app.sessions
        if sessions is None:
            self.notify("Chats are not being saved in this run.", severity="warning", markup=False)
            return
        chat = self.chat
        current = getattr(chat, "id", None)

        def chosen(choice: SessionChoice | None) -> None:
            if choice is None or self.ready() is None:
                return
            if choice.action == "new":
                self.action_new_chat()
            elif choice.action == "open" and choice.session_id is not None:
                self.begin_busy("opening the session")
                self.session_worker(lambda backend: backend.switch(choice.session_id))  # type: ignore[attr-defined]
            elif choice.action == "deleted-current":
                self.begin_busy("starting a new chat")
                self.session_worker(lambda backend: backend.delete_current(), "Session deleted; this is a new chat.")  # type: ignore[attr-defined]

        self.app.push_screen(SessionsScreen(sessions, current), chosen)

    @work(thread=True, group="llm", exit_on_error=False, name="session")
    def session_worker(self, change: Callable[[ChatBackend], None], done: str | None = None) -> None:
        """Switch or replace the session in the loaded model, then show its messages."""
        chat, sessions = self.chat, self.sink_app.sessions
        assert chat is not None and sessions is not None
        change(chat)
        history = sessions.messages(chat.id)  # type: ignore[attr-defined]
        self.post_message(self.SessionOpened(history, done or getattr(chat, "note", None)))

    async def on_chat_screen_session_opened(self, message: SessionOpened) -> None:
        await self.show_history(message.history)
        self.restore_limit()
        self.show_note(message.note)
        self.end_busy()
        if message.note is None:
            title = getattr(self.chat, "title", "")
            self.notify(f"Opened “{inert(title)}”." if title else "Opened the session.", markup=False)

    def task_worker(self, task: Callable[[], str], what: str, clear: bool = False) -> None:
        """Run a chat task off the UI thread, busy (and saying what it does) until it ends."""
        self.begin_busy(what)
        self._task_worker(task, clear)

    @work(thread=True, group="llm", exit_on_error=False, name="task")
    def _task_worker(self, task: Callable[[], str], clear: bool) -> None:
        self.post_message(self.TaskDone(task(), clear))

    async def on_chat_screen_task_done(self, message: TaskDone) -> None:
        if message.clear:
            await self.query_one("#messages").remove_children()
        self.notify(message.note, markup=False)
        self.end_busy()

    def restore_limit(self) -> None:
        """A resumed session's own reply limit (0: none) replaces the configured one."""
        saved = getattr(self.chat, "max_tokens", None)
        if isinstance(saved, int):
            self.sink_app.max_tokens = saved or None

    async def resync(self) -> bool:
        """Show the conversation as the saved session holds it, so screen and store never disagree."""
        chat, sessions = self.chat, self.sink_app.sessions
        sid = getattr(chat, "id", None)
        if sessions is None or sid is None:
            return False
        await self.show_history(sessions.messages(sid))
        return True

    # -- failures ----------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        text = user_message(error) if error is not None else "unknown error"
        if event.worker.name == "load":
            self.query_one("#messages").loading = False
            self.loading_model = False
            self.queued = False  # no model: nothing to send it to; it stays in the composer
            self.end_busy()
            self.sink_app.model_failed(text)
        else:
            self.notify(text, title="Error", severity="error", timeout=12, markup=False)
            if event.worker.name in ("task", "session"):
                self.end_busy()
