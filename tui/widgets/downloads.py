"""Hub downloads at the level of the app: they outlive the Hub screen, show on every screen, and quitting asks.

:class:`Downloads` runs one download at a time in a thread of its own and keeps its state;
a timer on the app reads that state, publishes it (:attr:`Downloads.changed`, which the Hub
screen follows) and keeps a :class:`DownloadLine` (file name, percent, rate) docked at the
bottom of whatever screen is showing.  Quitting while a download runs asks first
(:class:`QuitWhileDownloading`): cancelling removes the partial file before the app exits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.signal import Signal
from textual.timer import Timer
from textual.widgets import Button, Static

from models.errors import ModelError
from models.hub_download import DownloadCancelled, Progress
from models.hub_files import GGUFChoice
from models.units import human_bytes as human
from sinkchat.safe_text import inert_line
from tui import keys

TICK = 0.2
"""Seconds between looks at the running download (progress, the line on the current screen, the end)."""
QUIT_WAIT = 5.0
"""Seconds quitting waits for a cancelled download to remove its partial file."""


@dataclass
class Download:
    """One download and how it stands; the thread writes ``progress`` and the outcome, the UI reads them."""

    repo: str
    choice: GGUFChoice
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    path: Path | None = None
    error: str | None = None
    cancelled: bool = False
    done: bool = False
    said: bool = False
    """The UI has shown how it ended."""

    @property
    def running(self) -> bool:
        return not self.done

    def summary(self) -> str:
        """``tiny-chat-Q4_K_M 42% · 1.3 MB / 3.1 MB · 2.0 MB/s``, as plain text."""
        name = inert_line(self.choice.name)
        if self.cancel.is_set() and not self.done:
            return f"{name}: cancelling …"
        p = self.progress
        if p is None:
            return f"{name}: starting …"
        rate = f" · {human(int(p.bytes_per_second))}/s" if p.bytes_per_second else ""
        eta = f" · {_duration(p.eta_seconds)} left" if p.eta_seconds is not None and p.done < p.total else ""
        return f"{name} {p.fraction:.0%} · {human(p.done)} / {human(p.total)}{rate}{eta}"


class Downloads:
    """The app's Hub downloads (one at a time)."""

    def __init__(self, app: App[Any]) -> None:
        self.app = app
        self.current: Download | None = None
        self.finished: dict[tuple[str, str], Path] = {}
        """``(repo, choice name) -> path`` of what finished in this run of the app."""
        self.changed: Signal[Download] = Signal(app, "downloads-changed")
        """Published with the current download on every change the timer sees, and once when it ends."""
        self._thread: threading.Thread | None = None
        self._timer: Timer | None = None
        self._seen: Progress | None = None
        self._asking = False
        self._quit_by: float | None = None
        """When quitting after a cancel: the time to quit by even if the download has not ended."""
        self._quitting = False

    @classmethod
    def of(cls, app: App[Any]) -> Downloads:
        """The app's downloads (an app without its own gets one)."""
        found = getattr(app, "downloads", None)
        if not isinstance(found, cls):
            found = cls(app)
            app.downloads = found  # type: ignore[attr-defined]
        return found

    @property
    def running(self) -> Download | None:
        return self.current if self.current is not None and self.current.running else None

    def start(self, repo: str, choice: GGUFChoice, pull: Callable[..., Path]) -> bool:
        """Download ``choice`` with ``pull(repo, choice, on_progress=, cancel=)``; False while another one runs."""
        if self.running is not None:
            return False
        download = Download(repo, choice)
        self.current, self._seen = download, None
        self._thread = threading.Thread(
            target=self._run, args=(download, pull), name="sinkchat-hub-download", daemon=True
        )
        self._thread.start()
        if self._timer is None:
            self._timer = self.app.set_interval(TICK, self._tick, name="downloads")
        self._tick()
        return True

    def cancel(self) -> None:
        if self.running is not None:
            self.running.cancel.set()
            self._tick()

    @staticmethod
    def _run(download: Download, pull: Callable[..., Path]) -> None:
        """The download thread: never touches the UI, only ``download``."""

        def moved(progress: Progress) -> None:
            download.progress = progress

        try:
            download.path = pull(download.repo, download.choice, on_progress=moved, cancel=download.cancel)
        except DownloadCancelled:
            download.cancelled = True
        except ModelError as exc:
            download.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - said in the UI, not lost with the thread
            download.error = f"the download failed: {type(exc).__name__}: {exc}"
        finally:
            download.done = True

    # -- the UI side: a timer while a download runs ---------------------------------------------

    def _tick(self) -> None:
        download = self.current
        if download is None:
            return
        if download.done:
            self._ended(download)
            return
        self._show_line(download)
        if download.progress is not self._seen or download.cancel.is_set():
            self._seen = download.progress
            self.changed.publish(download)
        if self._quit_by is not None and time.monotonic() > self._quit_by:
            self._quit()  # it does not stop: quit anyway (``close`` waits for it once more)

    def _ended(self, download: Download) -> None:
        if download.said:
            return
        download.said = True
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        for screen in self.app.screen_stack:
            screen.query(DownloadLine).remove()
        if download.path is not None:
            self.finished[(download.repo, download.choice.name)] = download.path
            self.app.notify(
                f"{download.choice.name} is ready: Enter on it in the Hub starts a chat.",
                title="Downloaded",
                markup=False,
            )
        elif download.cancelled:
            self.app.notify(f"{download.choice.name}: the download was cancelled; nothing was kept.", markup=False)
        else:
            self.app.notify(
                download.error or "the download failed", title="Not downloaded", severity="error", markup=False
            )
        self.changed.publish(download)
        if self._quit_by is not None:
            self._quit()

    def _show_line(self, download: Download) -> None:
        """The progress line on the screen now showing (the Hub screen draws its own bar)."""
        from tui.screens.hub import HubScreen

        screen = self.app.screen
        if isinstance(screen, HubScreen | QuitWhileDownloading) or not screen.is_mounted:
            return
        lines = screen.query(DownloadLine)
        if lines:
            lines.first().show(download)
        else:
            line = DownloadLine()
            docked = [w.outer_size.height for w in screen.children if w.display and w.styles.dock == "bottom"]
            line.styles.margin = (0, 0, max(docked, default=0), 0)  # above a footer: docks on one edge overlap
            screen.mount(line)
            line.show(download)

    # -- quitting -------------------------------------------------------------------------------

    def ask_before_quit(self) -> bool:
        """True when the quit must wait: a download runs, and the user is asked (or being asked) what to do."""
        download = self.running
        if download is None or self._quitting:
            return False
        if self._asking or self._quit_by is not None:
            return True
        self._asking = True

        def answered(cancel: bool | None) -> None:
            self._asking = False
            if cancel and self.running is not None:
                self._quit_by = time.monotonic() + QUIT_WAIT
                self.cancel()
            elif cancel:
                self._quit()

        self.app.push_screen(QuitWhileDownloading(download), answered)
        return True

    def _quit(self) -> None:
        self._quit_by, self._quitting = None, True
        quit_action = getattr(self.app, "action_quit", None)
        if quit_action is not None:
            self.app.call_later(quit_action)

    def close(self, wait: float = 10.0) -> None:
        """After the app has ended: stop a download still running and give it ``wait`` seconds to clean up."""
        if self.running is not None:
            self.running.cancel.set()
        if self._thread is not None:
            self._thread.join(wait)


class DownloadLine(Static):
    """``↓ tiny-chat-Q4_K_M 42% · 1.3 MB / 3.1 MB · 2.0 MB/s``, docked at the bottom of the screen."""

    def show(self, download: Download) -> None:
        self.update(Text(f" ↓ {download.summary()}"))


class QuitWhileDownloading(ModalScreen[bool | None]):
    """Quit with a download running: cancel it (its partial file is removed) and quit, or keep downloading."""

    BINDINGS = [*keys.DIALOG, *keys.CONFIRM]  # as the other questions: y, n, Esc

    def __init__(self, download: Download) -> None:
        super().__init__()
        self.download = download

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(f"{self.download.summary()}: still downloading.", style="bold"), classes="title")
            yield Static(Text("Quitting now cancels the download, and its partial file is removed."))
            with Horizontal(classes="buttons"):
                yield Button("Cancel the download and quit (y)", variant="error", id="cancel-quit")
                yield Button("Keep downloading (n / Esc)", id="keep")

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "cancel-quit")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
