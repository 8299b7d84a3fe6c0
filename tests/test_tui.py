"""The Textual app, driven with Pilot.  A scripted fake chat stands in for the model."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TextArea
from textual.widgets._markdown import MarkdownBlock

from models.errors import ModelFileError
from models.local_models import LocalModel
from sinkchat.settings import Settings
from tests.fake_chat import FakeChat, FakeFactory
from tui import app as app_module
from tui.app import SinkchatApp
from tui.screens.chat import ChatScreen
from tui.screens.help import HelpScreen
from tui.screens.models import ModelPickerScreen
from tui.screens.welcome import NoModelScreen
from tui.widgets.composer import Composer
from tui.widgets.messages import AssistantMessage, UserMessage
from tui.widgets.status import StatusBar

MODEL = Path("/models/fake-model.Q4_K_M.gguf")


def make_app(factory: FakeFactory | None = None, settings: Settings | None = None, **kwargs) -> SinkchatApp:
    return SinkchatApp(settings or Settings(), model_path=MODEL, chat_factory=factory or FakeFactory(), **kwargs)


async def wait_until(pilot: Pilot, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.02)


async def ready(pilot: Pilot) -> ChatScreen:
    app = pilot.app
    assert isinstance(app, SinkchatApp)
    await wait_until(pilot, lambda: app.chat is not None)
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


def rendered_segments(app: SinkchatApp) -> list[str]:
    """The screen's text as Textual renders it for the terminal, run by run (from its SVG export)."""
    return [html.unescape(t) for t in re.findall(r">([^<]*)</text>", app.export_screenshot())]


async def type_text(pilot: Pilot, text: str) -> None:
    await pilot.press(*[{" ": "space", "\n": "ctrl+j"}.get(ch, ch) for ch in text])


async def send(pilot: Pilot, text: str) -> ChatScreen:
    screen = await ready(pilot)
    done = screen.replies_done
    await type_text(pilot, text)
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.replies_done > done)
    return screen


def shown_text(view: AssistantMessage) -> str:
    return "\n".join(str(block._content) for block in view.query(MarkdownBlock) if block._content is not None)


def status_text(screen: ChatScreen) -> str:
    return str(screen.query_one(StatusBar).content)


async def test_send_streams_the_reply_into_markdown() -> None:
    factory = FakeFactory(replies=["Sure! Here is **bold** and `code`.\n\n```python\nprint('hi')\n```"])
    async with make_app(factory).run_test(size=(100, 30)) as pilot:
        screen = await send(pilot, "hi\nthere")
        chat = factory.chats[0]
        assert chat.calls == ["send:hi\nthere"]
        assert [m.text for m in screen.query(UserMessage)] == ["hi\nthere"]
        (view,) = screen.query(AssistantMessage)
        assert view.text == factory.options["replies"][0]
        assert "print('hi')" in shown_text(view)
        assert screen.query_one(Composer).text == ""


async def test_escape_stops_the_reply_and_keeps_what_was_generated() -> None:
    factory = FakeFactory(replies=["word " * 400], delay=0.01)
    async with make_app(factory).run_test() as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "go")
        await pilot.press("enter")
        await wait_until(
            pilot, lambda: bool(screen.query(AssistantMessage)) and len(screen.query_one(AssistantMessage).text) > 20
        )
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.replying)
        view = screen.query_one(AssistantMessage)
        assert 20 < len(view.text) < len("word " * 400)
        assert view.border_subtitle == "stopped"
        assert factory.chats[0].last_reply.finish_reason == "cancelled"


async def test_keys_stay_responsive_while_a_reply_streams() -> None:
    factory = FakeFactory(replies=["token " * 300], delay=0.01)
    async with make_app(factory).run_test() as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "start")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.replying)
        await type_text(pilot, "next question")
        assert screen.query_one(Composer).text == "next question"
        assert screen.replying  # typed while the reply was still streaming
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.replying)


async def test_regenerate_replaces_the_last_reply() -> None:
    factory = FakeFactory(replies=["first answer", "second answer"])
    async with make_app(factory).run_test() as pilot:
        screen = await send(pilot, "question")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: screen.replies_done == 2)
        assert [v.text for v in screen.query(AssistantMessage)] == ["second answer"]


