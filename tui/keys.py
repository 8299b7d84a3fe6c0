"""Every key binding, with the id a user remaps it by (``[keys]`` in the settings file).

Keys the TextArea composer already uses (Ctrl+Y redo, Ctrl+C copy, Ctrl+K ...) are
avoided.  Bindings hidden from the footer are listed by F1 and the command palette.
"""

from __future__ import annotations

from textual.binding import Binding

APP = [
    Binding("f1,question_mark", "help", "Help", id="app.help"),
    Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
]
CHAT = [
    Binding("escape", "stop", "Stop reply", id="chat.stop"),
    Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
    Binding("f4", "copy", "Copy reply", id="chat.copy", show=False),
    Binding("ctrl+n", "new_chat", "New chat", id="chat.new"),
    Binding("f2", "system_prompt", "System prompt", id="chat.system", show=False),
    Binding("f3", "sampling", "Sampling", id="chat.sampling", show=False),
    Binding("ctrl+o", "pick_model", "Model", id="chat.model"),
    Binding("ctrl+s,f5", "sessions", "Sessions", id="chat.sessions"),
    Binding("ctrl+g,f9", "app.open_hub", "Get models", id="chat.hub"),
]
COMPOSER = [
    Binding("enter", "send", "Send", id="composer.send", priority=True, show=False),
    Binding("ctrl+j,alt+enter,shift+enter", "newline", "Newline", id="composer.newline", priority=True, show=False),
]
DIALOG = [Binding("escape", "dismiss(None)", "Close dialog", id="dialog.close")]
SAVE = [Binding("ctrl+s", "save", "Save system prompt", id="dialog.save")]
SESSIONS = [
    Binding("down", "cursor(1)", "Next session", show=False),
    Binding("up", "cursor(-1)", "Previous session", show=False),
    Binding("ctrl+n", "new", "New chat", id="sessions.new"),
    Binding("f2", "rename", "Rename", id="sessions.rename"),
    Binding("delete,f8", "delete", "Delete", id="sessions.delete"),
]
HUB = [Binding("ctrl+b", "cancel_download", "Cancel download", id="hub.cancel")]
CONFIRM = [
    Binding("y", "answer(True)", "Yes", show=False),
    Binding("n", "answer(False)", "No", show=False),
]
HELP = [Binding("escape,f1,q", "dismiss", "Close help", id="help.close")]
WELCOME = [
    Binding("ctrl+o", "app.pick_model", "Choose a local model", id="welcome.pick"),
    Binding("ctrl+g,f9", "app.open_hub", "Download one from the Hub", id="welcome.hub"),
    Binding("ctrl+q", "app.quit", "Quit", id="welcome.quit"),
]
ALL = [*APP, *CHAT, *COMPOSER, *DIALOG, *SAVE, *SESSIONS, *HUB, *CONFIRM, *HELP, *WELCOME]
IDS = {b.id for b in ALL if b.id}


def unknown_ids(keymap: dict[str, str]) -> list[str]:
    return sorted(set(keymap) - IDS)


def effective_keys(keymap: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(id, keys, description)`` for every binding, with the user's remapping applied."""
    return [(b.id or "", keymap.get(b.id or "", b.key), b.description) for b in ALL]
