"""One owner per session: an OS file lock that dies with its process.

``flock`` (``msvcrt.locking`` on Windows) is released by the kernel when the owning
process exits, also after SIGKILL, so a crashed sinkchat never leaves a stale lock.
The file holds the owner's pid, for the message the second process shows.

Asking whether a session is open (``sinkchat sessions list`` marks open ones) takes a
*shared* lock for an instant; an owner that meets such a probe tries again for a
moment instead of reporting the session as open elsewhere.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from sinkchat.errors import SinkchatError


class SessionLockedError(SinkchatError):
    """The session is open in another sinkchat process."""


class LockFileError(SinkchatError):
    """The lock file cannot be made (a read-only or full data folder)."""


PROBE_GRACE = 0.5
"""Seconds an owner keeps trying while the lock may only be held by a probe."""


class SessionLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, what: str = "this session") -> SessionLock:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LockFileError(f"cannot lock {what}: {exc.strerror or exc} ({path})") from None
        deadline = time.monotonic() + PROBE_GRACE
        while True:
            try:
                _lock(fd)
                break
            except OSError:
                if time.monotonic() < deadline:  # perhaps only a probe, holding it for microseconds
                    time.sleep(0.02)
                    continue
            owner = _read_owner(fd)
            os.close(fd)
            by = f" (process {owner})" if owner else ""
            raise SessionLockedError(
                f"{what} is open in another sinkchat{by}; close it there first, or view it with "
                "`sinkchat sessions show`"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:  # a full disk: the lock holds all the same, only the owner's pid is not shown
            pass
        return cls(path, fd)

    @staticmethod
    def is_locked(path: Path) -> bool:
        """True while a process (this one included) holds the lock; a shared probe, never blocking probes."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            _lock(fd, shared=True)
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

    def _lock(fd: int, shared: bool = False) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(fd: int, shared: bool = False) -> None:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
