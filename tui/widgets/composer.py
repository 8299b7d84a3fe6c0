"""The message input: Enter sends, Ctrl+J (or Alt+Enter) starts a new line."""

from __future__ import annotations

from textual.message import Message
from textual.widgets import TextArea

from tui import keys


class Composer(TextArea):
    BINDINGS = keys.COMPOSER

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    CHAT = "Message  (Enter sends · Ctrl+J new line · F1 help)"
    TEXT = "Text to continue  (a base model: Enter continues it · Ctrl+J new line)"

    def __init__(self) -> None:
        super().__init__(id="composer", soft_wrap=True, show_line_numbers=False, compact=True)
        self.placeholder = self.CHAT

    def continuing(self, on: bool) -> None:
        """Say what Enter does: send a message, or have a base model continue the text."""
        self.placeholder = self.TEXT if on else self.CHAT

    # The bindings are priority bindings, so they fire before the keys typed just ahead of
    # them have reached this widget's queue; call_later runs after those keys.

    def action_send(self) -> None:
        self.call_later(self._submit)

    def action_newline(self) -> None:
        self.call_later(self.insert, "\n")

    def _submit(self) -> None:
        if self.text.strip():
            self.post_message(self.Submitted(self.text))
