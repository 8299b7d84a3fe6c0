"""Snapshots of the main screens (pytest-textual-snapshot).  Update with ``pytest --snapshot-update``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from models.local_models import LocalModel
from sinkchat.settings import CONFIG_ENV, Settings
from tests.fake_chat import FakeFactory
from tui.app import SinkchatApp
from tui.screens.chat import ChatScreen
from tui.widgets.composer import Composer

SIZE = (100, 32)
MODEL = Path("/models/SmolLM2-135M-Instruct.Q4_1.gguf")
REPLY = """Here is a function that adds two numbers:

```python
def add(a: int, b: int) -> int:
    return a + b
```

Call it as `add(2, 3)`; it returns **5**."""
LISTED = [
    LocalModel(
        path=MODEL,
        source="embedded",
        size_bytes=98_362_432,
        quantization="Q4_1",
        architecture="llama",
        context_length=8192,
    ),
    LocalModel(
        path=Path("/models/Qwen2.5-1.5B-Instruct-Q4_K_M.gguf"),
        source="models folder",
        size_bytes=986_048_768,
        quantization="Q4_K_M",
        architecture="qwen2",
        context_length=32768,
    ),
    LocalModel(
        path=Path("/models/broken-download.gguf"),
        source="models folder",
        size_bytes=40_000_000,
        problem="broken-download.gguf is truncated",
    ),
]


@pytest.fixture(autouse=True)
def fixed_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The help screen shows the settings path: keep it the same on every machine."""
    monkeypatch.setenv(CONFIG_ENV, "/home/user/.config/sinkchat/config.toml")


def app() -> SinkchatApp:
    settings = Settings.model_validate({"cache": {"n_ctx": 512}})
    return SinkchatApp(settings, model_path=MODEL, chat_factory=FakeFactory(replies=[REPLY]), local_models=LISTED)


async def settle(pilot: Pilot, predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await pilot.pause(0.02)
    await pilot.pause(0.2)  # notifications are posted as messages: let them arrive, then drop them
    pilot.app.clear_notifications()
    for composer in pilot.app.screen.query(Composer):  # app.query() would not reach into the screen; a dialog has none
        composer.cursor_blink = False  # a steady cursor: no blink phase to catch
        composer.focus()
        # focus() is applied later, by a message: wait for it, or a loaded machine snaps the
        # composer before it has focus (no cursor) and a quiet one after (cursor): a flaky test.
        deadline = time.monotonic() + timeout
        while not composer.has_focus and time.monotonic() < deadline:
            await pilot.pause(0.02)
        assert composer.has_focus, "the composer never got the focus"
        composer.refresh()
    await pilot.pause(0.1)


async def chatted(pilot: Pilot) -> None:
    await settle(pilot, lambda: pilot.app.chat is not None)
    screen = pilot.app.screen
    assert isinstance(screen, ChatScreen)
    for i, word in enumerate(["Write", "an", "add", "function", "in", "Python"]):
        await pilot.press(*(["space"] if i else []), *word)
    await pilot.press("enter")
    await settle(pilot, lambda: screen.replies_done == 1)


def test_chat_screen(snap_compare) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=chatted)


def test_help_screen(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda: pilot.app.chat is not None)
        await pilot.press("f1")
        await settle(pilot, lambda: pilot.app.screen.query(DataTable))

    assert snap_compare(app(), terminal_size=SIZE, run_before=run_before)


def test_model_picker(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda: pilot.app.chat is not None)
        await pilot.press("ctrl+o")
        await settle(pilot, lambda: any(t.row_count == 3 for t in pilot.app.screen.query(DataTable)))

    assert snap_compare(app(), terminal_size=SIZE, run_before=run_before)


def test_sessions_screen(snap_compare, tmp_path: Path) -> None:
    from tests.fake_chat import FakeSessions
    from tests.test_tui_sessions import saved

    sessions = FakeSessions(tmp_path)
    saved(sessions, ("Plan a three-day trip to Lisbon", "Day 1: Alfama and the castle."))
    saved(sessions, ("Why is the sky blue?", "Rayleigh scattering."), ("And sunsets?", "Longer path."))
    saved(sessions, ("Fix my Python import error", "Check your PYTHONPATH."), interrupted=True)
    settings = Settings.model_validate({"cache": {"n_ctx": 512}})
    snap_app = SinkchatApp(settings, model_path=MODEL, chat_factory=FakeFactory(), sessions=sessions)

    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda: pilot.app.chat is not None)
        await pilot.press("ctrl+s")
        await settle(pilot, lambda: any(t.row_count == 4 for t in pilot.app.screen.query(DataTable)))

    assert snap_compare(snap_app, terminal_size=SIZE, run_before=run_before)