async def test_gauge_shows_the_cache_and_shifts_rising() -> None:
    factory = FakeFactory(replies=["a fairly long answer " * 10])
    async with make_app(factory, Settings.model_validate({"cache": {"n_ctx": 96}})).run_test(size=(140, 30)) as pilot:
        screen = await send(pilot, "one")
        first = factory.chats[0].shifts
        await send(pilot, "two")
        await pilot.pause(0.3)
        chat = factory.chats[0]
        assert chat.shifts > first
        text = status_text(screen)
        assert f"{chat.n_cached}/96" in text and "21 pinned" in text
        assert f"{chat.shifts} shift{'' if chat.shifts == 1 else 's'} · {chat.evicted} evicted" in text
        assert "RSS 180 MiB" in text and "42.0 tok/s" in text
        assert screen.sub_title == "fake-model.Q4_K_M · CPU"


async def test_keymap_from_settings_remaps_a_binding() -> None:
    factory = FakeFactory(replies=["one", "two"])
    settings = Settings.model_validate({"keys": {"chat.regenerate": "ctrl+t"}})
    async with make_app(factory, settings).run_test() as pilot:
        screen = await send(pilot, "q")
        await pilot.press("ctrl+r")
        await pilot.pause(0.2)
        assert "regenerate" not in factory.chats[0].calls
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: screen.replies_done == 2)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
        table = pilot.app.screen.query_one(DataTable)
        rows = [tuple(table.get_row_at(i)) for i in range(table.row_count)]
        assert ("Ctrl+T", "Regenerate", "chat.regenerate") in rows


def test_an_unknown_theme_stops_start_up_in_one_line() -> None:
    from sinkchat.settings import SettingsError

    settings = Settings.model_validate({"ui": {"theme": "no-such-theme"}})
    with pytest.raises(SettingsError) as raised:
        make_app(settings=settings)
    message = str(raised.value)
    assert "[ui] theme = 'no-such-theme' is not a theme; available: " in message and "nord" in message
    assert "\n" not in message


async def test_model_output_is_never_markup_or_escape_sequences() -> None:
    hostile = "[bold red]x[/] [link=file:///etc/passwd]click[/link] \x1b[2J\x1b]0;pwned\x07 done"
    factory = FakeFactory(replies=[hostile])
    async with make_app(factory).run_test() as pilot:
        screen = await ready(pilot)
        screen.query_one(Composer).text = "[bold]me[/bold] \x1b[31m"  # as if pasted
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.replies_done == 1)
        shown = shown_text(screen.query_one(AssistantMessage))
        assert "[bold red]x[/]" in shown and "[link=file:///etc/passwd]click[/link]" in shown
        assert "\x1b" not in shown and "\x07" not in shown
        assert "␛[2J" in shown
        user = screen.query_one(UserMessage)
        assert "[bold]me[/bold] ␛[31m" in str(user.content)
        # and what reaches the terminal: the screen as Textual renders it, segment by segment
        rendered = [t.replace("\xa0", " ") for t in rendered_segments(pilot.app)]
        assert not any("\x1b" in t or "\x07" in t for t in rendered)
        assert "[bold red]x[/] [link=file:///etc/passwd]click[/link] ␛[2J␛]0;pwned␇" in rendered
        assert "[bold]me[/bold] ␛[31m" in rendered


async def test_copy_new_chat_system_prompt_and_sampling() -> None:
    factory = FakeFactory(replies=["copy me \x1b[2J"])
    async with make_app(factory).run_test(size=(100, 40)) as pilot:
        screen = await send(pilot, "hello")
        chat = factory.chats[0]
        await pilot.press("f4")
        assert pilot.app.clipboard == "copy me ␛[2J"

        await pilot.press("f2")
        await wait_until(
            pilot, lambda: pilot.app.screen.query(TextArea) and not isinstance(pilot.app.screen, ChatScreen)
        )
        await type_text(pilot, "Be brief.")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: "rebuild:Be brief." in chat.calls)

        await pilot.press("f3")
        await wait_until(pilot, lambda: bool(pilot.app.screen.query("#temperature")))
        dialog = pilot.app.screen
        dialog.query_one("#temperature", Input).value = "hot"
        dialog.query_one("#max_tokens", Input).value = "50"
        await pilot.click("#apply")
        assert "temperature" in str(dialog.query_one("#error").content)
        assert pilot.app.screen is dialog  # not applied
        dialog.query_one("#temperature", Input).value = "0.2"
        dialog.query_one("#temperature", Input).focus()
        await pilot.press("enter")  # submitting a field applies too
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen))
        assert chat.sampling.temperature == 0.2
        assert pilot.app.max_tokens == 50

        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: "reset:Be brief." in chat.calls)
        await wait_until(pilot, lambda: not screen.query(UserMessage))


