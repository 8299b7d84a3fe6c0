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
        finished = pilot.app.downloads.finished
        await wait_until(pilot, lambda: ("org/Tiny-Chat-GGUF", "tiny-chat-Q4_K_M") in finished, 15)
        path = finished[("org/Tiny-Chat-GGUF", "tiny-chat-Q4_K_M")]
        assert path.read_bytes() == DATA and str(cache) in str(path)
        await wait_until(pilot, lambda: rows(screen, "#hub-files") and rows(screen, "#hub-files")[0][0] == "★✓")
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
        await wait_until(pilot, lambda: any("cancelled" in n.message for n in pilot.app._notifications))
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
        await wait_until(pilot, lambda: "1 model on this machine" in str(status.content), 10)
        assert "cannot be reached" in str(status.content)
        assert rows(screen, "#hub-files") == [["", "Q4_K_M", "123.0 MB", "", "local", "already-here-Q4_K_M"]]
        screen.query_one("#hub-files", DataTable).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: local in factory.loaded, 10)
    fake.start()  # the fixture stops it again


# -- Downloads belong to the app: on every screen, asked about on quit ------------------------

SLOW = bytes(8 << 20)  # trickled: 26 s in all


@pytest.fixture
def slow(hub, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """``org/Slow-GGUF``'s only file trickles (26 s in all) until the returned event is set."""
    fake, _, _ = hub
    fake.add(FakeRepo("org/Slow-GGUF", [FakeFile("slow-Q4_0.gguf", SLOW)], downloads=1))
    released = threading.Event()
    original = FakeHub.write_body

    def trickle(self, req, f, start, end):  # noqa: ANN001
        if f.path != "slow-Q4_0.gguf":
            return original(self, req, f, start, end)
        for at in range(start, end + 1, 1 << 16):
            try:
                req.wfile.write(SLOW[at : min(at + (1 << 16), end + 1)])
            except OSError:
                return  # the client is gone
            if not released.is_set():
                time.sleep(0.2)

    monkeypatch.setattr(FakeHub, "write_body", trickle)
    yield released
    released.set()


def partials(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.incomplete"))


async def start_slow_download(pilot, cache: Path) -> HubScreen:
    screen = await open_hub(pilot)
    await type_text(pilot, "slow")
    await wait_until(pilot, lambda: [r[0] for r in rows(screen, "#hub-results")] == ["org/Slow-GGUF"])
    screen.query_one("#hub-results", DataTable).focus()
    await pilot.press("enter")
    await wait_until(pilot, lambda: len(rows(screen, "#hub-files")) == 1)
    await pilot.press("enter")
    await wait_until(pilot, lambda: bool(partials(cache)), 15)
    return screen


async def test_quitting_during_a_download_asks_and_cancelling_removes_the_partial_file(hub, slow) -> None:
    from tui.widgets.downloads import QuitWhileDownloading

    _, url, cache = hub
    app = make_app(url, cache)
    exits: list[tuple[float, list[Path]]] = []
    exit_app = app.exit

    def exiting(*args, **kwargs) -> None:  # noqa: ANN002,ANN003
        exits.append((time.monotonic(), partials(cache)))
        exit_app(*args, **kwargs)

    app.exit = exiting  # type: ignore[method-assign]
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.chat is not None)
        await start_slow_download(pilot, cache)
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitWhileDownloading))
        assert not exits
        await pilot.press("n")  # keep downloading
        await wait_until(pilot, lambda: isinstance(app.screen, HubScreen))
        await pilot.pause(0.5)
        assert not exits and app.downloads.running is not None and partials(cache)
        await pilot.press("escape")  # from the chat screen this time
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuitWhileDownloading))
        await pilot.press("y")  # cancel the download and quit
        asked = time.monotonic()
        await wait_until(pilot, lambda: bool(exits), 10)
    (at, left), *_ = exits
    assert at - asked < 8.0  # the transfer (26 s in all) stopped at once, not at the end of the file
    assert not left and not partials(cache) and not list(cache.rglob("*.gguf"))  # removed before the app exited


