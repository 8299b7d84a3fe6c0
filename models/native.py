"""Ownership of llama.cpp objects: freed exactly once, on ``close()`` or at garbage collection."""

from __future__ import annotations

from contextlib import suppress
from typing import Any


class NativeHandle:
    """Base for wrappers that own a C pointer in ``self.ptr``."""

    ptr: Any = None

    def _free(self, ptr: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._free(ptr)

    def __del__(self) -> None:  # best effort, also at interpreter exit
        with suppress(Exception):
            self.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
