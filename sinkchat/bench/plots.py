"""PNG plots of the bench results (matplotlib, from the ``bench`` extra; headless Agg backend).

Without matplotlib the commands still write their CSV files and say how to get plots.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sinkchat.bench.ppl import PplConfig, Run

log = logging.getLogger(__name__)

COLORS = {
    "dense": "#7f7f7f",
    "window": "#d62728",
    "sinks": "#1f77b4",
    "recompute": "#2ca02c",
    "half-discard": "#ff7f0e",
    "truncate": "#9467bd",
    "sinkchat": "#1f77b4",
    "sinks-unpinned": "#17becf",
}
MISSING = "matplotlib is not installed: CSV only.  For plots: pip install 'sinkchat[bench]'"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 10})
    return plt


def color(label: str) -> str | None:
    return COLORS.get(label.split("=")[0].split(" ")[0])


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _peaks(xs: Sequence[float], ys: Sequence[float], every: int) -> tuple[list[float], list[float]]:
    """The largest y of each run of ``every`` points: memory sampled per chunk wobbles by a
    few MiB of temporaries, and the peaks are what matters."""
    px, py = [], []
    for i in range(0, len(xs), every):
        px.append(xs[min(i + every, len(xs)) - 1])
        py.append(max(ys[i : i + every]))
    return px, py


def ppl_plots(runs: Sequence[Run], out: Path, config: PplConfig) -> dict[str, Path]:
    """Log-PPL and RSS against input length (like the attention-sinks figures); PPL per sink count."""
    if not available():
        log.warning(MISSING)
        return {}
    from sinkchat.bench.ppl import smooth

    plt = pyplot()
    longest = max((r.tokens for r in runs), default=0)
    span = max(config.n_ctx * 2, longest // 100)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    sweep = bool(config.sink_sweep)
    cmap = plt.get_cmap("viridis")
    for i, run in enumerate(runs):
        xs, ys = smooth(run, span)
        c = cmap(i / max(1, len(runs) - 1)) if sweep else color(run.label)
        top.plot(
            xs, ys, label=f"{run.label} (ppl {run.ppl() or float('nan'):.1f} over {run.tokens:,})", color=c, lw=1.3
        )
        mx, my = _peaks(run.positions, [r / 2**20 for r in run.rss], max(1, len(run.positions) // 300))
        bottom.plot(mx, my, label=run.label, color=c, lw=1.3)
        if run.stopped:
            top.axvline(run.tokens, color=c, ls=":", lw=1)
    top.axvline(config.n_ctx, color="black", ls="--", lw=0.8)
    top.annotate(
        "cache full",
        (config.n_ctx, 1),
        xycoords=("data", "axes fraction"),
        xytext=(4, -12),
        textcoords="offset points",
        fontsize=8,
    )
    top.set_ylabel(f"log perplexity (last {span:,} tokens)")
    top.set_title(f"Perplexity over a long text · cache {config.n_ctx} tokens · chunks of {config.chunk_size()}")
    top.legend(loc="upper right", fontsize=8)
    bottom.set_ylabel("process RSS (MiB)")
    bottom.set_xlabel("input length (tokens)")
    bottom.set_ylim(bottom=0)
    files = {"plot": save(fig, out / "ppl.png")}

    if sweep:
        sinks = [r for r in runs if r.policy == "sinks"]
        fig, ax = plt.subplots(figsize=(6, 3.8))
        values = [r.ppl(start=config.n_ctx) or 0.0 for r in sinks]
        ax.set_ylim(0, max(values, default=1) * 1.15)
        bars = ax.bar(
            [str(r.sinks) for r in sinks], values, color=[cmap(i / max(1, len(sinks) - 1)) for i in range(len(sinks))]
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=9)
        ax.set_xlabel("sink tokens kept")
        ax.set_ylabel("perplexity after the cache filled")
        ax.set_title(f"Perplexity against the number of sinks · cache {config.n_ctx}")
        files["sweep"] = save(fig, out / "ppl_sinks.png")
    return files


def lines(
    path: Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
) -> Path | None:
    """One line per series."""
    if not available():
        log.warning(MISSING)
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, color=color(label), lw=1.2)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return save(fig, path)


def panels(
    path: Path,
    panels: Sequence[tuple[str, Mapping[str, tuple[Sequence[float], Sequence[float]]], bool]],
    *,
    title: str,
    xlabel: str,
    thresholds: Sequence[tuple[int, float]] = (),
) -> Path | None:
    """Stacked panels sharing x: each ``(ylabel, {policy: (xs, ys)}, logy)``.

    ``thresholds`` draws dashed horizontal lines ``(panel index, y)``.
    """
    if not available():
        log.warning(MISSING)
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels) + 0.6), sharex=True)
    axes = list(axes) if len(panels) > 1 else [axes]
    for ax, (ylabel, series, logy) in zip(axes, panels, strict=True):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, label=label, color=color(label), lw=1.2)
        if logy:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
    for index, y in thresholds:
        axes[index].axhline(y, color="black", ls="--", lw=0.8)
    axes[0].legend(fontsize=8, ncol=3)
    axes[0].set_title(title)
    axes[-1].set_xlabel(xlabel)
    return save(fig, path)
