"""Small dialogs: the system prompt, and sampling settings for this chat."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from models.sampler import SamplingSettings
from sinkchat.settings import describe_validation
from tui import keys


class SystemPromptScreen(ModalScreen[str | None]):
    """Edit the system prompt; saving rebuilds the cache around the new pinned prompt.

    Dismisses with the new prompt ("" for the model's default), or None when cancelled.
    """

    BINDINGS = [*keys.DIALOG, *keys.SAVE]

    def __init__(self, current: str | None) -> None:
        super().__init__()
        self.current = current or ""

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text("System prompt", style="bold"), classes="title")
            yield TextArea(self.current, id="system-text", soft_wrap=True)
            yield Static(
                Text("Empty = the model's default. It is pinned in the cache and never evicted."), classes="hint"
            )
            with Horizontal(classes="buttons"):
                yield Button("Save (Ctrl+S)", variant="primary", id="save")
                yield Button("Cancel (Esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text.strip())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)


@dataclass(frozen=True)
class SamplingChoice:
    sampling: SamplingSettings
    max_tokens: int | None


class SamplingScreen(ModalScreen[SamplingChoice | None]):
    """Temperature, top-p and reply length for this chat; invalid values are named, not applied.

    Max tokens 0 (or empty) means no limit, as ``--max-tokens 0`` does.
    """

    BINDINGS = keys.DIALOG

    def __init__(self, sampling: SamplingSettings, max_tokens: int | None) -> None:
        super().__init__()
        self.sampling = sampling
        self.max_tokens = max_tokens

    def compose(self) -> ComposeResult:
        fields = [
            ("Temperature (0 = greedy)", "temperature", str(self.sampling.temperature)),
            ("Top-p (1 = off)", "top_p", str(self.sampling.top_p)),
            ("Max tokens per reply (0 = no limit)", "max_tokens", str(self.max_tokens or 0)),
        ]
        with Vertical(id="dialog", classes="sampling"):
            yield Static(Text("Sampling for this chat", style="bold"), classes="title")
            for label, field, value in fields:  # a label beside its field: the dialog fits 24 rows
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(value, id=field)
            yield Static("", id="error", classes="error")
            with Horizontal(classes="buttons"):
                yield Button("Apply (Enter)", variant="primary", id="apply")
                yield Button("Cancel (Esc)", id="cancel")

    def on_input_submitted(self) -> None:
        self.apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self.apply()
        else:
            self.dismiss(None)

    def apply(self) -> None:
        error = self.query_one("#error", Static)
        values = {field: self.query_one(f"#{field}", Input).value.strip() for field in ("temperature", "top_p")}
        raw_max = self.query_one("#max_tokens", Input).value.strip()
        try:
            sampling = SamplingSettings.model_validate({**self.sampling.model_dump(), **values})
        except ValidationError as exc:
            error.update(Text(describe_validation(exc)))
            return
        if raw_max and not (raw_max.isascii() and raw_max.isdigit()):
            error.update(Text("max tokens: a whole number; 0 (or empty) = no limit"))
            return
        limit = int(raw_max) if raw_max else 0
        self.dismiss(SamplingChoice(sampling, limit or None))
