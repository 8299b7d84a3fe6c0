"""Find a GGUF model on the Hugging Face Hub, see which file fits this machine, download it, chat.

Searching and listing run in thread workers.  A download belongs to the app
(:class:`tui.widgets.downloads.Downloads`): it keeps going, and its bar keeps moving, while the
user searches for something else, closes this screen or reopens it.  Files already in the
cache are marked ✓ and chat at once; ``mmproj`` and ``imatrix`` files are listed apart, as
not chat models.  Opening the screen removes the partial files of downloads whose process
died.  Repository names and file names come from the network: they are shown as plain text,
never as markup.
"""

from __future__ import annotations

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
from models.hub_download import Progress, cached_path, sweep_partials
from models.hub_files import GGUFChoice
from models.local_models import LocalModel
from models.units import human_bytes as human
from sinkchat.safe_text import inert_line
from tui import keys
from tui.widgets.downloads import Download, Downloads

Puller = Callable[..., Path]
"""``pull(repo_id, choice, on_progress=, cancel=) -> path`` (``models.hub_download.pull``, bound to an endpoint)."""

SEARCH_DELAY = 0.4
FIT_STYLE = {"fits": "green", "tight": "yellow", "too big": "red"}
NOT_CHAT = {"mmproj": "vision projector, not a chat model", "imatrix": "importance matrix, not a chat model"}


