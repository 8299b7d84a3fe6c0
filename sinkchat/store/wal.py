"""Is the write-ahead log intact?  Read it before SQLite does, and say what a damaged one loses.

SQLite replays WAL frames up to the first one whose checksum fails and silently drops
the rest, by design.  So a damaged ``sessions.db-wal`` can lose committed messages
without any error.  Before the database is opened, this walks the log's checksum
chain the way SQLite will, and compares how far it gets with how far the log was
committed (``mxFrame`` in the ``-shm`` wal-index a killed process leaves behind) and how
much of it was already copied into the main file (``nBackfill``).  Frames that were both
committed and not yet copied, but will not be replayed, are lost data.

File formats: https://www.sqlite.org/fileformat2.html#walformat and #walindexformat.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

WAL_MAGIC = (0x377F0682, 0x377F0683)  # the low bit: checksums over big-endian words
WAL_VERSION = 3007000
HEADER = 32
FRAME_HEADER = 24


@dataclass(frozen=True)
class WalReport:
    """What a look at the log found (``damage`` is None for a sound one)."""

    frames: int
    """Whole frames in the file."""
    valid: int
    """Frames SQLite will replay (up to the last commit before the first bad one)."""
    committed: int | None
    """Frames committed according to the wal-index (None without a usable ``-shm``)."""
    backfilled: int | None
    """Frames already copied into the main file according to the wal-index."""
    damage: str | None

    @property
    def lost_frames(self) -> int | None:
        """Committed frames not in the main file that will not be replayed (None: cannot tell)."""
        if self.damage is None:
            return 0
        if self.committed is None:
            return None
        return max(0, self.committed - max(self.valid, self.backfilled or 0))


def _checksum(data: bytes, big_endian: bool, s1: int = 0, s2: int = 0) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def _wal_index(shm: Path) -> tuple[int, int, bytes] | None:
    """(mxFrame, nBackfill, salts) from a ``-shm`` file, if it holds a consistent header."""
    try:
        with shm.open("rb") as f:
            head = f.read(136)
    except OSError:
        return None
    if len(head) < 136:
        return None
    for order in "<>":  # the wal-index is in native byte order; accept either
        first, second = head[:48], head[48:96]
        version, _, _, is_init, _, _, mx_frame = struct.unpack(order + "IIIBBHI", first[:20])
        if version != WAL_VERSION or not is_init or first != second:
            continue
        salts = first[32:40]  # copied byte for byte from the log's header
        (backfill,) = struct.unpack(order + "I", head[96:100])
        return mx_frame, backfill, salts
    return None


def inspect(wal: Path, shm: Path | None = None) -> WalReport | None:
    """Walk ``wal`` as SQLite's recovery will; None when there is no log to look at."""
    try:
        data = wal.read_bytes()
    except OSError:
        return None
    if not data:
        return None
    index = _wal_index(shm) if shm is not None else None
    committed, backfilled = (index[0], index[1]) if index else (None, None)
    if committed is not None and committed == 0:
        return None  # nothing was committed to this log since it was last reset
    if len(data) < HEADER:
        return WalReport(0, 0, committed, backfilled, "the log is shorter than its header")
    magic, version, page_size = struct.unpack(">III", data[:12])
    big_endian = magic == WAL_MAGIC[1]
    salts = data[16:24]
    frame_size = FRAME_HEADER + page_size
    frames = (len(data) - HEADER) // frame_size if page_size else 0
    if magic not in WAL_MAGIC or version != WAL_VERSION or page_size < 512 or page_size & (page_size - 1):
        return WalReport(frames, 0, committed, backfilled, "its header is damaged")
    s1, s2 = _checksum(data[:24], big_endian)
    if (s1, s2) != struct.unpack(">II", data[24:32]):
        return WalReport(frames, 0, committed, backfilled, "its header checksum fails")
    if index is not None and index[2] != salts:
        index = None  # the wal-index describes another generation of the log
        committed = backfilled = None
    valid = seen = 0
    damage: str | None = None
    for n in range(frames):
        at = HEADER + n * frame_size
        head = data[at : at + FRAME_HEADER]
        _, db_size, c1, c2 = struct.unpack(">II8xII", head)
        if head[8:16] != salts:
            break  # a frame of an earlier generation: the log ends here, by design
        s1, s2 = _checksum(head[:8], big_endian, s1, s2)
        s1, s2 = _checksum(data[at + FRAME_HEADER : at + frame_size], big_endian, s1, s2)
        if (s1, s2) != (c1, c2):
            damage = f"frame {n + 1} fails its checksum"
            break
        seen = n + 1
        if db_size:
            valid = seen  # a commit frame: everything up to here will be replayed
    if damage is None and committed is not None and valid < committed:
        damage = "it ends before its last commit (truncated)" if seen == frames else "it was overwritten"
    if damage is None and committed is None:
        if (len(data) - HEADER) % frame_size and frames == seen:
            damage = "it ends inside a frame (truncated)"
        elif seen > valid:
            damage = "it ends inside a transaction (truncated)"
    return WalReport(frames, valid, committed, backfilled, damage)
