"""The status bar: model, device, and a live gauge of the cache, so the fixed memory is visible."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from sinkchat.stats import ChatStats

BAR = 16


def gauge(stats: ChatStats, width: int = BAR) -> Text:
    """``▕██▓▓▓▓░░░░▏``: pinned sinks, the rest of the cache, free slots."""
    pinned = min(width, round(stats.n_pinned / stats.n_ctx * width))
    used = min(width, max(pinned, round(stats.n_cached / stats.n_ctx * width)))
    bar = Text("▕", style="dim")
    bar.append("█" * pinned, style="bold magenta")
    bar.append("█" * (used - pinned), style="green")
    bar.append("░" * (width - used), style="dim")
    bar.append("▏", style="dim")
    return bar


def status_line(
    stats: ChatStats | None, state: str = "", *, bar: int = BAR, compact: bool = False, drop: int = 0
) -> Text:
    """``cache ▕███░░▏ 143/256 · 21 pinned │ 3 shifts · 640 evicted │ 86.5 tok/s │ RSS 196 MiB``.

    What the chat is busy with (and how far) and the screen's ``state`` always stay;
    ``drop`` leaves out that many of the least needed parts, for a narrow terminal.
    """
    line = Text(" ")
    if stats is not None:
        shifts = f" │ {stats.shifts} shift{'' if stats.shifts == 1 else 's'}"
        optional: list[tuple[str, str]] = [  # least needed last: dropped first
            (shifts, ""),
            (f" · {stats.n_pinned} pinned", "magenta"),
            (f" · {stats.evicted_tokens} evicted", ""),
            (f" │ {stats.tokens_per_second:.1f} tok/s" if stats.tokens_per_second else "", ""),
            (f" │ {'' if compact else 'RSS '}{stats.rss_bytes / 2**20:.0f} MiB", ""),
        ]
        keep = {text for text, _ in optional[: max(0, len(optional) - drop)]}
        if not compact:
            line.append("cache ")
        line.append_text(gauge(stats, bar))
        line.append(f" {stats.n_cached}/{stats.n_ctx}")
        for text, style in (optional[1], optional[0], optional[2]):  # pinned, shifts, evicted
            if text in keep:
                line.append(text, style=style)
        if stats.fallbacks:
            line.append(f" · {stats.fallbacks} re-read{'' if stats.fallbacks == 1 else 's'}", style="yellow")
        if stats.rereading is not None:
            done, total = stats.rereading
            line.append(f" │ re-reading {total:,} tokens {done * 100 // max(total, 1)}%", style="bold yellow")
        if stats.activity and stats.progress is not None and stats.progress[1]:
            done, total = stats.progress
            amount = "" if compact else f"{done:,}/{total:,} "
            line.append(f" │ {stats.activity} {amount}{done * 100 // total}%", style="bold yellow")
        for text, style in optional[3:]:
            if text and text in keep:
                line.append(text, style=style)
        if state:
            line.append(" │ ")
    line.append(state, style="italic")
    return line


class StatusBar(Static):
    """One line; on a narrow terminal the gauge shrinks, then the least needed parts go, never the state."""

    def show(self, stats: ChatStats | None, state: str = "") -> None:
        width = self.size.width or 200
        line = status_line(stats, state)
        for drop in range(6):
            if line.cell_len <= width:
                break
            line = status_line(stats, state, bar=8, compact=True, drop=drop)
        self.update(line)