async def test_model_picker_switches_the_model_for_a_new_chat(tmp_path: Path) -> None:
    other = tmp_path / "other-model.Q8_0.gguf"
    listed = [
        LocalModel(path=MODEL, source="embedded", size_bytes=98_000_000, quantization="Q4_K_M", architecture="llama"),
        LocalModel(path=other, source="models folder", size_bytes=1_500_000_000, quantization="Q8_0"),
        LocalModel(path=tmp_path / "broken.gguf", source="models folder", problem="broken.gguf is truncated"),
    ]
    factory = FakeFactory()
    async with make_app(factory, local_models=listed).run_test(size=(110, 30)) as pilot:
        screen = await send(pilot, "hi")
        first = factory.chats[0]
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ModelPickerScreen))
        picker = pilot.app.screen
        await wait_until(pilot, lambda: picker.query_one(DataTable).row_count == 3)
        await pilot.press("down", "down", "enter")  # the broken one: refused with its reason
        await pilot.pause(0.1)
        assert pilot.app.screen is picker
        await pilot.press("up", "enter")
        await wait_until(pilot, lambda: factory.loaded == [MODEL, other] and pilot.app.chat is factory.chats[1])
        await wait_until(pilot, lambda: first.closed)
        assert not screen.query(UserMessage)  # a new chat
        assert screen.sub_title.startswith("other-model.Q8_0")


async def test_no_model_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(app_module, "default_model_path", lambda: None)
    settings = Settings.model_validate({"model": {"dir": str(tmp_path)}})
    app = SinkchatApp(settings, chat_factory=FakeFactory())
    async with app.run_test(size=(110, 30)) as pilot:
        await pilot.pause(0.2)
        assert isinstance(app.screen, NoModelScreen)
        text = str(app.screen.query_one("#welcome Static").content)
        assert 'pip install "sinkchat[starter]"' in text and str(tmp_path) in text
        assert app.chat is None


async def test_a_model_that_fails_to_load_shows_why() -> None:
    def failing(path: Path, settings: Settings) -> FakeChat:
        raise ModelFileError(f"{path} is truncated: the download is incomplete")

    app = SinkchatApp(Settings(), model_path=MODEL, chat_factory=failing)
    async with app.run_test(size=(110, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, NoModelScreen))
        assert "is truncated" in str(app.screen.query_one("#welcome Static").content)


class BrokenEarly(FakeChat):
    """Fails before the model has read the message."""

    def send(self, text, *, max_tokens=None, stop=()):
        raise RuntimeError("decode exploded")
        yield ""


class BrokenLate(FakeChat):
    """Fails mid-reply, after the message was read (and so saved)."""

    def send(self, text, *, max_tokens=None, stop=()):
        self.messages.append({"role": "user", "content": text})
        yield "partial"
        raise RuntimeError("decode exploded")


@pytest.mark.parametrize("broken", [BrokenEarly, BrokenLate])
async def test_an_error_while_replying_is_a_notification_not_a_crash(broken: type[FakeChat]) -> None:
    app = SinkchatApp(Settings(), model_path=MODEL, chat_factory=lambda p, s: broken())
    async with app.run_test() as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "x")
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("decode exploded" in n.message for n in app._notifications))
        await wait_until(pilot, lambda: not screen.replying)
        assert isinstance(app.screen, ChatScreen)  # still chatting
        if broken is BrokenEarly:  # nothing was read, so nothing is shown as sent: the text is back in the box
            assert not screen.query(AssistantMessage) and not screen.query(UserMessage)
            assert screen.query_one(Composer).text == "x"
        else:  # the message was read: it stays, and the reply says it failed
            assert screen.query_one(AssistantMessage).border_subtitle == "error"


