"""The message input: Enter sends, Ctrl+J starts a new line (Shift/Alt+Enter only where the terminal reports them).

Up in an empty box brings back your earlier messages, to edit one and resend it from there.
"""

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

    class Recall(Message):
        """Up in an empty box (or on the first line of a recalled message): an earlier message; Down: a later one."""

        def __init__(self, step: int) -> None:
            super().__init__()
            self.step = step

    CHAT = "Message  (Enter sends · Ctrl+J new line · F1 help)"
    TEXT = "Text to continue  (a base model: Enter continues it · Ctrl+J new line)"

    def __init__(self) -> None:
        super().__init__(id="composer", soft_wrap=True, show_line_numbers=False, compact=True)
        self.placeholder = self.CHAT
        self.recalled = 0
        """How many of your messages back the text in the box came from (0: a new message)."""

    def action_cursor_up(self, select: bool = False) -> None:
        if not select and (not self.text or (self.recalled and self.cursor_location[0] == 0)):
            self.post_message(self.Recall(1))
            return
        super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        if not select and self.recalled and self.cursor_location[0] == self.document.line_count - 1:
            self.post_message(self.Recall(-1))
            return
        super().action_cursor_down(select)

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
