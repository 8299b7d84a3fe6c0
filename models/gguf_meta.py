"""Read a GGUF file's metadata without loading the model, and tell a damaged file from a good one.

``gguf.GGUFReader`` materialises every vocabulary string as a numpy array (3 s for a
100 MB model), so the header is parsed here directly from a memory map, skipping large
arrays; the type tables come from the ``gguf`` package.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from models.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
_MAX_ARRAY_KEPT = 64
"""Arrays longer than this (vocabularies, merges) are skipped; only their length is kept."""

# GGUF value types -> struct format of one scalar.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GGUFInfo(BaseModel):
    """What a GGUF file says about itself."""

    model_config = ConfigDict(frozen=True)

    path: Path
    file_size: int
    version: int
    n_tensors: int
    architecture: str | None
    name: str | None
    metadata: dict[str, Any]
    """Scalars and short arrays; long arrays appear as ``{"array_len": n}``."""
    n_params: int

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None


class _Cursor:
    def __init__(self, buf: mmap.mmap, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise ModelFileError(f"{self.path} is truncated: its header ends early (the download may be incomplete)")
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.take("Q")
        if self.pos + length > len(self.buf):
            raise ModelFileError(f"{self.path} is truncated: its header ends early (the download may be incomplete)")
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.take("Q")
        self.pos += length

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.take(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.take("I"), self.take("Q")
            if count <= _MAX_ARRAY_KEPT:
                return [self.value(etype) for _ in range(count)]
            if etype in _SCALAR:
                self.pos += count * struct.calcsize("<" + _SCALAR[etype])
            else:
                for _ in range(count):
                    self.skip_value(etype)
            return {"array_len": count}
        raise ModelFileError(f"{self.path} is damaged: unknown metadata value type {vtype}")

    def skip_value(self, vtype: int) -> None:
        if vtype == _STRING:
            self.skip_string()
        else:
            self.value(vtype)


def _tensor_nbytes(dims: list[int], ggml_type: int) -> int | None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        return None  # a type newer than this gguf package: llama.cpp will judge it
    n = 1
    for d in dims:
        n *= d
    return n * type_size // block


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(path: Path, mode: int) -> ModelFileError:
    if stat.S_ISDIR(mode):
        return ModelFileError(f"{path} is a directory, not a GGUF model file")
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a file")
    return ModelFileError(f"{path} is not a regular file ({kind}); a model is a GGUF file")


def regular_file(path: str | Path) -> os.stat_result:
    """``path``'s status (through links) when it is a regular file, else a :class:`ModelFileError`.

    Checked before any model file is opened: opening a FIFO waits for a writer forever,
    and a device never ends.
    """
    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError as exc:
        raise ModelFileError(f"model file not found: {path}") from exc
    except PermissionError as exc:
        raise ModelFileError(f"cannot read {path}: permission denied") from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(status.st_mode):
        raise _not_regular(path, status.st_mode)
    return status


def read_gguf(path: str | Path) -> GGUFInfo:
    """Parse the header of a GGUF file; raise :class:`ModelFileError` with a clear reason if it is not usable."""
    path = Path(path).expanduser()
    regular_file(path)
    try:
        # Non-blocking, should the file have become a FIFO since it was looked at; checked again once open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            status = os.fstat(fh.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise _not_regular(path, status.st_mode)
            size = status.st_size
            if size < 24:
                raise ModelFileError(f"{path} is not a GGUF model file (only {size} bytes)")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return _parse(buf, path, size)
    except PermissionError as exc:
        raise ModelFileError(f"cannot read {path}: permission denied") from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _parse(buf: mmap.mmap, path: Path, size: int) -> GGUFInfo:
    if buf[:4] != GGUF_MAGIC:
        raise ModelFileError(f"{path} is not a GGUF model file (sinkchat runs llama.cpp GGUF models)")
    cur = _Cursor(buf, path)
    cur.pos = 4
    version = cur.take("I")
    if version not in SUPPORTED_VERSIONS:
        raise ModelFileError(f"{path} is GGUF version {version}; only versions 2 and 3 are supported")
    n_tensors, n_kv = cur.take("Q"), cur.take("Q")
    if n_tensors > 1 << 24 or n_kv > 1 << 24:
        raise ModelFileError(f"{path} is damaged: its header counts are impossible")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.take("I"))
    tensors: list[tuple[list[int], int, int]] = []
    for _ in range(n_tensors):
        cur.skip_string()
        n_dims = cur.take("I")
        dims = [cur.take("Q") for _ in range(n_dims)]
        tensors.append((dims, cur.take("I"), cur.take("Q")))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise ModelFileError(f"{path} is damaged: invalid alignment {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment
    n_params = 0
    for dims, ggml_type, offset in tensors:
        nbytes = _tensor_nbytes(dims, ggml_type)
        count = 1
        for d in dims:
            count *= d
        n_params += count
        if nbytes is not None and data_start + offset + nbytes > size:
            raise ModelFileError(
                f"{path} is truncated: it holds {size:,} bytes but its tensors need more "
                "(the download or copy is incomplete)"
            )
    arch = metadata.get("general.architecture")
    name = metadata.get("general.name")
    return GGUFInfo(
        path=path,
        file_size=size,
        version=version,
        n_tensors=n_tensors,
        architecture=arch if isinstance(arch, str) else None,
        name=name if isinstance(name, str) else None,
        metadata=metadata,
        n_params=n_params,
    )
