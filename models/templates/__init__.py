"""Chat templates people run, shipped for ``--chat-template NAME`` and as the conformance suite's data.

Each ``NAME.jinja`` is a real template copied verbatim from its model's release (most via
llama.cpp's own test data); ``catalog.json`` says which models use it and where the text
came from.  A GGUF whose template is missing or broken can be given one of these by name,
or any Jinja file by path, as llama.cpp's ``--chat-template-file`` does.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from models.errors import ModelFileError


class TemplateInfo(BaseModel):
    name: str
    models: str
    source: str
    aliases: list[str] = []


@cache
def catalog() -> dict[str, TemplateInfo]:
    """The shipped templates by name."""
    raw = json.loads(resources.files(__package__).joinpath("catalog.json").read_text(encoding="utf-8"))
    return {name: TemplateInfo(name=name, **entry) for name, entry in raw.items()}


def _by_name(name: str) -> TemplateInfo | None:
    key = name.strip().lower()
    for info in catalog().values():
        if key == info.name or key in info.aliases:
            return info
    return None


def template_text(name: str) -> str:
    """The Jinja source of a shipped template (a name or one of its aliases)."""
    info = _by_name(name)
    if info is None:
        raise KeyError(name)
    return resources.files(__package__).joinpath(f"{info.name}.jinja").read_text(encoding="utf-8")


def resolve(spec: str | Path) -> tuple[str, str]:
    """``(name, source)`` of a template given as a shipped name or a file path; a clear error otherwise."""
    text = str(spec)
    info = _by_name(text) if not isinstance(spec, Path) else None
    if info is not None:
        return info.name, template_text(info.name)
    path = Path(text).expanduser()
    if path.is_file():
        try:
            return path.name, path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"cannot read the chat template {path}: {exc}") from exc
    names = ", ".join(catalog())
    raise ModelFileError(f"no chat template named or found at {text!r}; use a file or one of: {names}")
