"""One owner per session: an OS file lock that dies with its process.

``flock`` (``msvcrt.locking`` on Windows) is released by the kernel when the owning
process exits, also after SIGKILL, so a crashed sinkchat never leaves a stale lock.
The file holds the owner's pid, for the message the second process shows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sinkchat.errors import SinkchatError


class SessionLockedError(SinkchatError):
    """The session is open in another sinkchat process."""


class SessionLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, what: str = "this session") -> SessionLock:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            owner = _read_owner(fd)
            os.close(fd)
            by = f" (process {owner})" if owner else ""
            raise SessionLockedError(
                f"{what} is open in another sinkchat{by}; close it there first, or view it with "
                "`sinkchat sessions show`"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return cls(path, fd)

    @staticmethod
    def is_locked(path: Path) -> bool:
        """True while another process holds the lock (a probe that takes and drops it)."""
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return False
        try:
            _lock(fd)
        except OSError:
            return True
        else:
            _unlock(fd)
            return False
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> SessionLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _read_owner(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
