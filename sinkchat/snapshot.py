"""KV-cache snapshots: resume a long chat without reading its history again.

A snapshot file holds a JSON header and the sequence's KV bytes::

    b"SINKSNAP" | u32 format | u32 header length | header (JSON) | KV bytes

The header carries the :class:`Fingerprint` of everything the KV bytes depend on, the
:class:`CacheState` (token mirror and layout) that says what they hold, which messages
they cover (count and digest), and a CRC of the KV bytes, so a damaged or foreign file is
refused before llama.cpp sees it.  Files are written to a temporary name, flushed and
renamed, so a reader sees the old snapshot or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sinkchat.errors import SinkchatError
from sinkchat.layout import Role

MAGIC = b"SINKSNAP"
FORMAT = 1
_PREFIX = struct.Struct("<8sII")
SUFFIX = ".kv"


class SnapshotError(SinkchatError):
    """A snapshot is missing, damaged, or was made for other settings."""


class Fingerprint(BaseModel):
    """What a saved KV cache depends on; any difference means it cannot be loaded."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(description="identity of the model file: size and digests of its head and tail")
    n_ctx: int
    type_k: str
    type_v: str
    flash_attn: str
    sink_tokens: int
    keep_system_prompt: bool
    llama_cpp: str = Field(description="llama-cpp-python version (the state format may change)")
    chat_template: str = Field("", description="digest of the chat template that laid out the cached turns")
    swa_full: bool = Field(False, description="full-size sliding-window cache (its cells are in the KV bytes)")

    def differences(self, other: Fingerprint) -> list[str]:
        """Human words for what differs, e.g. ``n_ctx 1024 → 512``."""
        out = []
        for name in type(self).model_fields:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                if name == "model":
                    out.append("another model file")
                elif name == "chat_template":
                    out.append("another chat template")
                else:
                    out.append(f"{name} {a} → {b}")
        return out


class SegmentState(BaseModel):
    role: Role
    group: int
    n_tokens: int
    cut: bool = False
    opener: bool = False


class CacheState(BaseModel):
    """The engine's bookkeeping for the saved cache: it must match the KV bytes exactly."""

    tokens: list[int]
    pin_target: int
    n_pinned: int
    segments: list[SegmentState]
    group: int
    first_group: int | None
    opening_len: int
    shifts: int = 0
    evicted_tokens: int = 0


class SnapshotHeader(BaseModel):
    fingerprint: Fingerprint
    state: CacheState
    n_messages: int = Field(description="how many chat messages (system prompt included) the cache covers")
    messages_digest: str
    kv_bytes: int
    kv_crc32: int


def model_identity(path: Path) -> str:
    """Size plus digests of the first and last MiB: fast for a 40 GB file, and it survives a move."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            digest.update(f.read(1 << 20))
    return f"{size}:{digest.hexdigest()[:32]}"


def messages_digest(messages: Sequence[dict[str, Any]]) -> str:
    data = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def write_snapshot(path: Path, header: SnapshotHeader, kv: bytes) -> None:
    """Write atomically: a temporary file in the same folder, flushed, then renamed over ``path``."""
    body = header.model_dump_json().encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tmp.open("wb") as f:
            f.write(_PREFIX.pack(MAGIC, FORMAT, len(body)))
            f.write(body)
            f.write(kv)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_header(path: Path) -> SnapshotHeader:
    """The header alone (cheap): enough to decide whether the snapshot can be used."""
    try:
        with path.open("rb") as f:
            return _header(f.read(_PREFIX.size), f)
    except FileNotFoundError:
        raise SnapshotError("no snapshot") from None
    except OSError as exc:
        raise SnapshotError(f"cannot read the snapshot: {exc.strerror or exc}") from exc


def read_snapshot(path: Path) -> tuple[SnapshotHeader, bytes]:
    """Header and KV bytes, checked against the header's size and CRC."""
    try:
        with path.open("rb") as f:
            header = _header(f.read(_PREFIX.size), f)
            kv = f.read()
    except FileNotFoundError:
        raise SnapshotError("no snapshot") from None
    except OSError as exc:
        raise SnapshotError(f"cannot read the snapshot: {exc.strerror or exc}") from exc
    if len(kv) != header.kv_bytes or zlib.crc32(kv) != header.kv_crc32:
        raise SnapshotError("the snapshot is damaged (its KV data does not match its checksum)")
    return header, kv


def _header(prefix: bytes, f: Any) -> SnapshotHeader:
    if len(prefix) < _PREFIX.size:
        raise SnapshotError("the snapshot is damaged (too short)")
    magic, version, size = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise SnapshotError("not a sinkchat snapshot")
    if version != FORMAT:
        raise SnapshotError(f"snapshot format {version} is not supported (this sinkchat writes {FORMAT})")
    body = f.read(size)
    try:
        return SnapshotHeader.model_validate_json(body)
    except ValidationError:
        raise SnapshotError("the snapshot is damaged (unreadable header)") from None


def crc32(data: bytes) -> int:
    return zlib.crc32(data)
