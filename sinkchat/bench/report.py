"""What every bench command shares: the output folder, CSV files, a terminal table, progress bars."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sinkchat.errors import SinkchatError


def output_dir(path: str | Path) -> Path:
    """Create the results folder; a clear message when that is impossible."""
    out = Path(path).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkchatError(f"cannot create the results folder {out}: {exc.strerror or exc}") from None
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Rows of one shape (the first row's keys are the columns)."""
    if not rows:
        path.write_text("", encoding="utf-8")
        return path
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain text table: ``columns`` are ``(key, heading)``; numbers right-aligned."""
    cells = [[_fmt(row.get(key)) for key, _ in columns] for row in rows]
    heads = [head for _, head in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(heads)]
    numeric = [all(_is_number(row.get(key)) for row in rows) for key, _ in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    return "\n".join([line(heads), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _is_number(value: Any) -> bool:
    """Numbers, and percentages already formatted ("12.5%"), are right-aligned."""
    if isinstance(value, str):
        return value.endswith("%")
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class Progress:
    """A tqdm bar on stderr (``enabled=False``: silent, for tests and pipes)."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, unit: str = "tok") -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)

    def update(self, n: int, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def percentile(values: Iterable[float], q: float) -> float | None:
    import numpy as np

    data = list(values)
    return float(np.percentile(data, q)) if data else None


def interleave(steps: Sequence[Iterator[object]]) -> None:
    """Advance each generator by one step in turn, the first one rotating, until all are done.

    Benches run their policies this way, not one after another: on a shared machine a
    change in load then lands on every policy alike, instead of on one row of a table.
    """
    active = list(steps)
    turn = 0
    while active:
        shift = turn % len(active)
        for step in active[shift:] + active[:shift]:
            try:
                next(step)
            except StopIteration:
                active.remove(step)
        turn += 1


def spread(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """(min, median, max): every bench that reports a time reports these."""
    import statistics

    if not values:
        return None, None, None
    return min(values), statistics.median(values), max(values)


def rss_growth(rss: Sequence[int]) -> int:
    """How much a process's RSS crept up over a run, in bytes: the low point of the last tenth
    above the low point of the whole run.

    Benches interleave their policies in one process, so its RSS holds every open cache,
    drops when a run ends and frees one, and swings within each round by the temporaries of
    a step.  Low points compare like with like; a first-to-last difference would report a
    swing or a freed cache as growth.
    """
    if not rss:
        return 0
    tail = rss[len(rss) - max(1, len(rss) // 10) :]
    return min(tail) - min(rss)


def segment_rates(amounts: Sequence[float], seconds: Sequence[float], segments: int = 10) -> list[float]:
    """Throughput of each of ``segments`` consecutive parts of a run (amount per second)."""
    n = len(amounts)
    if not n:
        return []
    parts = min(segments, n)
    rates = []
    for i in range(parts):
        a, b = i * n // parts, (i + 1) * n // parts
        t = sum(seconds[a:b])
        if t > 0:
            rates.append(sum(amounts[a:b]) / t)
    return rates