async def test_a_download_shows_on_every_screen_and_the_hub_shows_it_again(hub, slow) -> None:
    from tui.widgets.downloads import DownloadLine

    _, url, cache = hub
    app = make_app(url, cache)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.chat is not None)
        await start_slow_download(pilot, cache)
        await pilot.press("escape")  # close the Hub: the download goes on
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))

        def line() -> str:
            found = app.screen.query(DownloadLine)
            return str(found.first().content) if found else ""

        await wait_until(pilot, lambda: "slow-Q4_0" in line() and "%" in line())
        await pilot.press("f1")  # another screen
        await wait_until(pilot, lambda: not isinstance(app.screen, ChatScreen))
        await wait_until(pilot, lambda: "slow-Q4_0" in line())
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        await pilot.press("ctrl+g")  # the Hub again: its bar is back
        await wait_until(pilot, lambda: isinstance(app.screen, HubScreen))
        screen = app.screen
        text = screen.query_one("#hub-progress-text", Static)
        await wait_until(pilot, lambda: "slow-Q4_0" in str(text.content) and "Ctrl+B cancels" in str(text.content))
        assert screen.query_one("#hub-download").display and screen.downloading is not None
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: app.downloads.running is None, 10)
        await wait_until(pilot, lambda: not screen.query_one("#hub-download").display)
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen) and not line())
        assert not partials(cache)


async def test_the_partial_file_of_a_killed_download_is_removed_when_the_hub_opens(hub) -> None:
    import os

    from models.hub_download import STALE_AFTER

    _, url, cache = hub
    blobs = cache / "models--org--Tiny-Chat-GGUF" / "blobs"
    blobs.mkdir(parents=True)
    partial = blobs / f"{'a' * 64}.0123abcd.incomplete"  # what a killed sinkchat left
    partial.write_bytes(b"x" * 3_000_000)
    then = time.time() - STALE_AFTER - 60
    os.utime(partial, (then, then))
    async with make_app(url, cache).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        await open_hub(pilot)
        await wait_until(pilot, lambda: not partial.exists())
        await wait_until(pilot, lambda: any("Removed 3.0 MB" in n.message for n in pilot.app._notifications))


# -- The Hub screen's rough edges --------------------------------------------------------------


async def test_a_search_without_results_empties_the_files_and_keeps_the_focus(hub) -> None:
    _, url, cache = hub
    async with make_app(url, cache).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        screen = await open_hub(pilot)
        screen.query_one("#hub-results", DataTable).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(rows(screen, "#hub-files")) == 2)
        search = screen.query_one("#hub-search")
        search.focus()
        await type_text(pilot, "nothing-like-this")
        await pilot.press("enter")
        status = screen.query_one("#hub-status", Static)
        await wait_until(pilot, lambda: "No GGUF models match" in str(status.content))
        await pilot.pause(0.5)  # the debounced search of the same text comes too
        assert rows(screen, "#hub-results") == [] and rows(screen, "#hub-files") == []
        assert search.has_focus and screen.repo is None


