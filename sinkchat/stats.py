"""Live numbers about a chat's cache: what the gauge shows, computed in one place."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

_process = None


def process_rss() -> int:
    """Resident memory of this process in bytes."""
    global _process
    import psutil

    if _process is None:
        _process = psutil.Process()
    return int(_process.memory_info().rss)


class ChatStats(BaseModel):
    """An immutable snapshot; take a new one with ``chat.stats``."""

    model_config = ConfigDict(frozen=True)

    n_ctx: int
    n_cached: int
    n_pinned: int
    shifts: int
    evicted_tokens: int
    fallbacks: int
    reread_tokens: int = 0
    """Tokens read again by fallbacks (a cache that cannot shift)."""
    rereading: tuple[int, int] | None = None
    """``(done, total)`` while kept tokens are being read again, else None."""
    activity: str | None = None
    """What the chat is busy with ("reading your message", "re-reading the history" ...), else None."""
    progress: tuple[int, int] | None = None
    """``(done, total)`` tokens of that activity, when it reads a known amount."""
    can_shift: bool
    tokens_per_second: float | None
    """Decode speed of the reply being generated, else of the last one (generated tokens only)."""
    prompt_tokens_per_second: float | None
    """Speed at which the last prompt was evaluated."""
    last_shift_ms: float | None
    rss_bytes: int

    def summary(self) -> str:
        """One line for people: cache fill, pins, shifts, speed, memory."""
        parts = [
            f"cache {self.n_cached}/{self.n_ctx} tokens ({self.n_pinned} pinned)",
            f"{self.shifts} shift{'s' if self.shifts != 1 else ''}, {self.evicted_tokens} evicted",
        ]
        if self.fallbacks:
            parts.append(
                f"{self.fallbacks} re-read{'s' if self.fallbacks != 1 else ''} instead of shifting "
                f"({self.reread_tokens:,} tokens)"
            )
        if self.tokens_per_second:
            parts.append(f"{self.tokens_per_second:.1f} tok/s")
        parts.append(f"RSS {self.rss_bytes / 2**20:.0f} MiB")
        return " · ".join(parts)
