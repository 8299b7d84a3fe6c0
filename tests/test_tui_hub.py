"""The Hub browser in the app, with the real huggingface_hub client against the fake Hub on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from sinkchat.settings import Settings
from tests.fake_chat import FakeFactory
from tests.fake_hub import FakeFile, FakeHub, FakeRepo
from tests.test_tui import MODEL, type_text, wait_until
from tui.app import SinkchatApp
from tui.screens.chat import ChatScreen
from tui.screens.hub import HubScreen
from tui.screens.welcome import NoModelScreen

DATA = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[FakeHub, str, Path]]:
    fake = FakeHub(page_size=50)
    fake.add(
        FakeRepo(
            "org/Tiny-Chat-GGUF",
            [FakeFile("tiny-chat-Q4_K_M.gguf", DATA), FakeFile("tiny-chat-Q8_0.gguf", DATA * 2)],
            downloads=12_345,
            likes=67,
        )
    )
    fake.add(FakeRepo("org/Other-GGUF", [FakeFile("other-Q4_0.gguf", DATA)], downloads=99))
    fake.add(FakeRepo("corp/Gated-GGUF", [FakeFile("g-Q4_0.gguf", DATA)], downloads=5, gated="manual"))
    url = fake.start()
    yield fake, url, tmp_path / "hf"
    fake.stop()


def make_app(url: str, cache: Path, factory: FakeFactory | None = None, model: Path | None = MODEL) -> SinkchatApp:
    return SinkchatApp(
        Settings(),
        model_path=model,
        chat_factory=factory or FakeFactory(),
        local_models=[],
        hub_endpoint=url,
        hub_cache=cache,
    )


def rows(screen: HubScreen, table: str) -> list[list[str]]:
    t = screen.query_one(table, DataTable)
    return [[str(c) for c in t.get_row_at(i)] for i in range(t.row_count)]


async def open_hub(pilot) -> HubScreen:
    await pilot.press("ctrl+g")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, HubScreen))
    screen = pilot.app.screen
    await wait_until(pilot, lambda: len(rows(screen, "#hub-results")) > 0)
    return screen


async def test_search_pick_download_and_chat(hub) -> None:
    fake, url, cache = hub
    factory = FakeFactory()
    async with make_app(url, cache, factory).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        screen = await open_hub(pilot)
        assert [r[0] for r in rows(screen, "#hub-results")] == [
            "org/Tiny-Chat-GGUF",
            "org/Other-GGUF",
            "corp/Gated-GGUF  (gated)",
        ]
        assert rows(screen, "#hub-results")[0][1:3] == ["12,345", "67"]
        await type_text(pilot, "tiny")
        await wait_until(pilot, lambda: [r[0] for r in rows(screen, "#hub-results")] == ["org/Tiny-Chat-GGUF"])
        await pilot.press("enter")  # search now, and go to the results
        await wait_until(pilot, lambda: screen.query_one("#hub-results", DataTable).has_focus)
        await pilot.press("enter")  # list the files
        await wait_until(pilot, lambda: len(rows(screen, "#hub-files")) == 2)
        files = rows(screen, "#hub-files")
        assert [f[1] for f in files] == ["Q4_K_M", "Q8_0"] and files[0][0] == "★" and files[0][4] == "fits"
        assert screen.query_one("#hub-files", DataTable).cursor_row == 0  # the best fit is preselected
        await pilot.press("enter")  # download it
        await wait_until(pilot, lambda: ("org/Tiny-Chat-GGUF", "tiny-chat-Q4_K_M") in screen.downloaded, 15)
        path = screen.downloaded[("org/Tiny-Chat-GGUF", "tiny-chat-Q4_K_M")]
        assert path.read_bytes() == DATA and str(cache) in str(path)
        await wait_until(pilot, lambda: rows(screen, "#hub-files") and rows(screen, "#hub-files")[0][0] == "★")
        await wait_until(pilot, lambda: screen.query_one("#hub-files", DataTable).has_focus)
        await pilot.press("enter")  # chat with it
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen) and path in factory.loaded, 10)


async def test_a_running_download_keeps_moving_while_browsing_and_can_be_cancelled(hub, monkeypatch) -> None:
    fake, url, cache = hub
    release = threading.Event()
    original = FakeHub.write_body

    def slow(self, req, f, start, end):  # noqa: ANN001
        data = f.data or b""
        for i in range(start, end + 1, 65536):  # 64 KiB at a time, until the test lets it go
            req.wfile.write(data[i : min(i + 65536, end + 1)])
            req.wfile.flush()
            if not release.is_set():
                time.sleep(0.3)

    monkeypatch.setattr(FakeHub, "write_body", slow)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 65536)  # progress per 64 KiB, not per 10 MB
    async with make_app(url, cache).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        screen = await open_hub(pilot)
        screen.query_one("#hub-results", DataTable).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(rows(screen, "#hub-files")) == 2)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "Ctrl+B cancels" in str(screen.query_one("#hub-progress-text", Static).content))
        first = str(screen.query_one("#hub-progress-text", Static).content)
        # Browse on: another search while the bar moves.
        screen.query_one("#hub-search").focus()
        await pilot.pause()
        await type_text(pilot, "other")
        await wait_until(pilot, lambda: [r[0] for r in rows(screen, "#hub-results")] == ["org/Other-GGUF"], 10)
        await wait_until(pilot, lambda: str(screen.query_one("#hub-progress-text", Static).content) != first)
        assert screen.downloading is not None
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: screen.downloading is None, 10)
        assert any("cancelled" in n.message for n in pilot.app._notifications)
        assert not list(cache.rglob("*.gguf"))
        release.set()
    monkeypatch.setattr(FakeHub, "write_body", original)


async def test_a_gated_repository_says_what_to_do(hub) -> None:
    _, url, cache = hub
    async with make_app(url, cache).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        screen = await open_hub(pilot)
        table = screen.query_one("#hub-results", DataTable)
        table.focus()
        table.move_cursor(row=2)
        await pilot.press("enter")
        status = screen.query_one("#hub-status", Static)
        await wait_until(pilot, lambda: "is gated" in str(status.content), 10)
        assert "HF_TOKEN" in str(status.content)


async def test_the_first_run_screen_offers_the_hub(hub, monkeypatch) -> None:
    _, url, cache = hub
    monkeypatch.setattr("tui.app.default_model_path", lambda: None)
    async with make_app(url, cache, model=None).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, NoModelScreen))
        screen = await open_hub(pilot)
        assert rows(screen, "#hub-results")


async def test_offline_it_says_so_and_offers_the_local_library(hub) -> None:
    from models.local_models import LocalModel

    fake, url, cache = hub
    fake.stop()  # the Hub cannot be reached
    factory = FakeFactory()
    app = make_app(url, cache, factory)
    local = Path("/models/already-here-Q4_K_M.gguf")
    app._local_models = [LocalModel(path=local, source="hub cache", size_bytes=123_000_000, quantization="Q4_K_M")]
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.chat is not None)
        await pilot.press("ctrl+g")
        await wait_until(pilot, lambda: isinstance(app.screen, HubScreen))
        screen = app.screen
        status = screen.query_one("#hub-status", Static)
        await wait_until(pilot, lambda: "models on this machine" in str(status.content), 10)
        assert "cannot be reached" in str(status.content)
        assert rows(screen, "#hub-files") == [["", "Q4_K_M", "123.0 MB", "", "local", "already-here-Q4_K_M"]]
        screen.query_one("#hub-files", DataTable).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: local in factory.loaded, 10)
    fake.start()  # the fixture stops it again