async def test_a_file_list_shows_that_it_loads(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url, cache = hub
    release = threading.Event()
    tree = FakeHub.tree

    def slow_tree(self, req, repo_id, query):  # noqa: ANN001
        release.wait(10)
        tree(self, req, repo_id, query)

    monkeypatch.setattr(FakeHub, "tree", slow_tree)
    async with make_app(url, cache).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        screen = await open_hub(pilot)
        screen.query_one("#hub-results", DataTable).focus()
        await pilot.press("enter")
        files = screen.query_one("#hub-files", DataTable)
        await wait_until(pilot, lambda: files.loading)
        assert "Listing the files of org/Tiny-Chat-GGUF" in str(screen.query_one("#hub-status", Static).content)
        release.set()
        await wait_until(pilot, lambda: len(rows(screen, "#hub-files")) == 2)
        assert not files.loading


async def test_files_already_downloaded_are_marked_and_chat_at_once(hub) -> None:
    from models.hub import HubClient
    from models.hub_download import pull

    fake, url, cache = hub
    q8 = next(c for c in HubClient(endpoint=url).files("org/Tiny-Chat-GGUF") if c.quant == "Q8_0")
    path = pull("org/Tiny-Chat-GGUF", q8, endpoint=url, cache=cache)  # by the CLI, or an earlier run
    factory = FakeFactory()
    async with make_app(url, cache, factory).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        screen = await open_hub(pilot)
        screen.query_one("#hub-results", DataTable).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(rows(screen, "#hub-files")) == 2)
        assert [r[0] for r in rows(screen, "#hub-files")] == ["★", "✓"]
        assert "✓ downloaded: Enter chats" in str(screen.query_one("#hub-status", Static).content)
        downloads = len([r for r in fake.requests if "/resolve/" in r and not r.startswith("HEAD")])
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ChatScreen) and path in factory.loaded, 10)
        assert len([r for r in fake.requests if "/resolve/" in r and not r.startswith("HEAD")]) == downloads


async def test_files_that_are_not_chat_models_are_listed_apart(hub) -> None:
    fake, url, cache = hub
    fake.add(
        FakeRepo(
            "org/Vision-GGUF",
            [FakeFile("vision-Q4_K_M.gguf", DATA), FakeFile("mmproj-vision-F16.gguf", DATA[:1000])]
            + [FakeFile("imatrix.gguf", DATA[:10])],
        )
    )
    async with make_app(url, cache).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        screen = await open_hub(pilot)
        await type_text(pilot, "vision")
        await wait_until(pilot, lambda: [r[0] for r in rows(screen, "#hub-results")] == ["org/Vision-GGUF"])
        screen.query_one("#hub-results", DataTable).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(rows(screen, "#hub-files")) == 3)
        listed = rows(screen, "#hub-files")
        assert listed[0][1] == "Q4_K_M" and listed[0][0] == "★"
        assert listed[1] == ["", "F16", "1.0 KB", "", "-", "mmproj-vision-F16 (vision projector, not a chat model)"]
        assert listed[2][5] == "imatrix (importance matrix, not a chat model)"
        status = screen.query_one("#hub-status", Static)
        assert str(status.content).startswith("1 file of org/Vision-GGUF")  # one chat model
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: "is a vision projector, not a chat model" in str(status.content))
        await pilot.pause(0.3)
        assert pilot.app.downloads.current is None and not list(cache.rglob("*.gguf"))


async def test_counts_are_singular_for_one(hub) -> None:
    _, url, cache = hub
    async with make_app(url, cache).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        screen = await open_hub(pilot)
        status = screen.query_one("#hub-status", Static)
        await type_text(pilot, "other")
        await wait_until(pilot, lambda: str(status.content).startswith("1 repository · "))
        screen.query_one("#hub-results", DataTable).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: str(status.content).startswith("1 file of org/Other-GGUF at n_ctx"))


async def test_an_unreachable_hub_is_said_at_once_when_listing_files(hub) -> None:
    fake, url, cache = hub
    async with make_app(url, cache).run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: pilot.app.chat is not None)
        screen = await open_hub(pilot)
        fake.stop()  # it goes away after the search
        screen.query_one("#hub-results", DataTable).focus()
        await pilot.press("enter")
        asked = time.monotonic()
        status = screen.query_one("#hub-status", Static)
        await wait_until(pilot, lambda: "the Hub cannot be reached" in str(status.content), 20)
        assert time.monotonic() - asked < 10  # not after the library's 23 s of retries
        assert not screen.query_one("#hub-files", DataTable).loading
    fake.start()  # the fixture stops it again
