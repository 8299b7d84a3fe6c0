"""``sinkchat run``: the Textual chat app."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.screen import Screen

from models.default_model import default_model_path
from models.local_models import LocalModel, Source, scan_local_models
from sinkchat.safe_text import inert, inert_line
from sinkchat.settings import Settings, SettingsError, config_path
from tui import keys
from tui.backend import ChatBackend, ChatFactory, SessionSource, load_chat
from tui.screens.chat import ChatScreen
from tui.screens.help import HelpScreen
from tui.screens.welcome import NoModelScreen
from tui.widgets.downloads import Downloads


def check_keys(settings: Settings) -> None:
    """Refuse a ``[keys]`` table that names unknown bindings or keys, or gives a key two jobs,
    and a ``[ui] theme`` Textual does not have: like any other bad setting, one line before the app starts."""
    from textual.theme import BUILTIN_THEMES

    problems = [f"[keys] {p}" for p in keys.check_keymap(settings.keys)]
    theme = settings.ui.theme
    if theme and theme not in BUILTIN_THEMES:
        problems.append(f"[ui] theme = {theme!r} is not a theme; available: {', '.join(sorted(BUILTIN_THEMES))}")
    if problems:
        raise SettingsError(f"settings file {config_path()}: " + "; ".join(problems))


class SinkchatApp(App[None]):
    CSS_PATH = "sinkchat.tcss"
    TITLE = "sinkchat"
    BINDINGS = keys.APP

    def __init__(
        self,
        settings: Settings,
        *,
        model_path: Path | None = None,
        chat_factory: ChatFactory = load_chat,
        local_models: Iterable[LocalModel] | None = None,
        sessions: SessionSource | None = None,
        hub_endpoint: str | None = None,
        hub_cache: Path | None = None,
    ) -> None:
        check_keys(settings)
        super().__init__()
        self.hub_endpoint, self.hub_cache = hub_endpoint, hub_cache
        """Where the Hub browser looks and downloads (None: huggingface_hub's own settings)."""
        self.hub_hardware = None
        """A fixed ``models.fit.Hardware`` instead of detecting it (tests, snapshots)."""
        self.sessions = sessions
        """Saved sessions; None: chats are not saved (tests, or no data dir)."""
        self.settings = settings
        self.given_model = model_path
        self.model_path = model_path or settings.model.default or default_model_path()
        self._chat_factory = chat_factory
        self.loading: Path | None = None
        """The model last asked to load: the one a load failure is about."""
        self.chat: ChatBackend | None = None
        self.max_tokens = settings.chat.max_tokens
        self.user_keymap = dict(settings.keys)
        self._local_models = list(local_models) if local_models is not None else None
        self.downloads = Downloads(self)
        """Hub downloads: they outlive the Hub screen, show on every screen, and quitting asks about them."""

    async def on_mount(self) -> None:
        self.apply_settings()
        self.chat_screen = ChatScreen()
        await self.push_screen(self.chat_screen)
        notice = getattr(self.sessions, "notice", None)
        if notice:  # damage found in the saved sessions: said once, where the user looks
            self.notify(notice, title="Saved sessions", severity="warning", timeout=30, markup=False)
        if self.model_path is None:
            await self.push_screen(NoModelScreen(self.settings.models_dir(), embedded=default_model_path()))
        else:
            self.chat_screen.load(self.model_path)

    def apply_settings(self) -> None:
        """Theme and key map (checked before the app started); an unknown theme is shown, and the default used."""
        theme = self.settings.ui.theme
        if theme in self.available_themes:
            self.theme = theme
        else:
            problem = f"unknown theme {theme!r}; available: {', '.join(sorted(self.available_themes))}"
            self.notify(f"{config_path()}: {problem}", title="Settings", severity="error", timeout=20, markup=False)
        self.set_keymap(self.user_keymap)

    def scan_models(self) -> list[LocalModel]:
        """Models for the picker (runs in a worker: it reads file headers)."""
        if self._local_models is not None:
            return self._local_models
        given: list[tuple[Path, Source]] = []
        if self.given_model is not None:
            given.append((self.given_model, "command line"))
        if self.settings.model.default is not None:
            given.append((self.settings.model.default, "settings"))
        return scan_local_models(
            embedded=default_model_path(), given=given, folders=[self.settings.models_dir()], hub_cache=True
        )

    def notify(self, message: str, *, title: str = "", **kwargs: Any) -> None:  # type: ignore[override]
        """Every toast goes through the safe-text path: messages quote paths, titles and errors."""
        if not kwargs.get("markup", True):
            message, title = inert(message), inert_line(title)
        super().notify(message, title=title, **kwargs)

    def chat_factory(self, path: Path, settings: Settings) -> ChatBackend:
        """Load a model (in a worker thread), remembering which one, for the message if it fails."""
        self.loading = path
        return self._chat_factory(path, settings)

    def model_failed(self, reason: str) -> None:
        """A model did not load: say which and why, and offer the ways to get another."""
        if self.chat is None:
            while isinstance(self.screen, NoModelScreen):
                self.pop_screen()
            failed, embedded = self.loading, default_model_path()
            self.push_screen(NoModelScreen(self.settings.models_dir(), reason, failed=failed, embedded=embedded))
        else:
            self.notify(reason, title="Model not loaded", severity="error", timeout=15, markup=False)

    def open_model(self, path: Path) -> None:
        """Chat with ``path``: leave the no-model screen and load it."""
        while isinstance(self.screen, NoModelScreen):
            self.pop_screen()
        self.chat_screen.load(path)

    # -- actions -------------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.user_keymap, str(config_path())))

    def action_pick_model(self) -> None:
        while isinstance(self.screen, NoModelScreen):
            self.pop_screen()
        self.chat_screen.action_pick_model()

    def action_open_hub(self) -> None:
        from functools import partial

        from models.fit import detect_hardware
        from models.hub import HubClient
        from models.hub_download import pull
        from tui.screens.hub import HubScreen

        if isinstance(self.screen, HubScreen):
            return

        def chosen(path: Path | None) -> None:
            if path is not None:
                self.open_model(path)

        screen = HubScreen(
            HubClient(endpoint=self.hub_endpoint),
            partial(pull, endpoint=self.hub_endpoint, cache=self.hub_cache),
            (lambda: self.hub_hardware) if self.hub_hardware is not None else detect_hardware,
            self.settings.cache.n_ctx,
        )
        self.push_screen(screen, chosen)

    async def action_quit(self) -> None:
        if self.downloads.ask_before_quit():  # a download runs: cancel it and quit, or keep it
            return
        if self.chat is not None:
            self.chat.cancel()  # a running reply ends at the next token
        self.exit()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The chat's actions, and Textual's own; one command per title (ours win: "Keys" is F1)."""
        chat_screen = self.chat_screen
        ours = [
            SystemCommand(
                binding.description,
                f"{keys.display_keys(self.user_keymap.get(binding.id or '', binding.key))} · {binding.id}",
                lambda action=binding.action: chat_screen.run_action(action),
            )
            for binding in keys.CHAT
        ]
        ours.append(SystemCommand("Keys", "Show every key and its binding id (F1)", self.action_help))
        titles = {command.title for command in ours}
        yield from ours
        yield from (command for command in super().get_system_commands(screen) if command.title not in titles)


def run(
    settings: Settings,
    model_path: Path | None = None,
    *,
    library: object | None = None,
    plan: object | None = None,
    given: frozenset[str] = frozenset(),
) -> int:
    """Entry point of the ``sinkchat.frontends`` group: run the app until the user quits.

    ``library`` (a ``SessionLibrary``) saves the chats; ``plan`` (an ``OpenPlan``) says which
    model to load and which session to resume, ``given`` which settings the command line set.
    """
    from tui.backend import LibrarySessions

    check_keys(settings)  # before anything starts: a bad [keys] entry is one line from the command
    _log_to_file()
    sessions = LibrarySessions(library, plan, given) if library is not None else None
    if plan is not None:
        model_path = plan.model_path  # type: ignore[attr-defined]
        options = plan.load_options  # type: ignore[attr-defined]
        n_ctx = options.get("n_ctx", settings.cache.n_ctx)
        template = options.get("chat_template", settings.model.chat_template)  # a resumed session remembers it
        settings = settings.model_copy(
            update={
                "cache": settings.cache.model_copy(update={"n_ctx": n_ctx}),
                "model": settings.model.model_copy(update={"chat_template": template}),
            }
        )
    app = SinkchatApp(settings, model_path=model_path, sessions=sessions)
    try:
        app.run()
    finally:
        app.downloads.close()  # one still running (the app ended otherwise) is cancelled: its partial goes
        chat = app.chat
        if chat is not None:
            chat.cancel()
            deadline = time.monotonic() + 10
            while chat.busy and time.monotonic() < deadline:  # a reply worker ends at its next token
                time.sleep(0.01)
            chat.close()
    return app.return_code or 0


def _log_to_file() -> None:
    """Log lines written to the terminal would tear through the screen: send them to a file."""
    import logging

    from platformdirs import user_log_path

    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
    try:
        folder = user_log_path("sinkchat", appauthor=False)
        folder.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(folder / "sinkchat.log", encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root.addHandler(handler)
