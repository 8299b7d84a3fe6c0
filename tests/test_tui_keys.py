"""The ``[keys]`` table: checked before the app starts, and F1 / the palette show what works."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from sinkchat.settings import Settings, SettingsError
from tests.test_tui import make_app, ready, type_text, wait_until
from tui import keys
from tui.app import SinkchatApp
from tui.screens.help import EXAMPLE, HelpScreen
from tui.widgets.composer import Composer

ROOT = Path(__file__).resolve().parent.parent


def problems(keymap: dict[str, str]) -> list[str]:
    return keys.check_keymap(keymap)


# -- validation ---------------------------------------------------------------------------------


def test_an_unknown_key_name_stops_the_app_before_it_starts(isolated_settings: Path) -> None:
    settings = Settings.model_validate({"keys": {"chat.regenerate": "ctrl+banana"}})
    with pytest.raises(SettingsError) as caught:
        SinkchatApp(settings)
    assert str(caught.value) == (
        f'settings file {isolated_settings}: [keys] "chat.regenerate" = "ctrl+banana": ctrl+banana is not a key'
    )


def test_run_refuses_a_bad_keymap_before_the_app_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from tui import app as app_module

    def never(*args, **kwargs):
        raise AssertionError("the app started")

    monkeypatch.setattr(app_module.SinkchatApp, "run", never)
    monkeypatch.setattr(app_module, "_log_to_file", never)
    settings = Settings.model_validate({"keys": {"chat.nope": "f6"}})
    with pytest.raises(SettingsError, match=r'\[keys\] "chat.nope" = "f6": no binding has the id chat.nope'):
        app_module.run(settings)


def test_the_command_line_prints_one_line_and_exits_2(
    isolated_settings: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from sinkchat import cli
    from tui import app as app_module

    def never(*args, **kwargs):
        raise AssertionError("the app started")

    monkeypatch.setattr(app_module.SinkchatApp, "run", never)
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.write_text('[keys]\n"chat.regenerate" = "ctrl+g"\n')
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert cli.main(["run", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f'sinkchat: error: settings file {isolated_settings}: [keys] "chat.regenerate" = "ctrl+g": '
        "ctrl+g is already Get models (chat.hub) on the chat screen\n"
    )


@pytest.mark.parametrize(
    ("keymap", "expected"),
    [
        ({"chat.regenerate": "ctrl+banana"}, "ctrl+banana is not a key"),
        ({"chat.regenerate": "Ctrl+G"}, "Ctrl+G is not a key (key names are lower case: ctrl+g)"),
        ({"chat.regenerate": "ctrl+?"}, "ctrl+? is not a key (Textual names it ctrl+question_mark)"),
        ({"chat.regenerate": "shift+ctrl+t"}, "shift+ctrl+t is not a key (Textual names it ctrl+shift+t)"),
        ({"chat.regenerate": "f25"}, "f25 is not a key"),
        ({"chat.regenerate": "ctrl+s,"}, "an empty key name"),
        ({"chat.nope": "ctrl+t"}, "no binding has the id chat.nope (F1 lists the ids)"),
        # two actions on one key where both are active
        ({"chat.regenerate": "ctrl+g"}, "ctrl+g is already Get models (chat.hub) on the chat screen"),
        ({"chat.regenerate": "ctrl+q"}, "ctrl+q is already Quit (app.quit) on the chat screen"),
        ({"chat.sessions": "ctrl+n"}, "ctrl+n is already New chat (chat.new) on the chat screen"),
        ({"app.help": "f2"}, "f2 is already System prompt (chat.system) on the chat screen"),
        ({"composer.send": "ctrl+j"}, "ctrl+j is already New line (composer.newline) on the chat screen"),
        ({"chat.regenerate": "ctrl+k"}, "ctrl+k is already Delete to line end in the message box on the chat screen"),
        ({"chat.regenerate": "ctrl+p"}, "ctrl+p is already Command palette (built into Textual) on the chat screen"),
        ({"chat.regenerate": "tab"}, "tab is already Focus Next (built into Textual) on the chat screen"),
        ({"chat.regenerate": "ctrl+i"}, "ctrl+i is already Focus Next (built into Textual) on the chat screen"),
        ({"sessions.delete": "down"}, "down is already Next session on the sessions screen"),
        ({"welcome.embedded": "ctrl+g"}, "ctrl+g is already Hub (welcome.hub) on the no-model screen"),
        ({"help.close": "enter"}, "enter is already Select in the list on the help screen"),
        # keys that type into the box that has the focus
        ({"chat.regenerate": "r"}, "r types text in the message box on the chat screen"),
        ({"app.help": "?"}, "? types text in the message box on the chat screen"),
        ({"sessions.rename": "space"}, "space types text in the search box on the sessions screen"),
    ],
)
def test_bad_entries_are_named(keymap: dict[str, str], expected: str) -> None:
    ((binding_id, value),) = keymap.items()
    (problem,) = problems(keymap)
    assert problem.startswith(f'"{binding_id}" = "{value}": {expected}')


def test_two_entries_on_one_key_are_reported_once() -> None:
    assert problems({"chat.new": "ctrl+t", "chat.regenerate": "ctrl+t"}) == [
        '"chat.new" = "ctrl+t": ctrl+t is already Regenerate (chat.regenerate) on the chat screen'
    ]


@pytest.mark.parametrize(
    "keymap",
    [
        {"chat.regenerate": "ctrl+t"},
        {"chat.new": "ctrl+r", "chat.regenerate": "ctrl+n"},  # a swap
        {"chat.hub": "f9", "chat.regenerate": "ctrl+g"},  # Ctrl+G freed first
        {"help.close": "escape,f1,q"},  # F1 opens help and closes it there, by design
        {"app.quit": "ctrl+q", "welcome.quit": "ctrl+q"},  # one action on one key
        {"welcome.embedded": "e", "help.close": "escape, q"},  # no text box on those screens
        {"composer.send": "enter", "composer.newline": "ctrl+j,shift+enter,alt+enter,ctrl+enter"},
        {"chat.copy": "ctrl+shift+c", "chat.system": "alt+s", "chat.sampling": "ctrl+f3"},
        {binding.id: binding.key for binding in keys.ALL if binding.id},  # every default, written out
    ],
)
def test_remappings_that_collide_with_nothing_pass(keymap: dict[str, str]) -> None:
    assert problems(keymap) == []


def test_key_names_are_textuals() -> None:
    for good in ("f24", "pageup", "ctrl+backslash", "question_mark", "?", "ctrl+question_mark", "pound_sign", "A"):
        assert keys.key_problem(keys._name(good)) is None, good
    for bad in ("banana", "ctrl+banana", "latin_small_letter_a", "shift+a", "ctrl+A", "ctrl+", "hyperdrive+x"):
        assert keys.key_problem(bad) is not None, bad


def test_every_default_key_is_a_key() -> None:
    for binding in keys.ALL:
        for key in binding.key.split(","):
            assert keys.key_problem(key.strip()) is None, (binding.id, key)


def test_the_scopes_are_the_screens_bindings() -> None:
    """The conflict check knows which bindings are active together: the screens must agree with it."""
    from tui.screens.chat import ChatScreen
    from tui.screens.forms import SamplingScreen, SystemPromptScreen
    from tui.screens.help import HelpScreen
    from tui.screens.hub import HubScreen
    from tui.screens.models import ModelPickerScreen
    from tui.screens.sessions import ConfirmScreen, RenameScreen, SessionsScreen
    from tui.screens.welcome import NoModelScreen

    screens = [
        ChatScreen,
        SamplingScreen,
        SystemPromptScreen,
        HelpScreen,
        HubScreen,
        ModelPickerScreen,
        ConfirmScreen,
        RenameScreen,
        SessionsScreen,
        NoModelScreen,
    ]
    for screen in screens:
        scopes = [s for s in keys.SCOPES if s.screen == screen.__name__]
        assert scopes, screen.__name__
        focused = list(Composer.BINDINGS) if screen is ChatScreen else []  # the message box always has the focus
        for scope in scopes:
            assert list(scope.bindings) == list(screen.BINDINGS) + focused
    assert SinkchatApp.BINDINGS == keys.APP


def test_the_examples_collide_with_nothing() -> None:
    """The README's and F1's example remapping must work as written."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("[keys]\n", 1)[1].split("```", 1)[0]
    entries = dict(re.findall(r'^"([\w.]+)"\s*=\s*"([^"]*)"', block, re.MULTILINE))
    assert entries
    assert problems(entries) == []
    binding_id, value = re.fullmatch(r'"([\w.]+)" = "([^"]*)"', EXAMPLE).groups()
    assert problems({binding_id: value}) == []


# -- what the app shows ---------------------------------------------------------------------------


def help_rows(app) -> dict[str, tuple[str, str]]:
    table = app.screen.query_one(DataTable)
    return {
        str(row[2]) or str(row[1]): (str(row[0]), str(row[1]))
        for row in (table.get_row_at(i) for i in range(table.row_count))
    }


async def test_f1_lists_only_keys_that_work_everywhere() -> None:
    async with make_app().run_test(size=(100, 36)) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
        rows = help_rows(pilot.app)
        assert rows["app.help"] == ("F1", "Help")  # not "?": the message box has the focus and types it
        assert rows["composer.newline"] == ("Ctrl+J", "New line")
        assert rows["chat.hub"] == ("Ctrl+G / F9", "Get models")
        hint = " ".join(str(s.content) for s in pilot.app.screen.query(".hint").results(Static))
        assert "Shift+Enter / Alt+Enter (new line) work only in terminals with the kitty keyboard protocol" in hint
        assert EXAMPLE in hint


async def test_question_mark_types_and_does_not_open_help() -> None:
    async with make_app().run_test() as pilot:
        screen = await ready(pilot)
        await type_text(pilot, "why?")
        await pilot.pause(0.1)
        assert screen.query_one(Composer).text == "why?"
        assert pilot.app.screen is screen


async def test_f1_ids_are_readable_at_80_columns() -> None:
    async with make_app().run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
        await pilot.pause(0.1)
        table = pilot.app.screen.query_one(DataTable)
        assert table.virtual_size.width <= table.scrollable_content_region.width  # no column cut off
        hint = pilot.app.screen.query_one(".hint")
        assert hint.region.bottom <= pilot.app.screen.query_one("#help").content_region.bottom  # the hint is shown
        assert table.size.height >= 8


async def test_f1_shows_the_users_keys() -> None:
    settings = Settings.model_validate({"keys": {"composer.newline": "ctrl+j,shift+enter", "chat.copy": "ctrl+y"}})
    with pytest.raises(SettingsError, match=re.escape("ctrl+y is already Redo in the message box")):
        make_app(settings=settings)
    settings = Settings.model_validate({"keys": {"composer.newline": "shift+enter", "chat.copy": "ctrl+shift+c"}})
    async with make_app(settings=settings).run_test(size=(100, 36)) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
        rows = help_rows(pilot.app)
        assert rows["composer.newline"] == ("Shift+Enter", "New line")  # only that one: shown anyway
        assert rows["chat.copy"] == ("Ctrl+Shift+C", "Copy reply")


async def test_the_palette_lists_each_command_once() -> None:
    async with make_app().run_test() as pilot:
        screen = await ready(pilot)
        commands = list(pilot.app.get_system_commands(screen))
        titles = [c.title for c in commands]
        assert len(titles) == len(set(titles)), titles
        assert "Hub" not in titles and titles.count("Get models") == 1
        (keys_command,) = [c for c in commands if c.title == "Keys"]
        keys_command.callback()
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen))
        assert {c.help for c in commands if c.title == "Get models"} == {"Ctrl+G / F9 · chat.hub"}
