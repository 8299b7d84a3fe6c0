"""Find a GGUF model on the Hugging Face Hub, see which file fits this machine, download it, chat.

Searching, listing and downloading run in thread workers; a download keeps going (and its
bar keeps moving) while the user searches for something else.  Repository names and file
names come from the network: they are shown as plain text, never as markup.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import DataTable, Input, ProgressBar, Static

from models.errors import ModelError
from models.fit import Fit, Hardware, estimate, fit, recommend
from models.hub import HubClient, HubModel
from models.hub_download import Progress
from models.hub_files import GGUFChoice
from models.local_models import LocalModel
from models.units import human_bytes as human
from sinkchat.safe_text import inert_line
from tui import keys

Puller = Callable[..., Path]
"""``pull(repo_id, choice, on_progress=, cancel=) -> path`` (``models.hub_download.pull``, bound to an endpoint)."""

SEARCH_DELAY = 0.4
FIT_STYLE = {"fits": "green", "tight": "yellow", "too big": "red"}


@dataclass
class FileRow:
    choice: GGUFChoice
    need: int
    fit: Fit


class HubScreen(ModalScreen[Path | None]):
    """Dismisses with the path of a downloaded model to chat with, or None."""

    BINDINGS = [*keys.DIALOG, *keys.HUB]

    class Results(Message):
        def __init__(self, query: str, results: list[HubModel] | None, error: str | None = None) -> None:
            super().__init__()
            self.query, self.results, self.error = query, results, error

    class Files(Message):
        def __init__(
            self, repo: str, rows: list[FileRow] | None, best: int | None, error: str | None = None, focus: bool = True
        ) -> None:
            super().__init__()
            self.repo, self.rows, self.best, self.error, self.focus = repo, rows, best, error, focus

    class Downloaded(Message):
        def __init__(self, repo: str, choice: GGUFChoice, path: Path | None, error: str | None) -> None:
            super().__init__()
            self.repo, self.choice, self.path, self.error = repo, choice, path, error

    class Local(Message):
        def __init__(self, models: list[LocalModel]) -> None:
            super().__init__()
            self.models = models

    class Moved(Message):
        def __init__(self, progress: Progress) -> None:
            super().__init__()
            self.progress = progress

    def __init__(self, client: HubClient, pull: Puller, hardware: Callable[[], Hardware], n_ctx: int) -> None:
        super().__init__()
        self.client, self.pull, self.hardware, self.n_ctx = client, pull, hardware, n_ctx
        self.results: list[HubModel] = []
        self.rows: list[FileRow] = []
        self.repo: str | None = None
        self.downloading: tuple[str, GGUFChoice] | None = None
        self.downloaded: dict[tuple[str, str], Path] = {}
        self.local: list[LocalModel] | None = None
        """Shown instead of the Hub's files when the Hub cannot be reached."""
        self.cancel = threading.Event()
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="hub"):
            yield Static(Text("Models on the Hugging Face Hub", style="bold"), classes="title")
            yield Input(placeholder="Search GGUF models (e.g. qwen2.5 1.5b instruct)", id="hub-search")
            results: DataTable[Text] = DataTable(cursor_type="row", id="hub-results")
            results.add_columns("Repository", "Downloads", "Likes", "Updated")
            yield results
            files: DataTable[Text] = DataTable(cursor_type="row", id="hub-files")
            files.add_columns("", "Quant", "Size", "Needs", "Fit", "File")
            yield files
            with Horizontal(id="hub-download"):
                yield ProgressBar(id="hub-progress", show_eta=False)
                yield Static(Text(""), id="hub-progress-text")
            yield Static(Text(""), id="hub-status", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#hub-download").display = False
        self.status("Type to search; Tab moves between the lists; Enter opens; Esc closes.")
        self.search_worker("")
        self.query_one(Input).focus()

    def status(self, text: str) -> None:
        self.query_one("#hub-status", Static).update(Text(text))

    # -- search --------------------------------------------------------------------------------

    @on(Input.Changed, "#hub-search")
    def typed(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(SEARCH_DELAY, lambda: self.search_worker(self.query_one(Input).value.strip()))

    @on(Input.Submitted, "#hub-search")
    def submitted(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.search_worker(self.query_one(Input).value.strip())
        self.query_one("#hub-results", DataTable).focus()

    @work(thread=True, exclusive=True, group="hub-search")
    def search_worker(self, query: str) -> None:
        self.post_message(self.Results(query, None))  # "searching …"
        try:
            self.post_message(self.Results(query, self.client.search(query, limit=30)))
        except ModelError as exc:
            self.post_message(self.Results(query, [], str(exc)))

    def on_hub_screen_results(self, message: Results) -> None:
        table = self.query_one("#hub-results", DataTable)
        if message.results is None:
            table.loading = True
            return
        table.loading = False
        if message.error:
            self.status(message.error)
            if "offline" in message.error or "cannot be reached" in message.error:
                self.local_worker()
        elif not message.results:
            self.status(f"No GGUF models match {message.query!r}.")
        else:
            self.status(f"{len(message.results)} repositories · Enter lists the files")
        self.results = message.results
        table.clear()
        for r in self.results:
            updated = r.last_modified.strftime("%Y-%m-%d") if r.last_modified else ""
            name = inert_line(r.repo_id) + ("  (gated)" if r.gated else "")
            table.add_row(
                Text(name), Text(f"{r.downloads or 0:,}", justify="right"), Text(f"{r.likes or 0:,}", justify="right"),
                Text(updated),
            )  # fmt: skip

    @on(DataTable.RowSelected, "#hub-results")
    def open_repo(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.results):
            self.local = None
            self.repo = self.results[event.cursor_row].repo_id
            self.files_worker(self.repo)

    # -- offline: the local library ------------------------------------------------------------

    @work(thread=True, exclusive=True, group="hub-files")
    def local_worker(self) -> None:
        scan = getattr(self.app, "scan_models", None)
        self.post_message(self.Local(scan() if scan is not None else []))

    def on_hub_screen_local(self, message: Local) -> None:
        self.local, self.rows, self.repo = [m for m in message.models if m.usable], [], None
        table = self.query_one("#hub-files", DataTable)
        table.clear()
        for m in self.local:
            table.add_row(
                Text(""), Text(inert_line(m.quantization or "?")), Text(human(m.size_bytes), justify="right"),
                Text(""), Text("local"), Text(inert_line(m.name)),
            )  # fmt: skip
        status = self.query_one("#hub-status", Static)
        status.update(Text(f"{status.content} · {len(self.local)} models on this machine below: Enter chats"))

    # -- files ---------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="hub-files")
    def files_worker(self, repo: str, focus: bool = True) -> None:
        """List the files; ``focus=False`` for a refresh that must not take the keyboard from the user."""
        try:
            choices = [c for c in self.client.files(repo) if c.kind == "model"]
            hardware = self.hardware()
            rows = []
            for c in choices:
                need = estimate(c.size, self.n_ctx, quant=c.quant).total
                rows.append(FileRow(c, need, fit(need, hardware)))
            best = recommend([r.choice.quant for r in rows], [r.choice.size for r in rows], [r.fit for r in rows])
            self.post_message(self.Files(repo, rows, best, focus=focus))
        except ModelError as exc:
            self.post_message(self.Files(repo, None, None, str(exc), focus=focus))

    def on_hub_screen_files(self, message: Files) -> None:
        if message.repo != self.repo:
            return
        table = self.query_one("#hub-files", DataTable)
        table.clear()
        if message.rows is None:
            self.rows = []
            self.status(message.error or "")
            return
        self.rows = message.rows
        for i, row in enumerate(self.rows):
            c = row.choice
            have = (message.repo, c.name) in self.downloaded
            table.add_row(
                Text("★" if i == message.best else ("✓" if have else "")),
                Text(inert_line(c.quant or "?")),
                Text(human(c.size), justify="right"),
                Text("~" + human(row.need), justify="right"),
                Text(row.fit, style=FIT_STYLE[row.fit]),
                Text(inert_line(c.name) + (f" ({len(c.parts)} parts)" if len(c.parts) > 1 else "")),
            )
        if message.best is not None and message.focus:
            table.move_cursor(row=message.best)
        if message.focus:
            table.focus()
        self.status(
            f"{len(self.rows)} files of {inert_line(message.repo)} at n_ctx {self.n_ctx} · ★ best fit · Enter downloads"
            if self.rows
            else f"{inert_line(message.repo)} has no GGUF model files."
        )

    @on(DataTable.RowSelected, "#hub-files")
    def pick_file(self, event: DataTable.RowSelected) -> None:
        if self.local is not None and self.repo is None:
            if 0 <= event.cursor_row < len(self.local):
                self.dismiss(self.local[event.cursor_row].path)
            return
        if not (0 <= event.cursor_row < len(self.rows)) or self.repo is None:
            return
        choice = self.rows[event.cursor_row].choice
        done = self.downloaded.get((self.repo, choice.name))
        if done is not None:
            self.dismiss(done)  # downloaded: chat with it
            return
        if self.downloading is not None:
            self.notify("A download is running; Ctrl+B cancels it.", severity="warning", markup=False)
            return
        self.downloading = (self.repo, choice)
        self.cancel.clear()
        self.query_one("#hub-download").display = True
        bar = self.query_one(ProgressBar)
        bar.update(total=choice.size, progress=0)
        self.download_worker(self.repo, choice)

    # -- download ------------------------------------------------------------------------------

    @work(thread=True, group="hub-download")
    def download_worker(self, repo: str, choice: GGUFChoice) -> None:
        try:
            path = self.pull(repo, choice, on_progress=lambda p: self.post_message(self.Moved(p)), cancel=self.cancel)
            self.post_message(self.Downloaded(repo, choice, path, None))
        except ModelError as exc:
            self.post_message(self.Downloaded(repo, choice, None, str(exc)))

    def on_hub_screen_moved(self, message: Moved) -> None:
        p = message.progress
        self.query_one(ProgressBar).update(total=p.total, progress=p.done)
        rate = f" · {human(p.bytes_per_second)}/s" if p.bytes_per_second else ""
        eta = f" · {int(p.eta_seconds)} s left" if p.eta_seconds is not None else ""
        name = self.downloading[1].name if self.downloading else ""
        self.query_one("#hub-progress-text", Static).update(
            Text(f"{inert_line(name)}: {human(p.done)} / {human(p.total)}{rate}{eta} · Ctrl+B cancels")
        )

    def on_hub_screen_downloaded(self, message: Downloaded) -> None:
        self.downloading = None
        self.query_one("#hub-download").display = False
        if message.path is None:
            self.notify(message.error or "the download failed", title="Not downloaded", severity="error", markup=False)
            return
        self.downloaded[(message.repo, message.choice.name)] = message.path
        self.notify(f"{message.choice.name} is ready: Enter on it starts a chat.", title="Downloaded", markup=False)
        if message.repo == self.repo:
            self.files_worker(message.repo, focus=False)  # redraw with the ✓

    def action_cancel_download(self) -> None:
        if self.downloading is not None:
            self.cancel.set()
