"""F1: every key, as the user has mapped it, with the id to remap it by."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from tui import keys


def pretty(key_list: str) -> str:
    names = {"question_mark": "?", "escape": "Esc", "enter": "Enter"}
    out = []
    for key in key_list.split(","):
        key = key.strip()
        parts = [names.get(p, p.capitalize() if len(p) > 1 else p) for p in key.split("+")]
        out.append("+".join(parts))
    return " / ".join(out)


class HelpScreen(ModalScreen[None]):
    BINDINGS = keys.HELP

    def __init__(self, keymap: dict[str, str], config_file: str) -> None:
        super().__init__()
        self.keymap = keymap
        self.config_file = config_file

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(Text("Keys", style="bold"), classes="title")
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("Key", "Action", "Binding id")
            for binding_id, key, description in keys.effective_keys(self.keymap):
                table.add_row(pretty(key), description, binding_id)
            yield table
            yield Static(
                Text(
                    "Remap a key in the [keys] table of "
                    f'{self.config_file}, e.g. "chat.regenerate" = "ctrl+g". '
                    "Ctrl+P opens the command palette.",
                ),
                classes="hint",
            )
