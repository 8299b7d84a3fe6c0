"""F1: every key, as the user has mapped it, with the id to remap it by."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from tui import keys

EXAMPLE = '"chat.regenerate" = "ctrl+t"'
"""A remapping that collides with nothing (a test holds it to that)."""


def shown_keys(key_list: str) -> tuple[str, list[str]]:
    """The keys every terminal sends, for the table, and the ones only some terminals tell apart."""
    every = [k.strip() for k in key_list.split(",")]
    some = [k for k in every if keys.needs_keyboard_protocol(k)]
    usual = [k for k in every if k not in some] or some
    return " / ".join(keys.display_key(k) for k in usual), [keys.display_key(k) for k in some if k not in usual]


class HelpScreen(ModalScreen[None]):
    BINDINGS = keys.HELP

    def __init__(self, keymap: dict[str, str], config_file: str) -> None:
        super().__init__()
        self.keymap = keymap
        self.config_file = config_file

    def compose(self) -> ComposeResult:
        notes: list[str] = []
        with Vertical(id="help"):
            yield Static(Text("Keys", style="bold"), classes="title")
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("Key", "Action", "Binding id")
            for binding_id, key_list, description in keys.effective_keys(self.keymap):
                usual, some = shown_keys(key_list)
                table.add_row(usual, description, binding_id)
                if some:
                    notes.append(
                        f"{' / '.join(some)} ({description.lower()}) work only in terminals with the kitty "
                        "keyboard protocol (kitty, WezTerm, foot, Ghostty); elsewhere they arrive as Enter.\n"
                    )
            yield table
            yield Static(
                Text("".join(notes) + f"Remap keys in [keys] of {self.config_file}, e.g. {EXAMPLE}"),
                classes="hint",
            )
