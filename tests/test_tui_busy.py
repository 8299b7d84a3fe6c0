"""One visible busy state for every background task; input during it is kept and sent after.

The fake chat's rebuild takes a second and holds the chat like the real one, so these
reproduce issue 15's "F2, Ctrl+S, then at once a message" on the screen and in the store.
"""

from __future__ import annotations

from pathlib import Path

from textual.widgets import TextArea

from sinkchat.settings import Settings
from sinkchat.stats import ChatStats
from tests.fake_chat import FakeFactory, FakeSessions
from tests.test_tui import MODEL, ready, send, type_text, wait_until
from tui.app import SinkchatApp
from tui.screens.chat import ChatScreen
from tui.widgets.composer import Composer
from tui.widgets.messages import AssistantMessage, UserMessage
from tui.widgets.status import StatusBar, status_line


def status(screen: ChatScreen) -> str:
    return str(screen.query_one(StatusBar).content)


async def new_system_prompt(pilot, text: str) -> None:  # noqa: ANN001
    await pilot.press("f2")
    await wait_until(pilot, lambda: pilot.app.screen.query(TextArea) and not isinstance(pilot.app.screen, ChatScreen))
    pilot.app.screen.query_one(TextArea).text = text
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen))


async def test_a_message_sent_during_a_re_read_waits_and_is_sent_after(tmp_path: Path) -> None:
    factory = FakeFactory(rebuild_delay=1.5)
    sessions = FakeSessions(tmp_path)
    app = SinkchatApp(Settings(), model_path=MODEL, chat_factory=factory, sessions=sessions)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await send(pilot, "hello")
        chat = factory.chats[0]
        await new_system_prompt(pilot, "You are a cat.")
        await wait_until(pilot, lambda: chat.activity is not None)
        await type_text(pilot, "Who are you?")
        await pilot.press("enter")

        messages = [n.message for n in app._notifications]
        assert not any("still" in m for m in messages)  # no false "a reply is still running"
        assert any(m.startswith("Wait: re-reading the history") and "kept and sent" in m for m in messages)
        await wait_until(pilot, lambda: "re-reading the history" in status(screen) and "%" in status(screen))
        assert "your message waits" in status(screen)
        assert screen.query_one(Composer).text == "Who are you?"  # kept where the user can see it
        assert len(screen.query(UserMessage)) == 1

        await wait_until(pilot, lambda: screen.replies_done == 2, timeout=20)
        assert chat.calls.index("rebuild:You are a cat.") < chat.calls.index("send:Who are you?")
        users = [str(m.content) for m in screen.query(UserMessage)]
        assert users == ["hello", "Who are you?"]
        replies = list(screen.query(AssistantMessage))
        assert len(replies) == 2 and all(r.border_subtitle != "error" for r in replies)
        stored = sessions.store.messages(sessions.store.list()[0].id)
        assert [m.content for m in stored if m.role == "user"] == users  # screen and store agree
        assert screen.busy is None and "re-reading" not in status(screen)


async def test_f2_during_a_re_read_is_refused_with_the_true_reason() -> None:
    factory = FakeFactory(rebuild_delay=1.5)
    async with SinkchatApp(Settings(), model_path=MODEL, chat_factory=factory).run_test() as pilot:
        screen = await ready(pilot)
        chat = factory.chats[0]
        await new_system_prompt(pilot, "First.")
        await wait_until(pilot, lambda: chat.activity is not None)
        await pilot.press("f2")  # refused at once, with the true reason, instead of failing later
        await wait_until(pilot, lambda: any(n.message.startswith("Wait:") for n in pilot.app._notifications))
        assert isinstance(pilot.app.screen, ChatScreen)
        messages = [n.message for n in pilot.app._notifications]
        assert any(m.startswith("Wait: re-reading the history") for m in messages)
        assert not any(n.severity == "error" for n in pilot.app._notifications)
        await wait_until(pilot, lambda: screen.busy is None, timeout=20)
        assert [c for c in chat.calls if c.startswith("rebuild")] == ["rebuild:First."]


async def test_regenerate_and_new_chat_wait_for_a_re_read() -> None:
    factory = FakeFactory(rebuild_delay=1.0)
    async with SinkchatApp(Settings(), model_path=MODEL, chat_factory=factory).run_test() as pilot:
        screen = await send(pilot, "hello")
        chat = factory.chats[0]
        await new_system_prompt(pilot, "Be brief.")
        await wait_until(pilot, lambda: chat.activity is not None)
        await pilot.press("ctrl+r")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: screen.busy is None, timeout=20)
        assert "regenerate" not in chat.calls and not any(c.startswith("reset") for c in chat.calls)
        assert len(screen.query(AssistantMessage)) == 1  # the reply on screen is still the one in the chat


