"""Pick a local GGUF model to chat with (the embedded default, the models folder, given paths).

The chat goes on in the chosen model: the saved session is reopened in it (without saved
sessions, as in tests, a new chat starts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from models.default_model import INSTALL_HINT
from models.local_models import LocalModel
from models.units import human_bytes as human_size
from sinkchat.safe_text import inert_line
from tui import keys

Scanner = Callable[[], list[LocalModel]]


class ModelPickerScreen(ModalScreen[Path | None]):
    """Lists models without loading them; Enter switches to the chosen one."""

    BINDINGS = keys.DIALOG

    def __init__(self, scan: Scanner, models_dir: Path, current: Path | None = None) -> None:
        super().__init__()
        self.scan = scan
        self.models_dir = models_dir
        self.current = current
        self.found: list[LocalModel] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Static(Text(self.title_text(), style="bold"), classes="title")
            table: DataTable[Text] = DataTable(cursor_type="row", id="models")
            table.add_columns("Model", "Size", "Quant", "Arch", "Context", "From")
            yield table
            yield Static(
                Text(f"Add models: put .gguf files in {self.models_dir}, or start with `sinkchat run --model PATH`."),
                classes="hint",
                id="picker-hint",
            )

    def title_text(self) -> str:
        if getattr(self.app, "sessions", None) is None:  # nothing is saved: the new model starts afresh
            return "Choose a model: a new chat starts in it"
        return "Choose a model: this chat continues in it"

    def on_mount(self) -> None:
        self.query_one(DataTable).loading = True
        self.scan_models()

    @work(thread=True, exclusive=True, group="scan")
    def scan_models(self) -> None:
        """Reading the headers touches the disk: off the UI thread."""
        found = self.scan()
        self.app.call_from_thread(self.show_models, found)

    def show_models(self, found: list[LocalModel]) -> None:
        self.found = found
        table = self.query_one(DataTable)
        table.loading = False
        table.clear()
        for model in found:
            style = "" if model.usable else "dim strike"
            mark = "● " if self.current is not None and model.path == self.current else "  "
            table.add_row(
                Text(mark + inert_line(model.name), style=style),
                Text(human_size(model.size_bytes), style=style),
                Text(model.quantization or "", style=style),
                Text((model.architecture or "") + (" · base" if model.has_chat_template is False else ""), style=style),
                Text(str(model.context_length or ""), style=style),
                Text(model.source, style=style),
            )
        if not found:
            self.query_one("#picker-hint", Static).update(
                Text(
                    f"No models found. Install the embedded one ({INSTALL_HINT}), put .gguf files in "
                    f"{self.models_dir}, or start with `sinkchat run --model PATH`."
                )
            )
        table.focus()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.found):
            model = self.found[event.cursor_row]
            hint = self.query_one("#picker-hint", Static)
            base = (
                " · a base model (no chat template): sinkchat continues text"
                if model.has_chat_template is False
                else ""
            )
            hint.update(Text(model.problem or f"{model.path}{base}"))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if not 0 <= event.cursor_row < len(self.found):
            return
        model = self.found[event.cursor_row]
        if not model.usable:
            self.notify(model.problem or "this file cannot be used", severity="error", markup=False)
            return
        self.dismiss(model.path)
