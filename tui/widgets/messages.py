"""Chat messages.  Everything shown is plain text or Markdown, never Rich markup, and
control characters are made visible first: model output is untrusted."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Markdown, Static

from sinkchat.safe_text import inert


class UserMessage(Static):
    """A message as the user typed it."""

    can_focus = True

    def __init__(self, text: str, *, title: str = "you") -> None:
        super().__init__(Text(inert(text)), classes="message user")
        self.text = text
        self.border_title = title


class AssistantMessage(Markdown):
    """A reply, streamed in as Markdown and rendered once more in full when it ends."""

    can_focus = True

    def __init__(self, text: str = "", *, title: str = "assistant") -> None:
        super().__init__(inert(text), classes="message assistant", open_links=False)
        self.text = text
        self.border_title = title
        self._stream = None

    def start(self) -> None:
        self.loading = True
        self._stream = Markdown.get_stream(self)

    async def write(self, chunk: str) -> None:
        if self.loading:
            self.loading = False
        self.text += chunk
        if self._stream is not None:
            await self._stream.write(inert(chunk))

    async def finish(self, note: str | None = None) -> None:
        """Stop streaming and render the whole reply once (an unclosed code fence mid-stream can garble it)."""
        self.loading = False
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        await self.update(inert(self.text) if self.text else "*(no reply)*")
        self.border_subtitle = note or ""
