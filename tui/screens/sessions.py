"""The saved sessions: search, open, start new, rename, delete (after a confirmation).

Listing and searching read the database on the UI thread: they are single indexed
queries.  Opening a session touches llama.cpp, so the chat screen does it in a worker;
this screen only says which one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, DataTable, Input, Static

from models.errors import ModelError
from sinkchat.errors import SinkchatError
from sinkchat.safe_text import inert_line
from sinkchat.store import SessionInfo
from tui import keys
from tui.backend import SessionSource

HINT = "↑↓ choose · Enter open · Ctrl+N new chat · F2 rename · F8 (or Delete in the list) delete · Esc close"
SEARCH_DELAY = 0.2
"""Seconds of quiet typing before the list is searched again."""

TIME_WIDTH, COUNT_WIDTH, MODEL_MIN, TITLE_MIN = 10, 4, 12, 16
"""Columns: ``59 min ago`` / ``2025-01-31``, a message count, then title and model share the rest."""


def column_widths(width: int, title: int, model: int) -> list[int]:
    """Widths of Title, Last used, Msgs and Model in ``width`` cells (each column pads one cell a side).

    The title and the time always show; the title gets the room the model name does not need,
    and the model column goes first when the screen is narrow.
    """
    rest = width - TIME_WIDTH - COUNT_WIDTH - 2 * 4
    title, model = max(title, len("Title")), max(model, len("Model"))
    if rest >= TITLE_MIN + MODEL_MIN:
        model = min(model, max(MODEL_MIN, rest - title))
        return [max(rest - model, TITLE_MIN), TIME_WIDTH, COUNT_WIDTH, model]
    return [max(rest + 2, TITLE_MIN), TIME_WIDTH, COUNT_WIDTH]


@dataclass(frozen=True)
class SessionChoice:
    action: Literal["open", "new", "deleted-current"]
    session_id: str | None = None


def ago(when: datetime, now: datetime | None = None) -> str:
    """``just now``, ``5 min ago``, ``3 h ago``, ``2 d ago``, else the date."""
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 7 * 86400:
        return f"{int(seconds // 86400)} d ago"
    return when.astimezone().strftime("%Y-%m-%d")


class SessionsScreen(ModalScreen[SessionChoice | None]):
    """Every saved chat, most recent first; typing searches titles and messages."""

    BINDINGS = [*keys.DIALOG, *keys.SESSIONS]

    def __init__(self, sessions: SessionSource, current: str | None) -> None:
        super().__init__()
        self.sessions = sessions
        self.current = current
        self.shown: list[SessionInfo] = []
        self._search_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="sessions"):
            yield Static(Text("Sessions", style="bold"), classes="title")
            yield Input(placeholder="Search titles and messages", id="session-search")
            yield DataTable(cursor_type="row", id="session-list")
            yield Static(
                Text(HINT),
                classes="hint",
                id="sessions-hint",
            )

    def on_mount(self) -> None:
        self.refresh_list()
        self.query_one(Input).focus()

    # -- listing -----------------------------------------------------------------------------

    def refresh_list(self) -> None:
        search = self.query_one(Input).value.strip() or None
        try:
            self.shown = self.sessions.list(search)
        except SinkchatError as exc:
            self.notify(str(exc), severity="error", markup=False)
            self.shown = []
        self.fill_table()
        hint = self.query_one("#sessions-hint", Static)
        if not self.shown:
            hint.update(Text("No sessions match." if search else "No saved sessions yet."))
        else:
            hint.update(Text(HINT))

    def fill_table(self) -> None:
        """The rows, in columns as wide as the screen allows: title and time always fit."""
        table: DataTable[Text] = self.query_one(DataTable)
        row = table.cursor_row
        width = table.size.width or min(self.app.size.width * 9 // 10, 110) - 6  # before the first layout
        titles = [("● " if i.id == self.current else "  ") + inert_line(i.title or "(untitled)") for i in self.shown]
        models = [inert_line(i.model_name) for i in self.shown]
        widths = column_widths(
            width - 1,  # the vertical scrollbar
            max(map(len, titles), default=0),
            max(map(len, models), default=0),
        )
        table.clear(columns=True)
        for label, cell_width in zip(("Title", "Last used", "Msgs", "Model"), widths, strict=False):
            table.add_column(label, width=cell_width)
        for info, title, model in zip(self.shown, titles, models, strict=True):
            style = "bold" if info.id == self.current else ""
            cells = [
                Text(title, style=style),
                Text(ago(info.updated_at)),
                Text(str(info.n_messages), justify="right"),
                Text(model),
            ]
            for cell, cell_width in zip(cells, widths, strict=False):
                cell.truncate(cell_width, overflow="ellipsis")
            table.add_row(*cells[: len(widths)], key=info.id)
        if self.shown:
            table.move_cursor(row=min(max(row, 0), len(self.shown) - 1))

    def on_resize(self, event: events.Resize) -> None:
        self.call_after_refresh(self.fill_table)

    @on(Input.Changed, "#session-search")
    def search_changed(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_DELAY, self.refresh_list)

    def highlighted(self) -> SessionInfo | None:
        row = self.query_one(DataTable).cursor_row
        return self.shown[row] if 0 <= row < len(self.shown) else None

    # -- keys: the search box keeps the focus, so the list follows the arrows from there ------

    def action_cursor(self, step: int) -> None:
        table = self.query_one(DataTable)
        if self.shown:
            table.move_cursor(row=max(0, min(len(self.shown) - 1, table.cursor_row + step)))

    @on(Input.Submitted, "#session-search")
    def submitted(self) -> None:
        self.action_open()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        info = self.highlighted()
        if info is None:
            return
        if info.id == self.current:
            self.dismiss(None)
        else:
            self.dismiss(SessionChoice("open", info.id))

    def action_new(self) -> None:
        self.dismiss(SessionChoice("new"))

    def action_rename(self) -> None:
        info = self.highlighted()
        if info is None:
            return

        def renamed(title: str | None) -> None:
            if not title:
                return
            try:
                self.sessions.rename(info.id, title)
            except SinkchatError as exc:
                self.notify(str(exc), severity="error", markup=False)
                return
            self.refresh_list()

        self.app.push_screen(RenameScreen(info.title), renamed)

    def action_delete(self) -> None:
        info = self.highlighted()
        if info is None:
            return

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            if info.id == self.current:
                self.dismiss(SessionChoice("deleted-current", info.id))
                return
            try:
                self.sessions.delete(info.id)
            except (SinkchatError, ModelError, OSError) as exc:
                self.notify(str(exc), title="Not deleted", severity="error", timeout=10, markup=False)
                return
            self.notify(f"Deleted “{inert_line(info.title)}”." if info.title else "Deleted the session.", markup=False)
            self.refresh_list()

        what = inert_line(info.title or "this untitled session")
        self.app.push_screen(ConfirmScreen(f"Delete “{what}” and its {info.n_messages} messages?"), confirmed)


class RenameScreen(ModalScreen[str | None]):
    BINDINGS = keys.DIALOG

    def __init__(self, title: str) -> None:
        super().__init__()
        self.current = title

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text("Rename the session", style="bold"), classes="title")
            yield Input(self.current, id="rename-input")
            with Horizontal(classes="buttons"):
                yield Button("Rename (Enter)", variant="primary", id="rename")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def submit(self) -> None:
        self.dismiss(" ".join(self.query_one(Input).value.split()) or None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "rename":
            self.submit()
        else:
            self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; Esc and "No" are the safe answers."""

    BINDINGS = [*keys.DIALOG, *keys.CONFIRM]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.question), classes="title")
            with Horizontal(classes="buttons"):
                yield Button("Delete (y)", variant="error", id="yes")
                yield Button("Keep (n / Esc)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
