"""What the KV cache holds, as plain data: the single source of truth for eviction.

The cache of one sequence is a pinned prefix (BOS, the attention-sink tokens and, by
default, the system prompt) followed by segments, one per message or raw-text run.
Positions are implicit and always contiguous from 0: segment ``i`` starts where segment
``i-1`` ends.  Segments carry a ``group`` (one user message and its reply form one
exchange) because eviction is aligned to whole exchanges.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Role = Literal["system", "user", "assistant", "raw"]


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of cached tokens that belong to one message (or one raw-text run)."""

    role: Role
    group: int
    n_tokens: int
    cut: bool = False
    """True once some of its oldest tokens were evicted: it is no longer whole."""
    opener: bool = False
    """The opening markup of a user turn, dropped when its exchange becomes the oldest cached one.

    Templates that fold the system prompt into the first user turn keep that turn's
    opening markup (with the system prompt) in the pins; the turn that follows evicted
    ones must then lose its own, or the cache would open a user turn twice.
    """


@dataclass(frozen=True, slots=True)
class Eviction:
    """A contiguous range of cache positions ``[start, end)`` to drop, right after the pins."""

    start: int
    end: int
    aligned: bool
    """True when the range ends on an exchange boundary (only whole messages dropped)."""

    @property
    def n_tokens(self) -> int:
        return self.end - self.start


@dataclass(slots=True)
class CacheLayout:
    """Mutable description of one cached sequence.

    ``pin_target`` is the minimum size of the pinned prefix (BOS + sink tokens): the first
    tokens ever appended fill it, whatever message they belong to.  Appending with
    ``pin=True`` (the kept system prompt) grows the pinned prefix beyond that.
    """

    capacity: int
    pin_target: int
    n_pinned: int = 0
    segments: list[Segment] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.capacity <= 0:
            raise ValueError("capacity must be positive")
        if self.pin_target < 0:
            raise ValueError("pin_target must not be negative")

    @property
    def n_cached(self) -> int:
        return self.n_pinned + sum(s.n_tokens for s in self.segments)

    @property
    def window(self) -> int:
        """Room for everything that is not pinned."""
        return self.capacity - self.n_pinned

    @property
    def free(self) -> int:
        return self.capacity - self.n_cached

    def append(self, role: Role, group: int, n_tokens: int, *, pin: bool = False, opener: bool = False) -> None:
        """Record ``n_tokens`` new tokens at the end of the cache.

        Tokens go to the pinned prefix while it is shorter than ``pin_target`` (or always,
        with ``pin``); the rest extend the last segment when role, group and ``opener``
        match, or start a new one.
        """
        if n_tokens < 0:
            raise ValueError("n_tokens must not be negative")
        if n_tokens > self.free:
            raise ValueError(f"{n_tokens} tokens do not fit: {self.free} free of {self.capacity}")
        if pin or (not self.segments and self.n_pinned < self.pin_target):
            if self.segments:
                raise ValueError("cannot pin tokens after unpinned segments")
            to_pin = n_tokens if pin else min(n_tokens, self.pin_target - self.n_pinned)
            self.n_pinned += to_pin
            n_tokens -= to_pin
        if n_tokens == 0:
            return
        last = self.segments[-1] if self.segments else None
        if last is not None and last.role == role and last.group == group and last.opener == opener:
            self.segments[-1] = replace(last, n_tokens=last.n_tokens + n_tokens)
        else:
            self.segments.append(Segment(role=role, group=group, n_tokens=n_tokens, opener=opener))

    def apply(self, eviction: Eviction) -> None:
        """Drop the evicted range; the tail slides back so positions stay contiguous."""
        if eviction.start != self.n_pinned:
            raise ValueError(f"eviction must start right after the pins ({self.n_pinned}), not {eviction.start}")
        if not 0 < eviction.n_tokens <= self.n_cached - self.n_pinned:
            raise ValueError(f"cannot evict {eviction.n_tokens} of {self.n_cached - self.n_pinned} tokens")
        left = eviction.n_tokens
        kept: list[Segment] = []
        for seg in self.segments:
            if left >= seg.n_tokens:
                left -= seg.n_tokens
            elif left > 0:
                kept.append(replace(seg, n_tokens=seg.n_tokens - left, cut=True))
                left = 0
            else:
                kept.append(seg)
        self.segments = kept

    def truncate(self, n_keep: int) -> None:
        """Forget everything from position ``n_keep`` on (undo of a cancelled append)."""
        if not 0 <= n_keep <= self.n_cached:
            raise ValueError(f"cannot truncate to {n_keep} of {self.n_cached}")
        if n_keep <= self.n_pinned:
            self.n_pinned = n_keep
            self.segments = []
            return
        pos = self.n_pinned
        kept: list[Segment] = []
        for seg in self.segments:
            if pos + seg.n_tokens <= n_keep:
                kept.append(seg)
            elif pos < n_keep:
                kept.append(replace(seg, n_tokens=n_keep - pos))
            pos += seg.n_tokens
        self.segments = kept

    def find(self, role: Role, group: int) -> tuple[int, Segment] | None:
        """Position and segment of the first cached segment with this role in ``group``."""
        pos = self.n_pinned
        for seg in self.segments:
            if seg.role == role and seg.group == group:
                return pos, seg
            pos += seg.n_tokens
        return None

    def group_start(self, group: int) -> int | None:
        """Cache position where ``group`` starts (None when nothing of it is cached)."""
        pos = self.n_pinned
        for seg in self.segments:
            if seg.group == group:
                return pos
            pos += seg.n_tokens
        return None

    def opener_at(self, pos: int) -> int:
        """Size of the opener segment that starts at cache position ``pos`` (0 when none does)."""
        at = self.n_pinned
        for seg in self.segments:
            if at == pos:
                return seg.n_tokens if seg.opener else 0
            if at > pos:
                break
            at += seg.n_tokens
        return 0

    def group_sizes(self) -> list[tuple[int, int]]:
        """``(group, n_tokens)`` for each cached group after the pins, oldest first."""
        sizes: list[tuple[int, int]] = []
        for seg in self.segments:
            if sizes and sizes[-1][0] == seg.group:
                sizes[-1] = (seg.group, sizes[-1][1] + seg.n_tokens)
            else:
                sizes.append((seg.group, seg.n_tokens))
        return sizes
