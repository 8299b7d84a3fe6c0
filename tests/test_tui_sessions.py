"""Saved sessions in the app: saved as you chat, resumed, searched, switched, renamed, deleted."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from textual.widgets import DataTable, Input

from sinkchat.settings import Settings
from tests.fake_chat import FakeFactory, FakeSessions
from tests.test_tui import MODEL, ready, rendered_segments, send, type_text, wait_until
from tui.app import SinkchatApp
from tui.screens.chat import ChatScreen
from tui.screens.sessions import ConfirmScreen, RenameScreen, SessionsScreen, ago
from tui.widgets.messages import AssistantMessage, UserMessage

OLD = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def app_with(sessions: FakeSessions, factory: FakeFactory | None = None) -> SinkchatApp:
    return SinkchatApp(Settings(), model_path=MODEL, chat_factory=factory or FakeFactory(), sessions=sessions)


def saved(sessions: FakeSessions, *pairs: tuple[str, str], interrupted: bool = False) -> str:
    store = sessions.store
    sid = store.create(model_path="/models/old-model.gguf", created_at=OLD, updated_at=OLD).id
    for i, (question, answer) in enumerate(pairs):
        _, reply = store.begin_exchange(sid, question)
        if interrupted and i == len(pairs) - 1:
            store.checkpoint(reply, answer)
            store.mark_interrupted(sid)
        else:
            store.finish(reply, answer, "eos")
    with store._tx() as db:  # keep the "last used" time fixed for the list
        db.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (OLD.timestamp(), sid))
    return sid


def rows(screen: SessionsScreen) -> list[str]:
    table = screen.query_one(DataTable)
    return [str(table.get_row_at(i)[0]).strip("● ").strip() for i in range(table.row_count)]


async def open_sessions(pilot) -> SessionsScreen:
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SessionsScreen))
    return pilot.app.screen


async def test_the_chat_is_saved_as_it_goes_and_listed(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        await send(pilot, "What is the capital of France?")
        (info,) = sessions.store.list()
        assert info.title == "What is the capital of France?" and info.n_messages == 2
        screen = await open_sessions(pilot)
        assert rows(screen) == ["What is the capital of France?"]
        assert str(screen.query_one(DataTable).get_row_at(0)[0]).startswith("● ")  # the current one


async def test_resume_shows_the_saved_messages_and_the_note(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path, note="the snapshot was made for n_ctx 512 → 256: rebuilt the cache")
    sessions.resume = saved(sessions, ("Hello", "Hi there!"), ("Tell me a story", "Once upon a"), interrupted=True)
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        screen = await ready(pilot)
        await wait_until(pilot, lambda: len(screen.query(AssistantMessage)) == 2)
        assert [m.text for m in screen.query(UserMessage)] == ["Hello", "Tell me a story"]
        replies = list(screen.query(AssistantMessage))
        assert [r.text for r in replies] == ["Hi there!", "Once upon a"]
        assert replies[1].border_subtitle == "interrupted" and not replies[0].border_subtitle
        assert any("rebuilt the cache" in n.message for n in pilot.app._notifications)
        await send(pilot, "Go on")
        assert len(sessions.store.messages(sessions.store.list()[0].id)) == 6


async def test_search_and_switch(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    whales = saved(sessions, ("Tell me about whales", "Blue whales eat krill."))
    saved(sessions, ("Capital of France?", "Paris."))
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        chat_screen = await ready(pilot)
        screen = await open_sessions(pilot)
        assert sorted(rows(screen)) == ["(untitled)", "Capital of France?", "Tell me about whales"]
        await type_text(pilot, "krill")
        await wait_until(pilot, lambda: rows(screen) == ["Tell me about whales"])
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen))
        await wait_until(pilot, lambda: len(chat_screen.query(UserMessage)) == 1)
        assert sessions.switched == [whales]
        assert chat_screen.query_one(UserMessage).text == "Tell me about whales"
        assert pilot.app.chat.id == whales
        await send(pilot, "And dolphins?")
        assert [m.content for m in sessions.store.messages(whales)][-2] == "And dolphins?"


async def test_rename(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    sid = saved(sessions, ("Tell me about whales", "Blue whales eat krill."))
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        await ready(pilot)
        screen = await open_sessions(pilot)
        await type_text(pilot, "whales")
        await wait_until(pilot, lambda: rows(screen) == ["Tell me about whales"])
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, RenameScreen))
        pilot.app.screen.query_one(Input).value = ""
        await type_text(pilot, "Marine [b]biology[/b]")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, SessionsScreen))
        assert sessions.store.get(sid).title == "Marine [b]biology[/b]"
        screen.query_one(Input).value = ""
        await wait_until(pilot, lambda: "Marine [b]biology[/b]" in rows(screen))  # shown as typed, not as markup


async def test_delete_asks_first(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    sid = saved(sessions, ("Tell me about whales", "Blue whales eat krill."))
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        await ready(pilot)
        screen = await open_sessions(pilot)
        await type_text(pilot, "whales")
        await wait_until(pilot, lambda: rows(screen) == ["Tell me about whales"])
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, SessionsScreen))
        assert sessions.store.exists(sid)
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: rows(screen) == [])
        assert not sessions.store.exists(sid)


async def test_deleting_the_current_session_starts_a_new_one(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        chat_screen = await send(pilot, "Throwaway question")
        old = pilot.app.chat.id
        screen = await open_sessions(pilot)
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen) and not chat_screen.query(UserMessage))
        assert screen is not pilot.app.screen
        assert not sessions.store.exists(old) and pilot.app.chat.id != old


async def test_a_session_open_elsewhere_is_a_message(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    busy = saved(sessions, ("Tell me about whales", "Blue whales eat krill."))
    sessions.locked.add(busy)
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        chat_screen = await ready(pilot)
        current = pilot.app.chat.id
        screen = await open_sessions(pilot)
        await type_text(pilot, "whales")
        await wait_until(pilot, lambda: rows(screen) == ["Tell me about whales"])
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: any("another sinkchat" in n.message for n in pilot.app._notifications))
        assert sessions.store.exists(busy)
        await pilot.press("enter")  # open it: refused, and the current chat stays
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen))
        await wait_until(pilot, lambda: sum("another sinkchat" in n.message for n in pilot.app._notifications) >= 2)
        assert pilot.app.chat.id == current and chat_screen.chat is pilot.app.chat


def test_ago() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert ago(now, now) == "just now"
    assert ago(datetime(2026, 11, 22, 11, 30, tzinfo=UTC), now) == "30 min ago"
    assert ago(datetime(2026, 11, 22, 7, 0, tzinfo=UTC), now) == "5 h ago"
    assert ago(datetime(2026, 11, 20, 12, 0, tzinfo=UTC), now) == "2 d ago"
    assert ago(OLD, now) == "2026-01-05"


async def test_stored_fields_reach_the_screen_inert(tmp_path: Path) -> None:
    def shown() -> str:
        return "".join(rendered_segments(pilot.app))

    sessions = FakeSessions(tmp_path)
    sid = saved(sessions, ("hi", "ho"))
    with sessions.store._tx() as db:
        db.execute(
            "UPDATE sessions SET title = ?, title_custom = 1, model_path = ? WHERE id = ?",
            ("\x1b]0;pwned\x07 evil \u202etxt.exe " + "x" * 5000, "/m/\x1b[2J\u202e.gguf", sid),
        )
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        await ready(pilot)
        pilot.app.notify("cannot open /m/\x1b[2Jevil\u202e.gguf", title="\x1b[31mError", markup=False)
        await wait_until(pilot, lambda: any("cannot open" in n.message for n in pilot.app._notifications))
        (toast,) = [n for n in pilot.app._notifications if "cannot open" in n.message]
        assert toast.message == "cannot open /m/␛[2Jevil<U+202E>.gguf" and toast.title == "␛[31mError"
        await open_sessions(pilot)
        await wait_until(pilot, lambda: "evil" in shown())
        text = shown()
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        assert "␛]0;pwned␇\xa0evil\xa0<U+202E>txt.exe" in text


async def test_damage_found_in_the_store_is_shown_once(tmp_path: Path) -> None:
    from sinkchat.store import DB_NAME, SessionStore

    store = SessionStore(tmp_path)
    sid = store.create(model_path="/models/m.gguf").id
    _, reply = store.begin_exchange(sid, "Tell me about whales")
    store.finish(reply, "Blue whales eat krill.", "eos")
    store.close()
    with (tmp_path / DB_NAME).open("r+b") as f:
        f.seek(4096)
        f.write(bytes(4096))
    sessions = FakeSessions(tmp_path)
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: any(n.title == "Saved sessions" for n in pilot.app._notifications))
        (toast,) = [n for n in pilot.app._notifications if n.title == "Saved sessions"]
        assert "recovered 1 sessions and 2 messages" in toast.message and "damaged" in toast.message
        screen = await open_sessions(pilot)
        assert "(recovered) Tell me about whales" in rows(screen)


async def test_the_delete_toast_quotes_the_title(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    saved(sessions, ("Hello! What is the capital of France?", "Paris."))
    async with app_with(sessions).run_test(size=(110, 32)) as pilot:
        await ready(pilot)
        screen = await open_sessions(pilot)
        await type_text(pilot, "France")
        await wait_until(pilot, lambda: rows(screen) == ["Hello! What is the capital of France?"])
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: rows(screen) == [])
        messages = [n.message for n in pilot.app._notifications]
        assert "Deleted “Hello! What is the capital of France?”." in messages


async def test_title_and_time_fit_at_80_columns(tmp_path: Path) -> None:
    sessions = FakeSessions(tmp_path)
    saved(sessions, ("Write a very long title for this session so that the column has to be cut", "Sure."))
    saved(sessions, ("Why is the sky blue?", "Rayleigh scattering."))
    async with app_with(sessions).run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        screen = await open_sessions(pilot)
        table = screen.query_one(DataTable)
        await wait_until(pilot, lambda: table.row_count == 3)  # and the new chat, untitled
        await pilot.pause(0.1)
        assert table.virtual_size.width <= table.scrollable_content_region.width  # nothing off the right edge
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[:2] == ["Title", "Last used"]
        shown = [[str(cell).strip() for cell in table.get_row_at(i)] for i in range(3)]
        assert [row[1] for row in shown] == ["just now", "2026-01-05", "2026-01-05"]
        titles = sorted(row[0] for row in shown[1:])
        assert titles[0] == "Why is the sky blue?"
        assert titles[1].startswith("Write a very long") and titles[1].endswith("…")  # cut, with a mark


def test_column_widths() -> None:
    from tui.screens.sessions import column_widths

    wide = column_widths(104, title=40, model=30)
    assert wide == [104 - 10 - 4 - 8 - 30, 10, 4, 30]  # room for all
    narrow = column_widths(65, title=60, model=30)
    assert narrow[0] >= 16 and sum(narrow) + 2 * len(narrow) <= 65 and len(narrow) == 4
    tiny = column_widths(45, title=60, model=30)
    assert len(tiny) == 3 and sum(tiny) + 2 * 3 <= 45  # the model column goes first
