"""GGUF models already on this machine: the embedded default, model folders, paths given by the user."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from models.errors import ModelFileError
from models.gguf_meta import read_gguf

Source = Literal["embedded", "command line", "settings", "models folder"]

# Files that are GGUF but not chat models, and split parts after the first.
_NOT_A_MODEL = re.compile(r"(mmproj|imatrix)", re.IGNORECASE)
_LATER_SPLIT = re.compile(r"-(\d{5})-of-\d{5}\.gguf$", re.IGNORECASE)


class LocalModel(BaseModel):
    """A model file and what its header says; ``problem`` explains why it cannot be used."""

    model_config = ConfigDict(frozen=True)

    path: Path
    source: Source
    size_bytes: int = 0
    architecture: str | None = None
    context_length: int | None = None
    quantization: str | None = None
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def usable(self) -> bool:
        return self.problem is None


def _quantization(file_type: object) -> str | None:
    if not isinstance(file_type, int):
        return None
    from gguf.constants import LlamaFileType

    try:
        return LlamaFileType(file_type).name.removeprefix("MOSTLY_")
    except ValueError:
        return None


def describe(path: Path, source: Source) -> LocalModel:
    """Read one file's header; a damaged file is listed with its problem rather than dropped."""
    try:
        info = read_gguf(path)
    except ModelFileError as exc:
        size = path.stat().st_size if path.is_file() else 0
        return LocalModel(path=path, source=source, size_bytes=size, problem=str(exc))
    return LocalModel(
        path=path,
        source=source,
        size_bytes=info.file_size,
        architecture=info.architecture,
        context_length=info.context_length,
        quantization=_quantization(info.metadata.get("general.file_type")),
    )


def _gguf_files(folder: Path) -> Iterable[Path]:
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("*.gguf")):
        if _NOT_A_MODEL.search(path.name):
            continue
        split = _LATER_SPLIT.search(path.name)
        if split and split.group(1) != "00001":
            continue
        found.append(path)
    return found


def scan_local_models(
    *,
    embedded: Path | None = None,
    given: Sequence[tuple[Path, Source]] = (),
    folders: Sequence[Path] = (),
) -> list[LocalModel]:
    """Every model the picker can offer, without loading any of them; each file once."""
    candidates: list[tuple[Path, Source]] = []
    if embedded is not None:
        candidates.append((embedded, "embedded"))
    candidates.extend(given)
    for folder in folders:
        candidates.extend((path, "models folder") for path in _gguf_files(folder))
    seen: set[Path] = set()
    models = []
    for path, source in candidates:
        key = path.expanduser().resolve()
        if key in seen:
            continue
        seen.add(key)
        models.append(describe(path.expanduser(), source))
    return models
