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
from sinkchat.safe_text import inert
from tui import keys
from tui.backend import ChatBackend
from tui.screens.forms import SamplingChoice, SamplingScreen, SystemPromptScreen
from tui.screens.models import ModelPickerScreen
from tui.widgets.composer import Composer
from tui.widgets.messages import AssistantMessage, UserMessage
from tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from tui.app import SinkchatApp

BATCH_SECONDS = 0.05
"""Tokens reach the UI at most 20 times a second, in batches."""

FINISH_NOTES = {"cancelled": "stopped", "length": "max tokens reached", "stop": "stop string"}


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
        def __init__(self, chat: ChatBackend, path: Path) -> None:
            super().__init__()
            self.chat, self.path = chat, path

    class Chunk(Message):
        def __init__(self, view: AssistantMessage, text: str) -> None:
            super().__init__()
            self.view, self.text = view, text

    class ReplyDone(Message):
        def __init__(self, view: AssistantMessage, note: str | None, dropped: UserMessage | None = None) -> None:
            super().__init__()
            self.view, self.note, self.dropped = view, note, dropped

    class TaskDone(Message):
        def __init__(self, note: str, clear: bool = False) -> None:
            super().__init__()
            self.note, self.clear = note, clear

    def __init__(self) -> None:
        super().__init__()
        self.replying = False
        self.replies_done = 0
        self.state = ""

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
        self.query_one(StatusBar).show(chat.stats if chat is not None else None, self.state)
        self.sub_title = f"{chat.model_name} · {chat.device}" if chat is not None else "no model"

    def set_state(self, state: str) -> None:
        self.state = state
        self.refresh_status()

    # -- models ----------------------------------------------------------------------------

    def load(self, path: Path) -> None:
        """Load a model for a new chat, off the UI thread."""
        self.set_state(f"loading {path.stem} …")
        self.query_one("#messages").loading = True
        self.load_worker(path)

    @work(thread=True, group="llm", exit_on_error=False, name="load")
    def load_worker(self, path: Path) -> None:
        chat = self.sink_app.chat_factory(path, self.sink_app.settings)
        self.post_message(self.ModelReady(chat, path))

    async def on_chat_screen_model_ready(self, message: ModelReady) -> None:
        old, app = self.chat, self.sink_app
        messages = self.query_one("#messages")
        messages.loading = False
        await messages.remove_children()
        self.notify(f"{message.chat.model_name} on {message.chat.device}", title="Model ready")
        app.chat, app.model_path = message.chat, message.path
        self.set_state("")
        if old is not None:
            self.close_worker(old)

    @work(thread=True, group="llm", exit_on_error=False)
    def close_worker(self, chat: ChatBackend) -> None:
        chat.close()

    # -- replies -----------------------------------------------------------------------------

    def ready(self) -> ChatBackend | None:
        if self.chat is None:
            self.notify("No model is loaded yet.", severity="warning")
            return None
        if self.replying:
            self.notify("A reply is still running: Esc stops it.", severity="warning")
            return None
        return self.chat

    @on(Composer.Submitted)
    async def send(self, event: Composer.Submitted) -> None:
        if self.ready() is None:
            return
        self.query_one(Composer).clear()
        messages = self.query_one("#messages", VerticalScroll)
        question = UserMessage(event.text)
        await messages.mount(question)
        view = AssistantMessage()
        await messages.mount(view)
        messages.anchor()
        text, max_tokens = event.text, self.sink_app.max_tokens
        self.start_reply(view, lambda chat: chat.send(text, max_tokens=max_tokens), question)

    def start_reply(
        self, view: AssistantMessage, run: Callable[[ChatBackend], Iterator[str]], question: UserMessage | None = None
    ) -> None:
        view.start()
        self.replying = True
        self.set_state("replying … (Esc stops)")
        self.reply_worker(view, run, question)

    @work(thread=True, group="llm", exit_on_error=False, name="reply")
    def reply_worker(
        self, view: AssistantMessage, run: Callable[[ChatBackend], Iterator[str]], question: UserMessage | None
    ) -> None:
        chat = self.chat
        assert chat is not None
        pending: list[str] = []
        sent_at = time.monotonic()
        note: str | None = "error"
        n_messages = len(chat.messages)
        dropped = None
        try:
            for piece in run(chat):
                pending.append(piece)
                if time.monotonic() - sent_at >= BATCH_SECONDS:
                    self.post_message(self.Chunk(view, "".join(pending)))
                    pending, sent_at = [], time.monotonic()
            end = chat.last_reply
            note = FINISH_NOTES.get(end.finish_reason) if end is not None else None
            if question is not None and len(chat.messages) == n_messages:
                dropped = question  # stopped while the message was still being read: it was not sent
        finally:
            if pending:
                self.post_message(self.Chunk(view, "".join(pending)))
            self.post_message(self.ReplyDone(view, note, dropped))

    async def on_chat_screen_chunk(self, message: Chunk) -> None:
        await message.view.write(message.text)

    async def on_chat_screen_reply_done(self, message: ReplyDone) -> None:
        if message.dropped is not None:
            composer = self.query_one(Composer)
            if not composer.text:
                composer.text = message.dropped.text  # give the unsent message back
            await message.dropped.remove()
            await message.view.remove()
            self.notify("Stopped before the message was read; it was not sent.")
        else:
            await message.view.finish(message.note)
        self.replying = False
        self.replies_done += 1
        self.set_state("")

    def action_stop(self) -> None:
        if self.replying and self.chat is not None:
            self.chat.cancel()

    async def action_regenerate(self) -> None:
        chat = self.ready()
        if chat is None:
            return
        replies = list(self.query(AssistantMessage))
        if not replies:
            self.notify("There is no reply to regenerate yet.", severity="warning")
            return
        await replies[-1].remove()
        view = AssistantMessage()
        await self.query_one("#messages", VerticalScroll).mount(view)
        max_tokens = self.sink_app.max_tokens
        self.start_reply(view, lambda chat: chat.regenerate(max_tokens=max_tokens))

    def action_copy(self) -> None:
        focused = self.focused
        if isinstance(focused, (UserMessage, AssistantMessage)):
            text, what = focused.text, "message"
        else:
            replies = list(self.query(AssistantMessage))
            if not replies:
                self.notify("There is no reply to copy yet.", severity="warning")
                return
            text, what = replies[-1].text, "last reply"
        self.app.copy_to_clipboard(inert(text))
        self.notify(f"Copied the {what} ({len(text)} characters).")

    # -- chat settings ---------------------------------------------------------------------

    def action_new_chat(self) -> None:
        chat = self.ready()
        if chat is None:
            return

        def reset() -> str:
            chat.reset(chat.system_prompt)
            return "New chat"

        self.task_worker(reset, clear=True)

    def action_system_prompt(self) -> None:
        chat = self.ready()
        if chat is None:
            return

        def apply(result: str | None) -> None:
            if result is None or self.chat is not chat:
                return

            def rebuild() -> str:
                kept = chat.rebuild(system_prompt=result or None)
                return f"System prompt set; {kept} recent exchange{'s' if kept != 1 else ''} re-read into the cache."

            self.task_worker(rebuild)

        self.app.push_screen(SystemPromptScreen(chat.system_prompt), apply)

    def action_sampling(self) -> None:
        chat = self.chat
        if chat is None:
            self.notify("No model is loaded yet.", severity="warning")
            return

        def apply(choice: SamplingChoice | None) -> None:
            if choice is None:
                return
            chat.sampling = choice.sampling
            self.sink_app.max_tokens = choice.max_tokens
            limit = "no limit" if choice.max_tokens is None else f"max {choice.max_tokens} tokens"
            self.notify(f"temperature {choice.sampling.temperature}, top-p {choice.sampling.top_p}, {limit}")

        self.app.push_screen(SamplingScreen(chat.sampling, self.sink_app.max_tokens), apply)

    def action_pick_model(self) -> None:
        if self.replying:
            self.notify("A reply is still running: Esc stops it.", severity="warning")
            return
        app = self.sink_app

        def chosen(path: Path | None) -> None:
            if path is not None:
                self.load(path)

        self.app.push_screen(ModelPickerScreen(app.scan_models, app.settings.models_dir(), app.model_path), chosen)

    @work(thread=True, group="llm", exit_on_error=False, name="task")
    def task_worker(self, task: Callable[[], str], clear: bool = False) -> None:
        self.post_message(self.TaskDone(task(), clear))

    async def on_chat_screen_task_done(self, message: TaskDone) -> None:
        if message.clear:
            await self.query_one("#messages").remove_children()
        self.notify(message.note)
        self.refresh_status()

    # -- failures ----------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        text = user_message(error) if error is not None else "unknown error"
        if event.worker.name == "load":
            self.query_one("#messages").loading = False
            self.set_state("")
            self.sink_app.model_failed(text)
        else:
            self.notify(text, title="Error", severity="error", timeout=12)