@dataclass
class FileRow:
    choice: GGUFChoice
    need: int | None
    """None: not a chat model (``mmproj``, ``imatrix``), listed apart."""
    fit: Fit | None
    path: Path | None = None
    """Where it is in the cache, when every part is there."""


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


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

    class Swept(Message):
        def __init__(self, freed: int) -> None:
            super().__init__()
            self.freed = freed

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
        """The app's running download, as this screen last drew it."""
        self.local: list[LocalModel] | None = None
        """Shown instead of the Hub's files when the Hub cannot be reached."""
        self._timer: Timer | None = None
        self._focus_results = False
        """Enter in the search box: the results take the focus when some arrive."""

    @property
    def downloads(self) -> Downloads:
        return Downloads.of(self.app)

    @property
    def cache(self) -> Path | None:
        return getattr(self.app, "hub_cache", None)

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
        self.downloads.changed.subscribe(self, self.download_changed)
        if self.downloads.running is not None:  # started before this screen was opened
            self.download_changed(self.downloads.running)
        self.sweep_worker()
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
        self._focus_results = True  # once there are results to go to
        self.search_worker(self.query_one(Input).value.strip())

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
            self.status(f"{count(len(message.results), 'repository', 'repositories')} · Enter lists the files")
        self.results = message.results
        if self.repo not in {r.repo_id for r in self.results}:
            self.show_files(None)  # the files of a repository no longer listed
        if message.query == self.query_one(Input).value.strip():  # not an older search's late answer
            if self._focus_results and self.results:
                table.focus()
            self._focus_results = False
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
            self.query_one("#hub-files", DataTable).loading = True
            self.status(f"Listing the files of {inert_line(self.repo)} …")
            self.files_worker(self.repo)

    def show_files(self, repo: str | None) -> None:
        """Which repository's files the table is for; None empties it."""
        self.repo, self.rows = repo, []
        table = self.query_one("#hub-files", DataTable)
        table.loading = False
        if self.local is None:
            table.clear()

    # -- partial files of downloads that died --------------------------------------------------

    @work(thread=True, group="hub-sweep")
    def sweep_worker(self) -> None:
        self.post_message(self.Swept(sweep_partials(self.cache)))

    def on_hub_screen_swept(self, message: Swept) -> None:
        if message.freed:
            self.notify(
                f"Removed {human(message.freed)} of unfinished downloads left by a sinkchat that was stopped.",
                title="Hub cache",
                markup=False,
            )

    # -- offline: the local library ------------------------------------------------------------

    @work(thread=True, exclusive=True, group="hub-files")
    def local_worker(self) -> None:
        scan = getattr(self.app, "scan_models", None)
        self.post_message(self.Local(scan() if scan is not None else []))

    def on_hub_screen_local(self, message: Local) -> None:
        self.local, self.rows, self.repo = [m for m in message.models if m.usable], [], None
        table = self.query_one("#hub-files", DataTable)
        table.loading = False
        table.clear()
        for m in self.local:
            table.add_row(
                Text(""), Text(inert_line(m.quantization or "?")), Text(human(m.size_bytes), justify="right"),
                Text(""), Text("local"), Text(inert_line(m.name)),
            )  # fmt: skip
        status = self.query_one("#hub-status", Static)
        local = count(len(self.local), "model", "models")
        status.update(Text(f"{status.content} · {local} on this machine below: Enter chats"))

    # -- files ---------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="hub-files")
    def files_worker(self, repo: str, focus: bool = True) -> None:
        """List the files; ``focus=False`` for a refresh that must not take the keyboard from the user."""
        try:
            choices = self.client.files(repo)
            hardware = self.hardware()
            rows = []
            for c in choices:
                if c.kind == "model":
                    need = estimate(c.size, self.n_ctx, quant=c.quant).total
                    rows.append(FileRow(c, need, fit(need, hardware), cached_path(repo, c, self.cache)))
            models = list(rows)
            rows += [FileRow(c, None, None) for c in choices if c.kind in NOT_CHAT]  # apart, after the models
            best = recommend([r.choice.quant for r in models], [r.choice.size for r in models], [r.fit for r in models])
            self.post_message(self.Files(repo, rows, best, focus=focus))
        except ModelError as exc:
            self.post_message(self.Files(repo, None, None, str(exc), focus=focus))

    def on_hub_screen_files(self, message: Files) -> None:
        if message.repo != self.repo:
            return
        table = self.query_one("#hub-files", DataTable)
        table.loading = False
        table.clear()
        if message.rows is None:
            self.rows = []
            self.status(message.error or "")
            return
        self.rows = message.rows
        for i, row in enumerate(self.rows):
            c = row.choice
            name = inert_line(c.name) + (f" ({len(c.parts)} parts)" if len(c.parts) > 1 else "")
            if row.need is None or row.fit is None:  # not a chat model: apart, dimmed, nothing to fit
                table.add_row(
                    Text(""), Text(inert_line(c.quant or "-"), style="dim"), Text(human(c.size), justify="right", style="dim"),
                    Text(""), Text("-", style="dim"), Text(f"{name} ({NOT_CHAT[c.kind]})", style="dim"),
                )  # fmt: skip
                continue
            have = row.path is not None or (message.repo, c.name) in self.downloads.finished
            table.add_row(
                Text(("★" if i == message.best else "") + ("✓" if have else "")),
                Text(inert_line(c.quant or "?")),
                Text(human(c.size), justify="right"),
                Text("~" + human(row.need), justify="right"),
                Text(row.fit, style=FIT_STYLE[row.fit]),
                Text(name),
            )
        if message.best is not None and message.focus:
            table.move_cursor(row=message.best)
        if message.focus:
            table.focus()
        models = [r for r in self.rows if r.need is not None]
        files = count(len(models), "file", "files")
        have = " · ✓ downloaded: Enter chats" if any(r.path for r in models) else ""
        self.status(
            f"{files} of {inert_line(message.repo)} at n_ctx {self.n_ctx} · ★ best fit · Enter downloads{have}"
            if models
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
        row = self.rows[event.cursor_row]
        choice = row.choice
        if row.need is None:
            self.status(f"{inert_line(choice.name)} is a {NOT_CHAT[choice.kind]}: sinkchat does not load it.")
            return
        done = row.path or self.downloads.finished.get((self.repo, choice.name))
        if done is not None:
            self.dismiss(done)  # downloaded: chat with it
            return
        if not self.downloads.start(self.repo, choice, self.pull):
            self.notify("A download is running; Ctrl+B cancels it.", severity="warning", markup=False)

    # -- download: the app's, drawn here ----------------------------------------------------------

    def download_changed(self, download: Download) -> None:
        """The app's download moved, or ended (then the app has said how)."""
        if download.done:
            self.post_message(self.Downloaded(download.repo, download.choice, download.path, download.error))
            return
        if self.downloading != (download.repo, download.choice):
            self.downloading = (download.repo, download.choice)
            self.query_one("#hub-download").display = True
            self.query_one(ProgressBar).update(total=download.choice.size, progress=0)
        if download.progress is not None:
            self.post_message(self.Moved(download.progress))

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
        if message.path is not None and message.repo == self.repo:
            self.files_worker(message.repo, focus=False)  # redraw with the ✓

    def action_cancel_download(self) -> None:
        self.downloads.cancel()