def test_the_status_line_keeps_the_busy_state_at_80_columns() -> None:
    stats = ChatStats(
        n_ctx=4096,
        n_cached=4000,
        n_pinned=21,
        shifts=123,
        evicted_tokens=45_678,
        fallbacks=0,
        can_shift=True,
        tokens_per_second=42.5,
        prompt_tokens_per_second=None,
        last_shift_ms=None,
        rss_bytes=512 * 2**20,
        activity="reading your message",
        progress=(1_234, 5_000),
    )
    full = status_line(stats, "replying … (Esc stops)")
    assert full.cell_len > 80
    for drop in range(6):
        line = status_line(stats, "replying … (Esc stops)", bar=8, compact=True, drop=drop)
        if line.cell_len <= 80:
            break
    assert line.cell_len <= 80
    assert "replying … (Esc stops)" in line.plain and "reading your message 24%" in line.plain
    assert "reading your message 1,234/5,000 24%" in full.plain


async def test_the_reply_indicator_stays_in_the_status_bar_at_80x24() -> None:
    factory = FakeFactory(delay=0.05, replies=["word " * 200])
    async with SinkchatApp(Settings(), model_path=MODEL, chat_factory=factory).run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.replying and factory.chats[0].last_reply is None)
        await pilot.pause(0.6)
        assert "replying" in status(screen)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.replying)


async def test_a_sessions_reply_limit_is_restored_on_resume(tmp_path: Path) -> None:
    from textual.widgets import Input

    sessions = FakeSessions(tmp_path)
    app = SinkchatApp(Settings(), model_path=MODEL, chat_factory=FakeFactory(), sessions=sessions)
    async with app.run_test(size=(120, 36)) as pilot:
        await send(pilot, "hello")
        await pilot.press("f3")
        await wait_until(pilot, lambda: bool(pilot.app.screen.query("#max_tokens")))
        pilot.app.screen.query_one("#max_tokens", Input).value = "7"
        await pilot.click("#apply")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen))
        assert app.max_tokens == 7
    sid = sessions.store.list()[0].id
    assert sessions.store.get(sid).settings.max_tokens == 7

    resumed = FakeSessions(tmp_path, resume=sid)
    app = SinkchatApp(Settings(), model_path=MODEL, chat_factory=FakeFactory(), sessions=resumed)
    async with app.run_test(size=(120, 36)) as pilot:
        await ready(pilot)
        assert app.max_tokens == 7  # the configured 1024 gives way to the session's own choice


async def test_up_recalls_an_earlier_message_and_resending_it_branches_from_there(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    factory = FakeFactory()
    app = SinkchatApp(Settings(), model_path=MODEL, chat_factory=factory, sessions=sessions)
    async with app.run_test(size=(120, 36)) as pilot:
        for text in ("one", "two", "three"):
            screen = await send(pilot, text)
        composer = screen.query_one(Composer)
        await pilot.press("up")
        assert composer.text == "three" and composer.recalled == 1
        await pilot.press("up")
        assert composer.text == "two" and composer.recalled == 2 and "Esc cancels" in str(composer.border_title)
        await pilot.press("down")
        assert composer.text == "three"
        await pilot.press("escape")  # leaves it unedited
        assert composer.text == "" and composer.recalled == 0

        await pilot.press("up", "up")
        composer.text = "TWO, edited"
        done = screen.replies_done
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.replies_done == done + 1)
        chat = factory.chats[0]
        assert chat.calls[-2:] == ["rewind:2", "send:TWO, edited"]
        shown = [str(m.content) for m in screen.query(UserMessage)]
        assert shown == ["one", "TWO, edited"] and len(screen.query(AssistantMessage)) == 2
        stored = sessions.store.messages(sessions.store.list()[0].id)
        assert [m.content for m in stored if m.role == "user"] == shown  # the saved session went back too


async def test_an_incognito_chat_is_not_saved_and_ctrl_n_saves_again(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    app = SinkchatApp(Settings(), model_path=MODEL, chat_factory=FakeFactory(), sessions=sessions)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await send(pilot, "public one")
        await pilot.press("f10")
        await wait_until(pilot, lambda: any("incognito" in n.message for n in app._notifications))
        await wait_until(pilot, lambda: not screen.query(UserMessage) and screen.busy is None)
        await send(pilot, "a secret")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: not screen.query(UserMessage) and screen.busy is None)
        await send(pilot, "public two")
    saved = [m.content for s in sessions.store.list() for m in sessions.store.messages(s.id) if m.role == "user"]
    assert sorted(saved) == ["public one", "public two"]


def test_no_default_key_collides_with_another_on_its_screen() -> None:
    """The defaults pass the same check as a user's [keys] (F7 would be the message box's Select all)."""
    from tui import keys

    problems = [p for b in keys.ALL if b.id for p in keys.check_keymap({b.id: b.key})]
    assert problems == []
