"""Which model and settings a chat opens with: a new session, or a saved one resumed.

A saved session remembers its model, cache size, system prompt and sampling.  Options
given on the command line win; a remembered model file that is gone is replaced by the
configured (or embedded) one, and the reason is kept for the user to read.  A chat
opened with ``save=False`` (``sinkchat run --no-save``) writes nothing to the sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.errors import ModelFileError
from models.gguf_meta import regular_file
from sinkchat.chat import Chat, resolve_model_path
from sinkchat.errors import SinkchatError
from sinkchat.session import Session, SessionLibrary
from sinkchat.settings import Settings, SettingsError, config_path


@dataclass
class OpenPlan:
    """What to load, and which saved session (if any) to continue in it."""

    model_path: Path
    load_options: dict[str, Any]
    session_id: str | None = None
    notes: list[str] = field(default_factory=list)
    save: bool = True
    """False: a new chat that is never written to the sessions (``--no-save``)."""
    max_tokens: int | None = None
    """The configured reply limit (None: none); a resumed session's own choice wins unless given."""


def library_for(settings: Settings) -> SessionLibrary:
    return SessionLibrary(
        settings.sessions_dir(),
        max_snapshots=settings.sessions.max_snapshots,
        max_snapshot_bytes=int(settings.sessions.max_snapshot_gb * (1 << 30)),
    )


def plan_open(
    library: SessionLibrary,
    settings: Settings,
    *,
    model: Path | None = None,
    resume: str | None = None,
    given: frozenset[str] = frozenset(),
    save: bool = True,
) -> OpenPlan:
    """Resolve ``resume`` (an id, a unique prefix or ``last``) and the model to load for it.

    ``given`` names the settings the user set explicitly this time (``n_ctx``,
    ``system_prompt``, ``sampling``, ``chat_template``): those override what the session remembers.
    ``save=False`` plans a new chat that is not saved; it cannot continue a saved one.
    """
    options = settings.load_options()
    if resume is None:
        path = resolve_model_path(model) if model is not None else configured_model(settings)
        return OpenPlan(path, options, save=save, max_tokens=settings.chat.max_tokens)
    if not save:
        raise SinkchatError("--no-save starts a new chat that is not saved; it cannot be combined with --resume")
    sid = library.store.resolve(resume)
    info = library.store.get(sid)
    if library.is_open(sid):
        library.lock(sid)  # raises the clear "open in another sinkchat" error
    notes: list[str] = []
    remembered = Path(info.model_path) if info.model_path else None
    if model is not None:
        path = resolve_model_path(model)
    elif remembered is not None and remembered.is_file():
        path = remembered
    else:
        path = configured_model(settings)
        if remembered is not None:
            notes.append(f"the session's model {remembered} is missing; continuing with {path.name}")
    if "n_ctx" not in given and info.settings.n_ctx:
        options["n_ctx"] = max(info.settings.n_ctx, 64)
    if "chat_template" not in given and info.settings.chat_template:
        options["chat_template"] = info.settings.chat_template
    return OpenPlan(path, options, sid, notes, max_tokens=settings.chat.max_tokens)


def configured_model(settings: Settings) -> Path:
    """``[model] default`` (an error naming the settings file when it is unusable), else the embedded model."""
    default = settings.model.default
    path = resolve_model_path(default)
    if default is not None:
        try:
            regular_file(path)
        except ModelFileError as exc:
            raise SettingsError(f"{exc} (the [model] default of {config_path()})") from exc
    return path


def open_session(chat: Chat, library: SessionLibrary, plan: OpenPlan, given: frozenset[str] = frozenset()) -> Session:
    """Bind a loaded chat to the planned session (a new one when none was asked for)."""
    if plan.session_id is None:
        return Session.new(chat, library, save=plan.save)
    session = Session.resume(chat, library, plan.session_id)
    if "system_prompt" in given and plan.load_options.get("system_prompt") != session.system_prompt:
        session.rebuild(plan.load_options.get("system_prompt"))
    if "sampling" in given:
        session.sampling = plan.load_options["sampling"]
    if "max_tokens" in given:
        session.remember_max_tokens(plan.max_tokens)
    notes = [*plan.notes, *([session.note] if session.note else [])]
    session.note = "; ".join(notes) or None
    return session