@pytest.mark.slow
async def test_real_model_streams_a_reply(smollm2_path: Path) -> None:
    settings = Settings.model_validate({"cache": {"n_ctx": 256}, "chat": {"max_tokens": 40}, "sampling": {"seed": 1}})
    app = SinkchatApp(settings, model_path=smollm2_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.chat is not None, timeout=60)
        screen = await send(pilot, "What is the capital of France?")
        await wait_until(pilot, lambda: not screen.replying, timeout=60)
        reply = screen.query_one(AssistantMessage).text
        assert reply.strip()
        assert app.chat is not None and app.chat.stats.n_cached > app.chat.stats.n_pinned
        await pilot.pause(0.3)
        assert f"/{256}" in status_text(screen)
    app.chat.close()
    await asyncio.sleep(0)


async def test_stopping_while_a_long_message_is_read_gives_it_back() -> None:
    factory = FakeFactory(prompt_delay=0.5)
    async with make_app(factory).run_test() as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "a long paste")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.replying)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.replying)
        await pilot.pause(0.1)
        assert not screen.query(UserMessage) and not screen.query(AssistantMessage)
        assert screen.query_one(Composer).text == "a long paste"
        assert factory.chats[0].messages == []


async def test_the_view_follows_the_reply_until_the_user_scrolls_up() -> None:
    factory = FakeFactory(replies=["line of text\n\n" * 120], delay=0.005)
    async with make_app(factory).run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "go")
        await pilot.press("enter")
        messages = screen.query_one("#messages")
        await wait_until(pilot, lambda: messages.max_scroll_y > 10)
        await pilot.pause(0.1)
        assert messages.scroll_y >= messages.max_scroll_y - 2  # following the end
        messages.focus()
        await pilot.press("home")  # the user scrolls up, as with the keyboard or the wheel
        await pilot.pause(0.2)
        held = messages.scroll_y
        await wait_until(pilot, lambda: not screen.replying, timeout=10)
        assert messages.scroll_y == held < messages.max_scroll_y  # it stayed where the user put it


BASE = "fake has no chat template: it looks like a base model, which continues text rather than chatting."


async def test_a_base_model_continues_text_and_says_so() -> None:
    factory = FakeFactory(chat_problem=BASE, replies=[" there lived a fox."])
    async with make_app(factory).run_test(size=(100, 30)) as pilot:
        screen = await ready(pilot)
        await wait_until(pilot, lambda: screen.continuing)
        assert screen.query_one(Composer).placeholder == Composer.TEXT
        assert any(n.title == "No chat template" and BASE in n.message for n in pilot.app._notifications)
        await send(pilot, "Once upon a time")
        chat = factory.chats[0]
        assert chat.calls == ["generate:Once upon a time"]
        assert [v.border_title for v in screen.query(UserMessage)] == ["text"]
        assert [v.border_title for v in screen.query(AssistantMessage)] == ["continuation"]
        assert screen.query(AssistantMessage).last().text == " there lived a fox."
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert any("no reply to regenerate" in n.message for n in pilot.app._notifications)
        assert chat.calls == ["generate:Once upon a time"]


async def test_what_was_decided_for_a_model_is_shown_once() -> None:
    note = "sliding window 512 < n_ctx 8192: a full-size SWA cache (up to +131.0 MB) lets the cache shift"
    factory = FakeFactory(notes=[note])
    async with make_app(factory).run_test(size=(100, 30)) as pilot:
        screen = await ready(pilot)
        await wait_until(pilot, lambda: any(n.message == note for n in pilot.app._notifications))
        assert not screen.continuing and screen.query_one(Composer).placeholder == Composer.CHAT


def test_a_re_read_shows_its_progress_in_the_status_bar() -> None:
    from sinkchat.stats import ChatStats
    from tui.widgets.status import status_line

    stats = ChatStats(
        n_ctx=2048, n_cached=1957, n_pinned=5, shifts=3, evicted_tokens=1500, fallbacks=3,
        reread_tokens=4000, rereading=(512, 1957), can_shift=False, tokens_per_second=None,
        prompt_tokens_per_second=None, last_shift_ms=None, rss_bytes=300 << 20,
    )  # fmt: skip
    line = status_line(stats, "replying … (Esc stops)").plain
    assert "3 re-reads" in line and "re-reading 1,957 tokens 26%" in line