def test_hub_screen(snap_compare, tmp_path: Path) -> None:
    from models.hub_download import Progress
    from tests.fake_hub import FakeFile, FakeHub, FakeRepo
    from tui.screens.hub import HubScreen

    fake = FakeHub(page_size=50)
    data = b"x" * 1000
    fake.add(
        FakeRepo(
            "bartowski/Qwen2.5-1.5B-Instruct-GGUF",
            [FakeFile(f"Qwen2.5-1.5B-Instruct-{q}.gguf", data, size_override=s) for q, s in
             [("Q4_K_M", 986_048_768), ("Q8_0", 1_646_572_800), ("IQ4_XS", 895_728_384)]],
            downloads=184_302, likes=61,
        )
    )  # fmt: skip
    fake.add(FakeRepo("HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF", [FakeFile("s-Q4_K_M.gguf", data)], downloads=52_118))
    fake.add(FakeRepo("meta-llama/Llama-3.2-3B-Instruct-GGUF", [FakeFile("l-Q4_0.gguf", data)], 9_001, gated="manual"))
    url = fake.start()
    settings = Settings.model_validate({"cache": {"n_ctx": 4096}})
    snap_app = SinkchatApp(
        settings, model_path=MODEL, chat_factory=FakeFactory(), local_models=[], hub_endpoint=url, hub_cache=tmp_path
    )
    from models.fit import Hardware

    snap_app.hub_hardware = Hardware(ram_available=2_000_000_000)  # the same on every machine: one of each fit

    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda: pilot.app.chat is not None)
        await pilot.press("ctrl+g")
        await settle(pilot, lambda: any(t.row_count == 3 for t in pilot.app.screen.query("#hub-results")))
        screen = pilot.app.screen
        assert isinstance(screen, HubScreen)
        screen.query_one("#hub-results", DataTable).focus()
        await pilot.press("enter")
        await settle(pilot, lambda: screen.query_one("#hub-files", DataTable).row_count == 3)
        # A download under way, at fixed numbers (the real rate would differ from run to run).
        screen.downloading = (screen.repo, screen.rows[1].choice)
        screen.query_one("#hub-download").display = True
        screen.post_message(
            HubScreen.Moved(Progress(part="x", done=394_419_507, total=986_048_768, bytes_per_second=21e6))
        )
        await settle(pilot, lambda: "394.4 MB" in str(screen.query_one("#hub-progress-text").content))
        screen.downloading = None  # nothing will finish it

    try:
        assert snap_compare(snap_app, terminal_size=(110, 40), run_before=run_before)
    finally:
        fake.stop()


SMALL = (80, 24)
"""The smallest terminal the screens are made to fit."""


def test_help_screen_at_80_by_24(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda: pilot.app.chat is not None)
        await pilot.press("f1")
        await settle(pilot, lambda: pilot.app.screen.query(DataTable))

    assert snap_compare(app(), terminal_size=SMALL, run_before=run_before)


def test_sessions_screen_at_80_by_24(snap_compare, tmp_path: Path) -> None:
    from tests.fake_chat import FakeSessions
    from tests.test_tui_sessions import saved

    sessions = FakeSessions(tmp_path)
    saved(sessions, ("Plan a three-day trip to Lisbon with a day trip to Sintra", "Day 1: Alfama."))
    saved(sessions, ("Why is the sky blue?", "Rayleigh scattering."), ("And sunsets?", "Longer path."))
    settings = Settings.model_validate({"cache": {"n_ctx": 512}})
    snap_app = SinkchatApp(settings, model_path=MODEL, chat_factory=FakeFactory(), sessions=sessions)

    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda: pilot.app.chat is not None)
        await pilot.press("ctrl+s")
        await settle(pilot, lambda: any(t.row_count == 3 for t in pilot.app.screen.query(DataTable)))

    assert snap_compare(snap_app, terminal_size=SMALL, run_before=run_before)


def test_sampling_dialog_at_80_by_24(snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda: pilot.app.chat is not None)
        await pilot.press("f3")
        await settle(pilot, lambda: pilot.app.screen.query("#max_tokens"))
        pilot.app.screen.query_one("#max_tokens").focus()  # no cursor blink phase to catch in the first field
        pilot.app.screen.query_one("#apply").focus()
        await pilot.pause(0.1)

    assert snap_compare(app(), terminal_size=SMALL, run_before=run_before)


def test_failed_model_screen_at_80_by_24(snap_compare, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.errors import ModelFileError
    from tui import app as app_module
    from tui.screens.welcome import NoModelScreen

    monkeypatch.setattr(app_module, "default_model_path", lambda: MODEL)

    def failing(path: Path, settings: Settings):
        raise ModelFileError(f"{path} is not a GGUF model file (only 8 bytes)")

    settings = Settings.model_validate({"model": {"dir": "/home/user/models"}})
    snap_app = SinkchatApp(settings, model_path=Path("/home/user/bad.gguf"), chat_factory=failing)

    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda: isinstance(pilot.app.screen, NoModelScreen))

    assert snap_compare(snap_app, terminal_size=SMALL, run_before=run_before)
